import keras
import numpy as np
import pytest

import kprune
from kprune.core import masking
from conftest import gradients
from kprune.core.wrapper import MaskConstraint, is_prunable, prunable_weights


def _wrapped_dense(units=4, inputs=6, schedule=None):
    w = kprune.PruneWrapper(keras.layers.Dense(units, name="d"), schedule)
    w.build((None, inputs))
    return w


def test_build_creates_one_mask_per_prunable_weight_and_a_step():
    w = _wrapped_dense()
    assert [tuple(m.shape) for m in w.masks] == [(6, 4)]
    assert all(not m.trainable for m in w.masks)
    assert w.masks[0].dtype == w.layer.kernel.dtype
    assert w.step == -1
    assert isinstance(w.layer.kernel.constraint, MaskConstraint)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(w.masks[0]), np.ones((6, 4)))


def test_assign_masks_zeroes_the_stored_weights_so_the_forward_pass_is_masked():
    w = _wrapped_dense()
    rng = np.random.default_rng(0)
    mask = rng.random((6, 4)) > 0.5
    kernel = keras.ops.convert_to_numpy(w.layer.kernel)
    w.assign_masks([mask])
    stored = keras.ops.convert_to_numpy(w.layer.kernel)
    np.testing.assert_array_equal(stored, np.where(mask, kernel, 0))
    x = rng.normal(size=(3, 6)).astype("float32")
    expected = x @ (kernel * mask) + keras.ops.convert_to_numpy(w.layer.bias)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(w(x)), expected, rtol=1e-5, atol=1e-6)


def test_the_forward_pass_adds_no_masking_op():
    """The stored weights are the masked weights: `call` is the layer's call."""
    w = _wrapped_dense()
    w.assign_masks([np.ones((6, 4), bool)])
    x = np.ones((2, 6), "float32")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(w(x)), keras.ops.convert_to_numpy(w.layer(x)))


def test_an_optimizer_step_keeps_pruned_weights_exactly_zero_although_they_get_a_gradient():
    w = _wrapped_dense()
    mask = np.zeros((6, 4), dtype=bool)
    mask[:3] = True
    w.assign_masks([mask])
    x = np.random.default_rng(1).normal(size=(5, 6)).astype("float32")
    (grad,) = gradients(lambda: keras.ops.sum(keras.ops.square(w(x))), [w.layer.kernel])
    assert np.any(grad[~mask] != 0)
    opt = keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=0.01)
    opt.apply([keras.ops.convert_to_tensor(grad)], [w.layer.kernel])
    kernel = keras.ops.convert_to_numpy(w.layer.kernel)
    assert np.all(kernel[~mask] == 0)
    assert np.all(kernel[mask] != 0)


def test_a_non_finite_update_leaves_pruned_weights_exactly_zero():
    w = _wrapped_dense()
    mask = np.zeros((6, 4), dtype=bool)
    mask[0] = True
    w.assign_masks([mask])
    nan = keras.ops.full((6, 4), float("nan"))
    out = keras.ops.convert_to_numpy(w.layer.kernel.constraint(nan))
    assert np.all(out[~mask] == 0)
    assert np.all(np.isnan(out[mask]))


def test_mask_constraint_composes_with_the_layer_constraint():
    layer = keras.layers.Dense(3, kernel_constraint=keras.constraints.NonNeg())
    w = kprune.PruneWrapper(layer)
    w.build((None, 4))
    w.masks[0].assign(np.eye(4, 3, dtype="float32"))
    out = keras.ops.convert_to_numpy(w.layer.kernel.constraint(-keras.ops.ones((4, 3))))
    np.testing.assert_array_equal(out, np.zeros((4, 3)))  # NonNeg first, then the mask
    out = keras.ops.convert_to_numpy(w.layer.kernel.constraint(keras.ops.ones((4, 3))))
    np.testing.assert_array_equal(out, np.eye(4, 3))


def test_assign_masks_sets_masks_and_zeroes_weights():
    w = _wrapped_dense()
    mask = np.zeros((6, 4), bool)
    mask[0] = True
    before = keras.ops.convert_to_numpy(w.layer.kernel)
    w.assign_masks([mask])
    after = keras.ops.convert_to_numpy(w.layer.kernel)
    np.testing.assert_array_equal(after, np.where(mask, before, 0))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(w.masks[0]), mask.astype("float32"))
    with pytest.raises(ValueError, match="shape"):
        w.assign_masks([np.ones((4, 6))])
    with pytest.raises(ValueError, match="1 pruned weights, got 2"):
        w.assign_masks([mask, mask])


@pytest.mark.parametrize(
    "layer, input_shape, weight_name, layout",
    [
        (keras.layers.Dense(3), (None, 5), "kernel", masking.Layout(0, -1)),
        (keras.layers.Conv1D(3, 2), (None, 8, 4), "kernel", masking.Layout(-2, -1)),
        (keras.layers.Conv2D(3, 2), (None, 8, 8, 4), "kernel", masking.Layout(-2, -1)),
        (keras.layers.Conv3D(3, 2), (None, 4, 4, 4, 2), "kernel", masking.Layout(-2, -1)),
        (keras.layers.Conv2DTranspose(3, 2), (None, 8, 8, 4), "kernel", masking.Layout(-1, -2)),
        (keras.layers.Conv3DTranspose(3, 2), (None, 4, 4, 4, 2), "kernel", masking.Layout(-1, -2)),
        (keras.layers.SeparableConv1D(3, 2), (None, 8, 4), "pointwise_kernel", masking.Layout(-2, -1)),
        (keras.layers.SeparableConv2D(3, 2), (None, 8, 8, 4), "pointwise_kernel", masking.Layout(-2, -1)),
        (keras.layers.DepthwiseConv2D(2), (None, 8, 8, 4), "kernel", masking.Layout(-2, -2)),
        (keras.layers.Embedding(50, 8), (None, 7), "embeddings", masking.Layout(None, None)),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, keras.layers.Layer) else None,
)
def test_registry_covers_the_core_layers(layer, input_shape, weight_name, layout):
    layer.build(input_shape)
    pairs = prunable_weights(layer)
    assert [(w.name, lay) for w, lay in pairs] == [(weight_name, layout)]
    w = kprune.PruneWrapper(layer.__class__.from_config(layer.get_config()))
    w.build(input_shape)
    assert [m.shape for m in w.masks] == [pairs[0][0].shape]


def test_non_prunable_layers_are_rejected_with_a_clear_error():
    assert not is_prunable(keras.layers.BatchNormalization())
    with pytest.raises(ValueError, match="not prunable"):
        kprune.PruneWrapper(keras.layers.BatchNormalization())
    with pytest.raises(TypeError, match="Keras layer"):
        kprune.PruneWrapper(np.zeros(3))
    with pytest.raises(ValueError, match="already a PruneWrapper"):
        kprune.PruneWrapper(kprune.PruneWrapper(keras.layers.Dense(2)))
    with pytest.raises(ValueError, match="scope"):
        kprune.PruneWrapper(keras.layers.Dense(2), scope="model")


class _CustomDense(keras.layers.Layer, kprune.PrunableLayer):
    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], self.units), name="w")
        self.b = self.add_weight(shape=(self.units,), name="b", initializer="zeros")

    def call(self, x):
        return keras.ops.matmul(x, self.w) + self.b

    def get_prunable_weights(self):
        return [self.w]

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def test_custom_layer_opts_in_with_get_prunable_weights():
    w = kprune.PruneWrapper(_CustomDense(4), kprune.ConstantSparsity(0.5))
    w.build((None, 6))
    assert [tuple(m.shape) for m in w.masks] == [(6, 4)]
    x = keras.ops.ones((2, 6))
    w.assign_masks([np.zeros((6, 4), bool)])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(w(x)), np.zeros((2, 4)))


def test_register_prunable_validates_arguments():
    with pytest.raises(TypeError, match="Layer class"):
        kprune.register_prunable(int, lambda l: [])
    with pytest.raises(TypeError, match="callable"):
        kprune.register_prunable(keras.layers.Dense, "kernel")


def test_embedding_wrapper_keeps_masking_support():
    layer = keras.layers.Embedding(10, 4, mask_zero=True)
    w = kprune.PruneWrapper(layer)
    w.build((None, 3))
    mask = w.compute_mask(keras.ops.convert_to_tensor([[1, 0, 2]]))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(mask), [[True, False, True]])


def test_get_config_round_trip():
    w = kprune.PruneWrapper(
        keras.layers.Conv2D(4, 3),
        kprune.PolynomialDecay(0.1, 0.9, 0, 100, frequency=10),
        granularity=kprune.Block((2, 1)),
        scope="global",
    )
    clone = kprune.PruneWrapper.from_config(w.get_config())
    assert clone.pruning_schedule == w.pruning_schedule
    assert clone.granularity == kprune.Block((2, 1))
    assert clone.scope == "global"
    assert clone.layer.get_config() == w.layer.get_config()


def test_fixed_mask_wrapper_trains_without_callback():
    model = keras.Sequential([keras.Input((6,)), kprune.PruneWrapper(keras.layers.Dense(3))])
    wrapper = model.layers[0]
    mask = np.zeros((6, 3), bool)
    mask[::2] = True
    wrapper.assign_masks([mask])
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "mse")
    model.fit(np.ones((16, 6)), np.ones((16, 3)), epochs=2, verbose=0)
    kernel = keras.ops.convert_to_numpy(wrapper.layer.kernel)
    assert np.all(kernel[~mask] == 0)
    assert np.all(kernel[mask] != 0)
