"""Tests for kprune.structured.handlers: every layer family, custom layers."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from structured_models import L, check_equivalent, randomize  # noqa: E402

from kprune.structured import (  # noqa: E402
    ChannelPruner,
    DependencyGraph,
    PassthroughHandler,
    Slot,
    get_handler,
    register_handler,
)


def _head(h):
    return L.Dense(2, name="head")(L.Flatten()(h))


def test_conv1d_and_separable1d():
    x = keras.Input((16, 3))
    h = L.Conv1D(8, 3, activation="relu")(x)
    h = L.SeparableConv1D(6, 3, depth_multiplier=2)(h)
    h = L.BatchNormalization()(h)
    h = L.Conv1D(5, 1)(L.AveragePooling1D(2)(h))
    check_equivalent(randomize(keras.Model(x, _head(h))), pruning_ratio=0.5)


def test_layer_normalization_is_sliced():
    # LayerNormalization(axis=-1) takes its statistics over the channels, so
    # removing channels changes them: no masked model is equal, and we check
    # the surgery directly instead.
    x = keras.Input((6, 3))
    h = L.Dense(8, name="a")(x)
    h = L.LayerNormalization(name="ln")(h)
    h = L.Dense(4, name="b")(h)
    out = L.Dense(2, name="head")(L.Flatten()(h))
    model = randomize(keras.Model(x, out))
    pruner = ChannelPruner(model, pruning_ratio=0.5)
    plan = pruner.plan()
    thin = pruner.prune()
    gi = [g.index for g in pruner.groups if "a" in g.producers][0]
    kept = np.flatnonzero(~plan.removed[gi])
    np.testing.assert_array_equal(thin.get_layer("ln").get_weights()[0],
                                  model.get_layer("ln").get_weights()[0][kept])
    gb = [g.index for g in pruner.groups if "b" in g.producers][0]
    kept_b = np.flatnonzero(~plan.removed[gb])
    np.testing.assert_array_equal(thin.get_layer("b").get_weights()[0],
                                  model.get_layer("b").get_weights()[0][kept][:, kept_b])


def test_conv3d():
    x = keras.Input((4, 6, 6, 2))
    h = L.Conv3D(6, 3, padding="same")(x)
    h = L.BatchNormalization()(h)
    h = L.ZeroPadding3D(1)(h)
    h = L.Conv3D(4, 3)(h)
    h = L.MaxPooling3D()(h)
    check_equivalent(randomize(keras.Model(x, _head(h))), pruning_ratio=0.5)


def test_separable2d_transpose_and_padding():
    x = keras.Input((8, 8, 3))
    h = L.SeparableConv2D(8, 3, padding="same")(x)
    h = L.ZeroPadding2D(1)(h)
    h = L.Cropping2D(1)(h)
    h = L.Conv2DTranspose(6, 3, strides=2, padding="same")(h)
    h = L.LeakyReLU()(h)
    h = L.UpSampling2D()(h)
    h = L.Conv2D(4, 3, strides=4)(h)
    check_equivalent(randomize(keras.Model(x, _head(h))), pruning_ratio=0.5)


def test_all_merges():
    x = keras.Input((6, 6, 3))
    a = L.Conv2D(6, 1)(x)
    b = L.Conv2D(6, 1)(x)
    hs = [cls()([a, b]) for cls in (L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum)]
    h = L.Concatenate()(hs)
    h = L.Conv2D(4, 1)(h)
    model = randomize(keras.Model(x, _head(h)))
    pruner, thin, _ = check_equivalent(model, pruning_ratio=0.5)
    assert thin.get_layer(model.layers[1].name).filters == 3


def test_dense_and_embedding():
    x = keras.Input((5,), dtype="int32")
    h = L.Embedding(10, 8)(x)
    h = L.Dense(6, activation="relu")(h)
    h = L.GlobalAveragePooling1D()(h)
    out = L.Dense(3, name="head")(h)
    check_equivalent(randomize(keras.Model(x, out)), pruning_ratio=0.5)


def test_grouped_conv_is_unknown():
    x = keras.Input((6, 6, 4))
    h = L.Conv2D(8, 1, name="a")(x)
    h = L.Conv2D(8, 3, groups=2, name="g")(h)
    graph = DependencyGraph(keras.Model(x, _head(h)))
    assert "groups=2" in graph.unknown_layers["g"]


class ChannelScale(keras.layers.Layer):
    """y = x * w with one weight per channel (a custom passthrough layer)."""

    def build(self, input_shape):
        self.w = self.add_weight(name="w", shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.w


class ChannelScaleHandler(PassthroughHandler):
    def slots(self, layer, in_ids, out_ids):
        return [Slot("w", 0, in_ids[0], "gamma")]


def _custom_model():
    x = keras.Input((6, 6, 3))
    h = L.Conv2D(8, 1, name="a")(x)
    h = ChannelScale(name="scale")(h)
    h = L.Conv2D(4, 1, name="b")(h)
    return keras.Model(x, _head(h))


def test_custom_layer_is_unknown_until_registered():
    graph = DependencyGraph(_custom_model())
    assert "no handler" in graph.unknown_layers["scale"]
    register_handler(ChannelScale, ChannelScaleHandler())
    try:
        model = randomize(_custom_model())
        model.get_layer("scale").set_weights([np.linspace(0.5, 2, 8).astype("float32")])
        pruner, thin, _ = check_equivalent(
            model, pruning_ratio=0.5, custom_objects={"ChannelScale": ChannelScale})
        assert thin.get_layer("scale").w.shape == (4,)
    finally:
        register_handler(ChannelScale, None)
    assert get_handler(ChannelScale(name="x")) is None


def test_register_handler_bad_arguments():
    with pytest.raises(TypeError, match="Layer subclass"):
        register_handler(int, PassthroughHandler())
    with pytest.raises(TypeError, match="LayerHandler"):
        register_handler(ChannelScale, lambda *a: None)


def test_subclass_of_builtin_is_not_assumed():
    class MyConv(L.Conv2D):
        pass

    assert get_handler(L.Conv2D(2, 1)) is not None
    assert get_handler(MyConv(2, 1)) is None
