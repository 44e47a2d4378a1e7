"""Movement pruning: scores are the accumulated -W * dL/dW; masks are their top-k."""

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.backends("tensorflow", "torch", reason="JAX: movement pruning refuses to run there (its score updates would be lost in the stateless optimizer step); the refusal is tested")

import kprune
from kprune.core import masking
from kprune.methods.movement import MovementConstraint, MovementPruning, SoftMovementPruning
from kprune.core.wrapper import MaskConstraint

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
    opt = {"sgd": lambda: keras.optimizers.SGD(LR),
           "momentum": lambda: keras.optimizers.SGD(LR, momentum=0.9),
           "adam": lambda: keras.optimizers.Adam(LR)}[optimizer]()
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
        elif optimizer == "momentum":  # Keras SGD: v = 0.9 v - lr g; w += v
            m = 0.9 * m - LR * grad
            w = w + m
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


@pytest.mark.parametrize("optimizer", ["adam", "momentum"])
def test_scores_under_adam_and_momentum_are_still_minus_w_times_grad(optimizer):
    # Their steps are not proportional to g; the score reads g off Adam's
    # first moment / the velocity, so it is the paper's sum(-W g), not
    # sum(W * dW).
    no_pruning = kprune.PolynomialDecay(0.0, 0.5, begin_step=100, end_step=200)
    pruned, callback, score, w = _linear_regression(5, no_pruning, optimizer=optimizer)
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


# -- soft movement -------------------------------------------------------------


def _soft_data():
    """8 inputs of which the last 3 are always zero: their weights get no
    gradient, so only the penalty moves their scores."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype("float32")
    x[:, 5:] = 0.0
    y = (x[:, :2].sum(1) > 0).astype("int32")
    return x, y


def _soft_fit(penalty, schedule=None, epochs=4, callbacks=(), lr=0.05, **kwargs):
    x, y = _soft_data()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(6, activation="relu", name="h"),
                              keras.layers.Dense(2, name="out")])
    schedule = schedule or kprune.PolynomialDecay(0.0, 0.1, begin_step=4, end_step=24, frequency=2)
    pruned = kprune.prune_low_magnitude(model, schedule)
    pruned.compile(keras.optimizers.Adam(1e-2),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    cb = SoftMovementPruning(penalty=penalty, score_learning_rate=lr, **kwargs)
    pruned.fit(x, y, batch_size=16, epochs=epochs, verbose=0, callbacks=[cb, *callbacks])
    return pruned, cb


def test_soft_penalty_lowers_the_scores_of_weights_without_gradient():
    pruned, cb = _soft_fit(penalty=10.0, schedule=kprune.ConstantSparsity(0.0, begin_step=0, frequency=1000))
    dead = cb.score_arrays()[pruned.layers[0].name][0][5:]  # kernel rows of the always-zero inputs
    # By hand: 16 Adam steps (lr 0.05) on the penalty's gradient alone,
    # lambda / (pruned weights) * sigmoid'(S).
    entries = sum(a.size for arrays in cb.score_arrays().values() for a in arrays)
    scale, s, m, v = 10.0 / entries, 0.0, 0.0, 0.0
    for t in range(1, 17):
        g = scale * (1 / (1 + np.exp(-s))) * (1 - 1 / (1 + np.exp(-s)))
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        s -= 0.05 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    np.testing.assert_allclose(dead, s, rtol=1e-4)
    assert s < -0.7
    pruned, cb0 = _soft_fit(penalty=0.0, schedule=kprune.ConstantSparsity(0.0, begin_step=0, frequency=1000))
    np.testing.assert_array_equal(cb0.score_arrays()[pruned.layers[0].name][0][5:], 0.0)


def test_soft_masks_are_exactly_sigmoid_of_score_above_threshold():
    schedule = kprune.PolynomialDecay(0.0, 0.3, begin_step=2, end_step=12, frequency=2)
    pruned, cb = _soft_fit(penalty=50.0, schedule=schedule, lr=0.2, min_keep=0)
    for step in (6, 12):  # mid-ramp and final threshold
        cb.pruner.update_masks(step)
        tau = schedule.sparsity(step)
        for w in pruned.layers[:2]:
            for mask, score in zip(w.masks, cb.score_arrays()[w.name]):
                expected = 1.0 / (1.0 + np.exp(-score.astype(np.float64))) > tau
                np.testing.assert_array_equal(keras.ops.convert_to_numpy(mask).astype(bool), expected)
    assert 0.0 < kprune.sparsity_report(pruned).sparsity < 1.0


def test_soft_higher_penalty_gives_higher_sparsity():
    low, _ = _soft_fit(penalty=1.0, lr=0.3)
    high, _ = _soft_fit(penalty=300.0, lr=0.3)
    assert kprune.sparsity_report(high).sparsity > kprune.sparsity_report(low).sparsity


class _ZerosAfterEveryBatch(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.checked = 0

    def on_train_batch_end(self, batch, logs=None):
        for w in kprune.core.model_tree.find_wrappers(self.model):
            for var, mask in zip(w.prunable_weights, w.masks):
                pruned = ~keras.ops.convert_to_numpy(mask).astype(bool)
                assert np.all(keras.ops.convert_to_numpy(var)[pruned] == 0.0)
                self.checked += int(pruned.sum() > 0)


def test_soft_pruned_weights_are_exact_zeros_after_every_batch():
    check = _ZerosAfterEveryBatch()
    pruned, _ = _soft_fit(penalty=300.0, callbacks=[check], lr=0.3)
    assert check.checked > 0 and kprune.sparsity_report(pruned).sparsity > 0


def test_soft_get_config_round_trips():
    cb = SoftMovementPruning(penalty=12.0, score_learning_rate=0.1, initial_score=0.5, min_keep=2)
    assert SoftMovementPruning(**cb.get_config()).get_config() == cb.get_config()
    assert kprune.SoftMovementPruning is SoftMovementPruning


@pytest.mark.parametrize("kwargs, error, name", [
    ({"penalty": -1.0}, ValueError, "penalty"),
    ({"penalty": "400"}, TypeError, "penalty"),
    ({"score_learning_rate": 0.0}, ValueError, "score_learning_rate"),
    ({"initial_score": float("nan")}, ValueError, "initial_score"),
    ({"min_keep": -1}, ValueError, "min_keep"),
])
def test_soft_bad_arguments_name_the_parameter(kwargs, error, name):
    with pytest.raises(error, match=name):
        SoftMovementPruning(**kwargs)


def test_soft_structured_granularity_is_refused_and_the_model_is_unchanged():
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8)])
    pruned = kprune.prune_low_magnitude(model, kprune.PolynomialDecay(0.0, 0.1, 0, 4, frequency=1),
                                        granularity=kprune.Block((2, 2)))
    pruned.compile("adam", "mse")
    before = [np.array(w) for w in pruned.get_weights()]
    constraint = pruned.layers[0].prunable_weights[0].constraint
    with pytest.raises(ValueError, match="granularity='unstructured'"):
        pruned.fit(np.ones((4, 8)), np.ones((4, 8)), verbose=0, callbacks=[SoftMovementPruning()])
    for a, b in zip(before, pruned.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert pruned.layers[0].prunable_weights[0].constraint is constraint


def test_lamp_is_refused_for_signed_movement_scores():
    with pytest.raises(ValueError, match="normalize='lamp'"):
        MovementPruning(normalize="lamp")


@pytest.mark.backends("jax", reason="the clear error where movement pruning cannot run")
@pytest.mark.parametrize("callback", [MovementPruning, SoftMovementPruning])
def test_jax_refuses_with_a_clear_error_and_keeps_the_model(callback):
    model = kprune.prune_low_magnitude(
        keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="d")]),
        kprune.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=4, frequency=1))
    model.compile("sgd", "mse")
    before = [np.array(w) for w in model.get_weights()]
    constraints = [v.constraint for v in model.trainable_variables]
    with pytest.raises(ValueError, match="does not run on the JAX backend"):
        model.fit(np.ones((8, 4), "float32"), np.ones((8, 8), "float32"), verbose=0,
                  callbacks=[callback()])
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    assert [v.constraint for v in model.trainable_variables] == constraints
