"""Movement pruning: scores are the accumulated -W * dL/dW; masks are their top-k."""

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.backends("tensorflow", "torch", reason="JAX: the movement-score constraint runs in the optimizer's stateless scope; open")

import kprune
from kprune import masking
from kprune.movement import MovementConstraint, MovementPruning
from kprune.wrapper import MaskConstraint

LR = 0.05


def _linear_regression(steps, schedule, optimizer="sgd"):
    """y = x @ w with MSE: dL/dw = 2/n x^T (x w - y), known in closed form.

    Returns the pruned model, the callback, and the by-hand score sum(-w g)
    and weights after the same steps with `optimizer` ("sgd" or "adam")."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 6)).astype("float32")
    y = rng.normal(size=(16, 1)).astype("float32")
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1, use_bias=False, name="d")])
    w0 = np.array(keras.ops.convert_to_numpy(model.layers[0].kernel), np.float64)
    pruned = kprune.prune_low_magnitude(model, schedule)
    opt = keras.optimizers.SGD(LR) if optimizer == "sgd" else keras.optimizers.Adam(LR)
    pruned.compile(opt, "mse")
    callback = MovementPruning()
    pruned.fit(x, y, batch_size=16, epochs=steps, verbose=0, callbacks=[callback])
    # The same steps by hand.
    w, score = w0.copy(), np.zeros_like(w0)
    m, v = np.zeros_like(w0), np.zeros_like(w0)
    xd, yd = x.astype(np.float64), y.astype(np.float64)
    for t in range(1, steps + 1):
        grad = 2.0 / len(x) * xd.T @ (xd @ w - yd)
        score += -w * grad
        if optimizer == "sgd":
            w = w - LR * grad
        else:  # Keras Adam (epsilon 1e-7)
            m, v = 0.9 * m + 0.1 * grad, 0.999 * v + 0.001 * grad**2
            w = w - LR * np.sqrt(1 - 0.999**t) / (1 - 0.9**t) * m / (np.sqrt(v) + 1e-7)
    return pruned, callback, score, w


def test_scores_equal_accumulated_minus_w_times_grad():
    no_pruning = kprune.PolynomialDecay(0.0, 0.5, begin_step=100, end_step=200)
    pruned, callback, score, _ = _linear_regression(5, no_pruning)
    (got,), = callback.score_arrays().values()
    # SGD: g = (W_t - W_{t+1}) / lr, so the score is exactly sum(-W g).
    np.testing.assert_allclose(got, score, rtol=1e-4, atol=1e-6)


def test_scores_under_adam_are_still_minus_w_times_grad():
    # Adam's step is not proportional to g; the score reads g off Adam's
    # first moment, so it is the paper's sum(-W g), not sum(W * dW).
    no_pruning = kprune.PolynomialDecay(0.0, 0.5, begin_step=100, end_step=200)
    pruned, callback, score, w = _linear_regression(5, no_pruning, optimizer="adam")
    (got,), = callback.score_arrays().values()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(pruned.layers[0].layer.kernel), w,
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got, score, rtol=1e-3, atol=1e-6)


def test_a_pruned_entrys_score_keeps_moving():
    # The forward pass is not masked: a pruned (stored zero) weight still
    # gets dL/dW', and its score accumulates -frozen value * dL/dW'.
    schedule = kprune.PolynomialDecay(0.0, 0.5, begin_step=1, end_step=2, frequency=1)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 6)).astype("float32")
    y = rng.normal(size=(16, 1)).astype("float32")
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1, use_bias=False)])
    pruned = kprune.prune_low_magnitude(model, schedule)
    pruned.compile(keras.optimizers.SGD(LR), "mse")
    cb = MovementPruning()
    pruned.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[cb])
    mask = keras.ops.convert_to_numpy(pruned.layers[0].masks[0]).astype(bool)
    assert (~mask).sum() == 3
    (before,), = cb.score_arrays().values()
    pruned.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[cb])
    (after,), = cb.score_arrays().values()
    assert np.all(after[~mask] != before[~mask])


def test_masks_are_the_top_k_of_the_movement_scores():
    # One mask update, at step 6, after all 6 steps: sparsity 0.5.
    schedule = kprune.PolynomialDecay(0.0, 0.5, begin_step=5, end_step=6, frequency=1)
    pruned, callback, score, w = _linear_regression(6, schedule)
    mask = keras.ops.convert_to_numpy(pruned.layers[0].masks[0]).astype(bool)
    expected = masking.compute_mask(score, 0.5)
    np.testing.assert_array_equal(mask, expected)
    assert mask.sum() == 3


def test_movement_and_magnitude_disagree_where_weights_shrink():
    # A weight that is large but moving towards zero loses to a small one
    # moving away from zero.
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, use_bias=False)])
    model.layers[0].kernel.assign(np.array([[1.0], [0.1]], "float32"))
    x = np.array([[1.0, 0.0], [0.0, 1.0]], "float32")
    y = np.array([[0.0], [1.0]], "float32")  # w0 -> 0 (shrinks), w1 -> 1 (grows)
    schedule = kprune.PolynomialDecay(0.0, 0.5, begin_step=2, end_step=3, frequency=1)
    pruned = kprune.prune_low_magnitude(model, schedule)
    pruned.compile(keras.optimizers.SGD(0.1), "mse")
    pruned.fit(x, y, batch_size=2, epochs=3, verbose=0, callbacks=[MovementPruning()])
    mask = keras.ops.convert_to_numpy(pruned.layers[0].masks[0]).ravel().astype(bool)
    assert mask.tolist() == [False, True]
    w = keras.ops.convert_to_numpy(pruned.layers[0].layer.kernel).ravel()
    assert abs(w[0]) < 1.0 and w[0] == 0.0  # pruned, stored as exact zero


def test_constraints_are_restored_after_fit():
    schedule = kprune.PolynomialDecay(0.0, 0.5, begin_step=1, end_step=2, frequency=1)
    pruned, callback, _, _ = _linear_regression(3, schedule)
    kernel = pruned.layers[0].prunable_weights[0]
    assert isinstance(kernel.constraint, MaskConstraint)
    assert not isinstance(kernel.constraint, MovementConstraint)


def test_a_second_fit_keeps_accumulating():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 4)).astype("float32")
    y = rng.normal(size=(8, 2)).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    pruned = kprune.prune_low_magnitude(model, kprune.PolynomialDecay(0.0, 0.5, 50, 60))
    pruned.compile(keras.optimizers.SGD(0.1), "mse")
    cb = MovementPruning()
    pruned.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[cb])
    first = cb.score_arrays()
    pruned.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[cb])
    second = cb.score_arrays()
    (a,), = first.values()
    (b,), = second.values()
    assert not np.allclose(a, b)


def test_no_wrappers_is_an_error_naming_the_fix():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="prune_low_magnitude"):
        model.fit(np.zeros((4, 4)), np.zeros((4, 2)), verbose=0, callbacks=[MovementPruning()])


def test_pruned_entries_accumulate_with_their_frozen_value():
    # Entry 0 kept (stored 2.0), entry 1 pruned (stored 0, frozen latent 3.0).
    score = keras.Variable(np.zeros(2, "float32"))
    previous = keras.Variable(np.array([2.0, 0.0], "float32"))
    latent = keras.Variable(np.array([2.0, 3.0], "float32"))
    mask = keras.Variable(np.array([1.0, 0.0], "float32"))
    c = MovementConstraint(score, previous, latent, mask, MaskConstraint(mask))
    out = keras.ops.convert_to_numpy(c(keras.ops.convert_to_tensor([1.5, 0.25])))
    np.testing.assert_allclose(out, [1.5, 0.0])
    # kept: 2.0 * (1.5 - 2.0); pruned (straight-through): 3.0 * (0.25 - 0).
    np.testing.assert_allclose(keras.ops.convert_to_numpy(score), [-1.0, 0.75])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(latent), [1.5, 3.0])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(previous), [1.5, 0.0])
