"""kprune.quantization: quantization-aware training that keeps the pruning.

Runs on every backend (TensorFlow, JAX, torch): the graph QAT builds (batch
norm folded, ReLU fused, which tensors are quantized), the fake quantizers
(symmetric weight ranges that keep 0.0 exact, moving-average activation
ranges), pruned zeros exactly zero after every training step, saving, and
the errors for what QAT cannot take. Export to int8 TFLite is tested on the
TensorFlow leg (tests/test_tflite_export_qat.py).
"""

import os

import keras
import numpy as np
import pytest

import kprune
from kprune import quantization
from kprune.quantization import FoldedBatchNorm, QuantizeWrapper
from conftest import assert_unchanged, small_cnn, weights_of

L = keras.layers


def _conv_bn_model():
    inp = keras.Input((8, 8, 3))
    h = L.Conv2D(8, 3, use_bias=False, name="conv")(inp)
    h = L.BatchNormalization(name="bn")(h)
    h = L.ReLU(6.0, name="relu6")(h)
    h = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(h)
    h = L.BatchNormalization(name="dw_bn")(h)
    h = L.ReLU(name="relu")(h)
    h2 = L.Conv2D(16, 1, name="proj")(h)
    h = L.Add(name="add")([h, h2])
    h = L.GlobalAveragePooling2D(name="gap")(h)
    out = L.Dense(4, name="logits")(h)
    model = keras.Model(inp, out, name="conv_bn")
    rng = np.random.default_rng(1)
    for bn in (model.get_layer("bn"), model.get_layer("dw_bn")):
        c = bn.gamma.shape[0]
        bn.set_weights([rng.uniform(0.5, 2, c), rng.normal(size=c), rng.normal(size=c) * 0.1,
                        rng.uniform(0.5, 2, c)])
    return model


def _toy_images(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8, 8, 3)).astype("float32")
    y = (x[:, :4, :4, 0].mean(axis=(1, 2)) > 0).astype("int64") + 2 * (x[:, 4:, 4:, 1].mean(axis=(1, 2)) > 0)
    return x, y


def _zero_half(layer, rng):
    kernel = keras.ops.convert_to_numpy(layer.kernel).copy()
    kernel[rng.random(kernel.shape) < 0.5] = 0
    layer.kernel.assign(kernel)
    return kernel == 0


def test_graph_folds_batch_norm_and_fuses_relu():
    model = _conv_bn_model()
    before, config = weights_of(model), model.get_config()
    qat = quantization.quantize_model(model)
    assert_unchanged(model, before, config)
    kinds = {l.name: l for l in qat.layers}
    assert isinstance(kinds["bn"], FoldedBatchNorm) and isinstance(kinds["dw_bn"], FoldedBatchNorm)
    conv, dw, proj = kinds["quant_conv"], kinds["quant_dw"], kinds["quant_proj"]
    # Conv -> BN -> ReLU6: the ReLU quantizes, the folded conv does not (TFLite fuses them).
    assert not conv.quantize_output and kinds["quant_relu6"].quantize_output
    assert conv.quantize_inputs and conv.layer.use_bias
    assert not dw.quantize_output and proj.quantize_output and kinds["quant_add"].quantize_output
    assert conv.weight_quantizer.per_channel and dw.weight_quantizer.per_channel
    assert tuple(dw.weight_quantizer.max.shape) == (16,)  # 8 channels x depth multiplier 2
    assert not kinds["quant_logits"].weight_quantizer.per_channel  # Dense: one scale (TFLite)


def test_folded_layers_compute_conv_then_batch_norm():
    model = _conv_bn_model()
    qat = quantization.quantize_model(model)
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32")
    want = model.get_layer("bn")(model.get_layer("conv")(x), training=False)
    got = qat.get_layer("quant_conv").layer(x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(want),
                               rtol=1e-4, atol=1e-4)
    h = keras.ops.convert_to_numpy(want)
    h = np.minimum(np.maximum(h, 0), 6)
    want = model.get_layer("dw_bn")(model.get_layer("dw")(h), training=False)
    got = qat.get_layer("quant_dw").layer(h)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(want),
                               rtol=1e-4, atol=1e-4)


def test_bn_after_activation_is_quantized_not_folded():
    qat = quantization.quantize_model(small_cnn())
    bn = qat.get_layer("quant_bn")
    assert isinstance(bn, QuantizeWrapper) and bn.quantize_output
    assert qat.get_layer("quant_conv2").quantize_output  # relu inside the conv, BN after it


def test_weight_quantizer_keeps_zero_exact_on_a_255_level_grid():
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3, 4, 6)).astype("float32")
    kernel[rng.random(kernel.shape) < 0.6] = 0
    kernel[..., 5] = 0  # a fully pruned channel
    q = quantization.WeightQuantizer(per_channel=True)
    q.build(kernel.shape)
    out = keras.ops.convert_to_numpy(q(kernel, training=True))
    assert np.all(out[kernel == 0] == 0)
    assert np.all(np.isfinite(out))
    step = np.abs(kernel).max(axis=(0, 1, 2))[:5] / 127
    np.testing.assert_allclose(out[..., :5] / step, np.round(out[..., :5] / step), atol=1e-3)
    np.testing.assert_allclose(out, kernel, atol=float(step.max()) / 2 + 1e-6)


def test_activation_range_first_batch_then_moving_average():
    q = quantization.ActivationQuantizer()
    q.build()
    q(np.array([[-1.0, 3.0]], "float32"), training=True)
    assert float(q.min.numpy()) == -1.0 and float(q.max.numpy()) == 3.0
    q(np.array([[1.0, 5.0]], "float32"), training=True)  # min(batch, 0) = 0
    np.testing.assert_allclose([q.min.numpy(), q.max.numpy()], [-0.999, 3.002], rtol=1e-5)
    before = float(q.max.numpy())
    q(np.array([[100.0]], "float32"), training=False)  # inference: range unchanged
    assert float(q.max.numpy()) == before


def test_pqat_keeps_pruned_weights_exactly_zero_after_every_step():
    model = _conv_bn_model()
    rng = np.random.default_rng(0)
    zeros = {name: _zero_half(model.get_layer(name), rng) for name in ("conv", "dw", "proj", "logits")}
    qat = quantization.quantize_model(model)
    layers = {name: qat.get_layer(f"quant_{name}") for name in zeros}
    # Folding scales output channels: the zeros stay where they were.
    for name, mask in zeros.items():
        assert np.array_equal(keras.ops.convert_to_numpy(layers[name].layer.kernel) == 0, mask)

    seen = []

    class Check(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if hasattr(self.model, "jax_state_sync"):
                self.model.jax_state_sync()  # JAX's fit keeps the variables in its own state
            for name, mask in zeros.items():
                kernel = keras.ops.convert_to_numpy(layers[name].layer.kernel)
                seen.append(bool(np.all(kernel[mask] == 0)) and bool(np.any(kernel[~mask] != 0)))

    x, y = _toy_images()
    qat.compile(keras.optimizers.Adam(1e-2, weight_decay=0.1),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    start = {n: keras.ops.convert_to_numpy(l.layer.kernel).copy() for n, l in layers.items()}
    qat.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[Check()])
    assert len(seen) == 4 * 12 and all(seen)
    for name, layer in layers.items():
        kernel = keras.ops.convert_to_numpy(layer.layer.kernel)
        assert not np.allclose(kernel, start[name])  # the kept weights trained
        fake = keras.ops.convert_to_numpy(layer.quantized_kernel())
        assert np.all(fake[zeros[name]] == 0)


def test_without_preserve_sparsity_zeros_may_revive():
    model = _conv_bn_model()
    mask = _zero_half(model.get_layer("logits"), np.random.default_rng(0))
    qat = quantization.quantize_model(model, preserve_sparsity=False)
    x, y = _toy_images()
    qat.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat.fit(x, y, batch_size=16, epochs=1, verbose=0)
    kernel = keras.ops.convert_to_numpy(qat.get_layer("quant_logits").layer.kernel)
    assert np.any(kernel[mask] != 0)


def test_qat_trains_and_outputs_quantized_values():
    x, y = _toy_images(192)
    model = _conv_bn_model()
    qat = quantization.quantize_model(model)
    qat.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
    first = qat.evaluate(x, y, verbose=0)[0]
    qat.fit(x, y, batch_size=32, epochs=4, verbose=0)
    assert qat.evaluate(x, y, verbose=0)[0] < first
    out = keras.ops.convert_to_numpy(qat(x[:8], training=False))
    q = qat.get_layer("quant_logits").output_quantizer
    step = (float(q.max.numpy()) - float(q.min.numpy())) / 255
    levels = (out - out.min()) / step  # on the (nudged) 8-bit grid: multiples of the step
    np.testing.assert_allclose(levels, np.round(levels), atol=2e-2)
    assert len(np.unique(np.round(levels))) > 8


def test_annotate_apply_only_quantizes_annotated_layers():
    model = keras.Sequential([keras.Input((6,)), quantization.quantize_annotate_layer(L.Dense(8, name="a")),
                              L.Dense(3, name="b")])
    qat = quantization.quantize_apply(model)
    assert [type(l).__name__ for l in qat.layers] == ["QuantizeWrapper", "Dense"]
    annotated = quantization.quantize_annotate_model(small_cnn())
    qat = quantization.quantize_apply(annotated, preserve_sparsity=True)
    assert quantization.is_quantization_aware(qat)
    assert qat.get_layer("quant_fc1").preserve_sparsity


def test_save_and_load_keep_outputs_and_masks(tmp_path):
    model = _conv_bn_model()
    mask = _zero_half(model.get_layer("proj"), np.random.default_rng(0))
    qat = quantization.quantize_model(model)
    x, y = _toy_images(32)
    qat.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat.fit(x, y, epochs=1, verbose=0)
    path = os.path.join(tmp_path, "qat.keras")
    qat.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(qat(x)),
                               atol=1e-5)
    layer = loaded.get_layer("quant_proj")
    assert np.array_equal(keras.ops.convert_to_numpy(layer.weight_quantizer.mask) == 0, mask)
    assert isinstance(layer.layer.kernel.constraint, kprune.core.wrapper.MaskConstraint)


def test_errors_name_the_layer_and_leave_the_model_unchanged():
    inp = keras.Input((5, 3))
    out = L.Dense(2, name="head")(L.LSTM(4, name="lstm")(inp))
    model = keras.Model(inp, out)
    before, config = weights_of(model), model.get_config()
    with pytest.raises(ValueError, match="'lstm' \\(LSTM\\).*cannot cover"):
        quantization.quantize_model(model)
    assert_unchanged(model, before, config)
    annotated = keras.Model(inp, quantization.quantize_annotate_layer(L.Dense(2))(L.LSTM(4, name="lstm2")(inp)))
    assert isinstance(quantization.quantize_apply(annotated).get_layer("lstm2"), L.LSTM)  # stays float

    pruned = kprune.prune_low_magnitude(small_cnn(), kprune.ConstantSparsity(0.5, 0))
    with pytest.raises(ValueError, match="PruneWrapper.*strip_pruning"):
        quantization.quantize_model(pruned)
    with pytest.raises(ValueError, match="no annotated layer"):
        quantization.quantize_apply(small_cnn())
    with pytest.raises(ValueError, match="already quantization-aware"):
        quantization.quantize_model(quantization.quantize_model(small_cnn()))

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = L.Dense(2)

        def call(self, x):
            return self.d(x)

    sub = Sub()
    sub(np.zeros((1, 3), "float32"))
    with pytest.raises(TypeError, match="subclassed"):
        quantization.quantize_model(sub)


def test_keras_quantized_model_gets_kprunes_message():
    model = keras.Sequential([keras.Input((16,)), L.Dense(8, name="d")])
    model.quantize("int8")
    with pytest.raises(ValueError, match="'d'.*model.quantize\\('int8'\\).*QI8"):
        quantization.quantize_model(model)
