"""Custom training loops: `kprune.Pruner` and `kprune.update_masks`."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

import kprune  # noqa: E402
from kprune.core import masking  # noqa: E402
from kprune.core.model_tree import find_wrappers  # noqa: E402

L = keras.layers
TARGET = 0.8


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _pruned_model(schedule=None, granularity=None):
    model = keras.Sequential([
        keras.Input((12,)),
        L.Dense(32, activation="relu", name="d1"),
        L.Dropout(0.1),
        L.Dense(16, activation="relu", name="d2"),
        L.Dense(4, name="out"),
    ])
    schedule = schedule or kprune.PolynomialDecay(0.0, TARGET, begin_step=0, end_step=12, frequency=3)
    return kprune.prune_low_magnitude(model, schedule, granularity=granularity)


def _batches(n_batches=8, batch=16):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n_batches * batch, 12)).astype("float32")
    y = rng.integers(0, 4, size=(n_batches * batch,))
    return [(x[i:i + batch], y[i:i + batch]) for i in range(0, len(x), batch)]


def _make_train_step(model, optimizer, compiled):
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return tf.function(train_step) if compiled else train_step


def _assert_invariant(model, target=None):
    for w in find_wrappers(model):
        for var, mask in zip(w.prunable_weights, w.masks):
            m, v = _np(mask), _np(var)
            assert np.all(v[m == 0] == 0), var.path
            if target is not None:
                assert int(m.sum()) == masking.kept_count(m.size, target), var.path


@pytest.mark.parametrize("compiled", [True, False], ids=["tf_function", "eager"])
def test_pruner_gradient_tape_loop_reaches_target(compiled):
    model = _pruned_model()
    optimizer = keras.optimizers.Adam(1e-2)
    train_step = _make_train_step(model, optimizer, compiled)
    pruner = kprune.Pruner(model)
    pruner.start()
    assert pruner.current_step == 0
    for epoch in range(2):
        for x, y in _batches():
            loss = train_step(x, y)
            pruner.step()
            # exact zeros hold after every optimizer update
            _assert_invariant(model)
    assert np.isfinite(float(loss))
    assert pruner.current_step == 16
    pruner.sync()
    assert all(w.step == 16 for w in find_wrappers(model))
    _assert_invariant(model, TARGET)


def test_update_masks_loop_reaches_target_and_stores_step():
    model = _pruned_model()
    optimizer = keras.optimizers.SGD(0.05, momentum=0.9)
    train_step = _make_train_step(model, optimizer, compiled=True)
    updated_at = []
    for epoch in range(2):
        for x, y in _batches():
            step = int(_np(optimizer.iterations))
            if kprune.update_masks(model, step):
                updated_at.append(step)
            train_step(x, y)
            _assert_invariant(model)
    # Schedule updates at 0 (before the first batch), 3, 6, 9, 12: the update
    # of step u is applied before 0-based batch u - 1, which trains with it.
    assert updated_at == [0, 2, 5, 8, 11]
    assert all(w.step == 15 for w in find_wrappers(model))
    _assert_invariant(model, TARGET)


def test_update_masks_called_sparsely_catches_up():
    model = _pruned_model(kprune.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=4, frequency=2))
    assert kprune.update_masks(model, 0) == ["d1", "d2", "out"]  # step 0: begin_step
    assert kprune.update_masks(model, 1) == ["d1", "d2", "out"]  # batch 1 trains with step 2
    assert kprune.update_masks(model, 2) == []
    # step 4 holds an update (for batch 3): called only at 5, it applies it then
    assert kprune.update_masks(model, 5) == ["d1", "d2", "out"]
    assert kprune.update_masks(model, 6) == []
    _assert_invariant(model, 0.5)
    with pytest.raises(ValueError, match="step must be >= 0"):
        kprune.update_masks(model, -1)


def test_pruner_and_update_masks_agree():
    """The same loop driven by Pruner.step() and by update_masks() gives the
    same masks and weights."""
    results = []
    for driver in ("pruner", "update_masks"):
        keras.utils.set_random_seed(0)
        model = _pruned_model(granularity=kprune.Block((4, 1)))
        optimizer = keras.optimizers.Adam(1e-2)
        train_step = _make_train_step(model, optimizer, compiled=True)
        pruner = kprune.Pruner(model).start() if driver == "pruner" else None
        for i, (x, y) in enumerate(_batches(16)):
            if pruner is None:
                kprune.update_masks(model, i)
            train_step(x, y)
            if pruner is not None:
                pruner.step()
        results.append([_np(m) for w in find_wrappers(model) for m in w.masks])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_training_before_start_names_the_fix():
    model = _pruned_model()
    x, y = _batches(1)[0]
    with pytest.raises(ValueError, match="Pruner"):
        model(x, training=True)


def test_step_before_start_is_an_error():
    with pytest.raises(RuntimeError, match="start"):
        kprune.Pruner(_pruned_model()).step()
