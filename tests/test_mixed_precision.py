"""Mixed precision (`mixed_float16`): pruning trains, masks are float32,
pruned weights stay exactly zero through the LossScaleOptimizer."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import kprune  # noqa: E402
from kprune.core import masking  # noqa: E402
from kprune.core.model_tree import find_wrappers  # noqa: E402

L = keras.layers


@pytest.fixture
def mixed_float16():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    keras.utils.set_random_seed(0)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _cnn():
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        L.Conv2D(8, 3, activation="relu", name="conv"),
        L.Flatten(),
        L.Dense(16, activation="relu", name="fc"),
        L.Dense(4, name="logits"),
        L.Activation("softmax", dtype="float32"),
    ])


def _rnn():
    inp = keras.Input((6, 8))
    h = L.MultiHeadAttention(2, 4, name="mha")(inp, inp)
    h = L.LSTM(8, name="lstm")(h)
    return keras.Model(inp, L.Activation("softmax", dtype="float32")(L.Dense(4, name="out")(h)))


def _data(shape, n=64):
    rng = np.random.default_rng(0)
    return rng.random((n,) + shape).astype("float32"), rng.integers(0, 4, n)


def _check(pruned, target):
    for w in find_wrappers(pruned):
        assert w.compute_dtype == "float16"
        for var, mask in zip(w.prunable_weights, w.masks):
            assert var.dtype == "float32" and mask.dtype == "float32"
            m, v = _np(mask), _np(var)
            assert int(m.sum()) == masking.kept_count(m.size, target), var.path
            assert np.all(v[m == 0] == 0), var.path


@pytest.mark.backends("tensorflow", "torch", reason="JAX on CPU: Keras' own fit of the MHA+LSTM model fails under mixed_float16 without kprune too (XLA CPU: dot_general precision F16_F16_F32 is not supported)")
@pytest.mark.parametrize("make, shape", [(_cnn, (8, 8, 1)), (_rnn, (6, 8))], ids=["cnn", "mha_lstm"])
def test_mixed_float16_prunes_to_target(mixed_float16, make, shape):
    model = make()
    pruned = kprune.prune_low_magnitude(
        model, kprune.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=8, frequency=2)
    )
    pruned.compile(keras.optimizers.SGD(0.1, momentum=0.9), "sparse_categorical_crossentropy")
    # Keras wraps the optimizer for loss scaling under mixed_float16.
    assert isinstance(pruned.optimizer, keras.optimizers.LossScaleOptimizer)
    x, y = _data(shape)
    history = pruned.fit(
        x, y, batch_size=16, epochs=3, verbose=0, callbacks=[kprune.PruningCallback()]
    )
    assert np.all(np.isfinite(history.history["loss"]))
    _check(pruned, 0.75)
    assert pruned.predict(x[:4], verbose=0).dtype == np.float32
    plain = kprune.strip_pruning(pruned)
    np.testing.assert_allclose(
        _np(plain.predict(x, verbose=0)), _np(pruned.predict(x, verbose=0)), rtol=1e-3, atol=1e-3
    )


def test_overflowing_step_is_skipped_and_zeros_hold(mixed_float16):
    """A huge initial loss scale makes the first steps overflow in float16:
    the LossScaleOptimizer skips them (no update), halves the scale, and the
    pruned weights stay exactly zero throughout."""
    pruned = kprune.prune_low_magnitude(_cnn(), kprune.ConstantSparsity(0.5, frequency=1))
    opt = keras.optimizers.LossScaleOptimizer(
        keras.optimizers.Adam(1e-2), initial_scale=2.0**24
    )
    pruned.compile(opt, "sparse_categorical_crossentropy")
    x, y = _data((8, 8, 1))
    pruned.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[kprune.PruningCallback()])
    steps = 3 * 64 // 8
    applied = int(_np(opt.inner_optimizer.iterations))
    assert float(_np(opt.dynamic_scale)) < 2.0**24  # overflowing steps happened
    assert 0 < applied < steps, applied  # some skipped, some applied
    _check(pruned, 0.5)


@pytest.mark.tensorflow
def test_custom_loop_with_loss_scaling(mixed_float16):
    import tensorflow as tf

    pruned = kprune.prune_low_magnitude(_cnn(), kprune.ConstantSparsity(0.6, frequency=2))
    opt = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-2))
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    x, y = _data((8, 8, 1))
    pruner = kprune.Pruner(pruned).start()
    for i in range(0, 64, 16):
        with tf.GradientTape() as tape:
            loss = loss_fn(y[i:i + 16], pruned(x[i:i + 16], training=True))
            scaled = opt.scale_loss(loss)
        grads = tape.gradient(scaled, pruned.trainable_variables)
        opt.apply_gradients(zip(grads, pruned.trainable_variables))
        pruner.step()
    _check(pruned, 0.6)
