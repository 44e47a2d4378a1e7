"""Sparse-training regularisers: Network Slimming and growing regularisation."""

import keras
import numpy as np
import pytest

from kprune import structured
from kprune.methods.regularizers import GrowingRegularization, MaskedL2, network_slimming


def _bn_model():
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(8, 3, name="conv")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = keras.layers.Dense(3, name="out")(h)
    return keras.Model(inputs, outputs)


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(64, 8, 8, 1)).astype("float32"), rng.integers(0, 3, 64)


def _fit(model, epochs=3, callbacks=()):
    x, y = _data()
    model.compile(keras.optimizers.SGD(0.05),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=16, epochs=epochs, verbose=0, callbacks=list(callbacks))
    return model


def _gamma(model):
    return np.abs(keras.ops.convert_to_numpy(model.get_layer("bn").gamma))


def test_slimming_drives_bn_scales_to_zero_faster_than_no_penalty():
    base = _bn_model()
    plain = keras.models.clone_model(base)
    plain.set_weights(base.get_weights())
    slim = network_slimming(base, penalty=0.5)
    _fit(plain)
    _fit(slim)
    # 12 SGD steps of lr 0.05: the L1 sub-gradient takes about
    # 12 * 0.05 * 0.5 = 0.3 off every scale.
    assert (_gamma(slim) < _gamma(plain)).all()
    assert _gamma(slim).sum() < _gamma(plain).sum() - 0.5 * 8 * 0.3
    # The penalty is the plain Keras L1 regulariser, saved in the config.
    reg = slim.get_layer("bn").gamma_regularizer
    assert isinstance(reg, keras.regularizers.L1) and float(reg.l1) == pytest.approx(0.5)


def test_slimming_copy_keeps_weights_and_leaves_model_alone():
    base = _bn_model()
    config = base.get_config()
    slim = network_slimming(base)
    for a, b in zip(base.weights, slim.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    assert base.get_config() == config
    assert base.get_layer("bn").gamma_regularizer is None


def test_slimming_errors():
    with pytest.raises(ValueError, match="penalty"):
        network_slimming(_bn_model(), penalty=0)
    with pytest.raises(ValueError, match="no BatchNormalization"):
        network_slimming(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))
    with pytest.raises(ValueError, match="nope"):
        network_slimming(_bn_model(), layers=["nope"])


def test_masked_l2_penalises_only_selected_entries():
    reg = MaskedL2(np.array([1.0, 0.0, 1.0]), penalty=0.5)
    value = keras.ops.convert_to_numpy(reg(keras.ops.convert_to_tensor([1.0, 10.0, 2.0])))
    assert value == pytest.approx(0.5 * (1.0 + 4.0))


def test_growing_regularisation_shrinks_the_chosen_channels_and_grows():
    model = _bn_model()
    greg = GrowingRegularization(pruning_ratio=0.5, delta=0.05, interval=2, max_penalty=1.0)
    before = np.abs(keras.ops.convert_to_numpy(model.get_layer("conv").kernel)).sum(axis=(0, 1, 2))
    _fit(model, epochs=3, callbacks=[greg])
    (group,) = [g for g in greg.pruner.graph.groups if g.index in greg.plan.removed]
    removed = greg.plan.removed[group.index]
    after = np.abs(keras.ops.convert_to_numpy(model.get_layer("conv").kernel)).sum(axis=(0, 1, 2))
    # 12 steps, +0.05 every 2: the penalty grew to 0.35.
    assert greg.penalty == pytest.approx(0.35)
    shrink = after / before
    assert shrink[removed].max() < shrink[~removed].min()
    # Regularisers are removed after fit; prune() drops exactly the chosen channels.
    assert model.get_layer("conv").kernel.regularizer is None
    thin = greg.prune()
    assert thin.get_layer("conv").filters == int((~removed).sum())


def test_growing_regularisation_validates_arguments():
    with pytest.raises(ValueError, match="delta"):
        GrowingRegularization(delta=-1)
    with pytest.raises(ValueError, match="interval"):
        GrowingRegularization(interval=0)
