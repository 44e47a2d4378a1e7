"""`QuantizeWrapper`: one Keras layer trained with fake quantization.

The wrapper computes its layer's op itself, on a fake-quantized kernel, so
that the graph TFLite's converter sees is the int8 graph it builds:

* **kernels** (Dense, Conv1D/2D/3D, DepthwiseConv1D/2D): `WeightQuantizer`,
  per tensor for Dense (the int8 FULLY_CONNECTED kernel takes one scale),
  per output channel for convolutions; the bias stays float (the converter
  makes it int32 with scale `input_scale * weight_scale`).
* **activations**: an `ActivationQuantizer` on the layer's output, after a
  ReLU/ReLU6/linear activation (which TFLite fuses into the op), or before
  softmax/sigmoid/tanh (whose int8 kernels have fixed output scales); none
  when the next layer (a folded batch norm, a ReLU) quantizes it instead.
  A layer fed by a model input also quantizes that input.
* **weightless layers** (ReLU, Add, Concatenate, average pooling, ...) are
  run as they are, with their output quantized.

**Pruning preserved.** With `preserve_sparsity=True` the kernel gets a
`kprune.core.wrapper.MaskConstraint` on a mask of its zeros: Keras optimizers apply
it after every update, so pruned weights stay exactly zero during QAT (the
same mechanism as pruning during `fit`). The symmetric weight range maps 0.0
to the int8 value 0, so the zeros reach the file exactly.
"""

from __future__ import annotations

import keras
from keras import ops

from kprune.quantization.quantizers import ActivationQuantizer, WeightQuantizer
from kprune.core.wrapper import MaskConstraint

__all__ = ["QuantizeWrapper", "kernel_kind", "fused_activation", "activation_name", "call_layer"]

L = keras.layers
#: Activations TFLite fuses into the op before the output is quantized.
FUSED_ACTIVATIONS = ("linear", "relu", "relu6")


def kernel_kind(layer):
    """`"dense"`, `"conv"`, `"depthwise"` for layers whose kernel QAT quantizes, else None."""
    if isinstance(layer, L.Dense):
        return "dense"
    if isinstance(layer, (L.DepthwiseConv1D, L.DepthwiseConv2D)):
        return "depthwise"
    if isinstance(layer, (L.Conv1D, L.Conv2D, L.Conv3D)) and getattr(layer, "groups", 1) == 1:
        return "conv"
    return None


def activation_name(activation):
    """The name of a Keras activation function (`"linear"` for None)."""
    if activation is None:
        return "linear"
    try:
        name = keras.activations.serialize(activation)
    except (ValueError, TypeError):
        return getattr(activation, "__name__", "custom")
    if isinstance(name, dict):
        name = name.get("config", {}).get("name", name.get("class_name", "custom"))
    return str(name)


def fused_activation(layer):
    """Whether `layer` is a ReLU/ReLU6 that TFLite fuses into the op before it."""
    if isinstance(layer, L.ReLU):
        return (not layer.negative_slope and not layer.threshold
                and layer.max_value in (None, 6.0))
    if isinstance(layer, L.Activation):
        return activation_name(layer.activation) in ("relu", "relu6")
    return False


def call_layer(layer, inputs, training=None, mask=None):
    """Calls `layer` with the `training` and `mask` arguments its `call` takes."""
    kwargs = {}
    if getattr(layer, "_call_has_training_arg", False):
        kwargs["training"] = training
    if mask is not None and getattr(layer, "_call_has_mask_arg", False):
        kwargs["mask"] = mask
    return layer(inputs, **kwargs)


@keras.saving.register_keras_serializable(package="kprune")
class QuantizeWrapper(L.Wrapper):
    """Trains `layer` with 8-bit fake quantization (tfmot's default scheme).

    Args:
        layer: the Keras layer (Dense, Conv*, DepthwiseConv*, or a weightless
            layer such as ReLU, Add, AveragePooling2D).
        quantize_output: fake-quantize the output (see the module docstring);
            `quantize_apply` decides it from the graph.
        quantize_inputs: also fake-quantize the input (a layer fed by a model
            input).
        preserve_sparsity: keep the kernel's zeros exactly zero (PQAT).
        **kwargs: standard layer arguments.

    Example:
    ```python
    layer = kprune.quantization.QuantizeWrapper(keras.layers.Dense(10), quantize_inputs=True)
    ```
    """

    def __init__(self, layer, quantize_output=True, quantize_inputs=False, preserve_sparsity=False,
                 **kwargs):
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(f"QuantizeWrapper wraps a Keras layer, got {type(layer).__name__}.")
        kwargs.setdefault("name", f"quant_{layer.name}")
        super().__init__(layer, **kwargs)
        self.kind = kernel_kind(layer)
        self.quantize_output = bool(quantize_output)
        self.quantize_inputs = bool(quantize_inputs)
        self.preserve_sparsity = bool(preserve_sparsity) and self.kind is not None
        self.activation = activation_name(getattr(layer, "activation", None)) if self.kind else "linear"
        self.pre_activation = self.kind is not None and self.activation not in FUSED_ACTIVATIONS
        self.weight_quantizer = (
            WeightQuantizer(per_channel=self.kind != "dense", preserve_sparsity=self.preserve_sparsity,
                            name="kernel_quantizer")
            if self.kind else None)
        self.input_quantizer = ActivationQuantizer(name="input_quantizer") if self.quantize_inputs else None
        self.output_quantizer = ActivationQuantizer(name="output_quantizer") if self.quantize_output else None

    # -- build -------------------------------------------------------------

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        if self.weight_quantizer is not None:
            kernel = self.layer.kernel
            self.weight_quantizer.build(self._quantized_shape(kernel.shape), tuple(kernel.shape))
            if self.preserve_sparsity and not isinstance(kernel.constraint, MaskConstraint):
                kernel.constraint = MaskConstraint(self.weight_quantizer.mask, kernel.constraint)
        for q in (self.input_quantizer, self.output_quantizer):
            if q is not None:
                q.build()
        self.built = True

    def _quantized_shape(self, shape):
        shape = tuple(shape)
        if self.kind == "depthwise":  # [..., in, multiplier] -> channels in*multiplier
            return shape[:-2] + (shape[-2] * shape[-1],)
        return shape

    # -- state set by quantize_apply ---------------------------------------

    def sync_kernel_state(self):
        """Sets the weight range from the kernel and, with
        `preserve_sparsity`, the mask from the kernel's zeros (call after the
        kernel's values were set)."""
        if self.weight_quantizer is None:
            return
        kernel = ops.convert_to_tensor(self.layer.kernel)
        if self.preserve_sparsity:
            self.weight_quantizer.mask.assign(ops.cast(ops.not_equal(kernel, 0), self.weight_quantizer.mask.dtype))
        self.weight_quantizer.reset(ops.reshape(kernel, self._quantized_shape(kernel.shape)))

    # -- call --------------------------------------------------------------

    def quantized_kernel(self, training=False):
        """The fake-quantized kernel (the values the int8 file holds, as floats)."""
        kernel = self.layer.kernel
        shape = tuple(kernel.shape)
        q = self.weight_quantizer(ops.reshape(kernel, self._quantized_shape(shape)), training=training)
        return ops.reshape(q, shape)

    def call(self, inputs, training=None, **kwargs):
        x = inputs
        if self.input_quantizer is not None:
            x = self.input_quantizer(x, training=training)
        if self.kind is None:
            y = call_layer(self.layer, x, training, kwargs.get("mask"))
            return self.output_quantizer(y, training=training) if self.output_quantizer else y
        y = self._kernel_op(x, self.quantized_kernel(training))
        activation = self.layer.activation
        if self.pre_activation:
            if self.output_quantizer is not None:
                y = self.output_quantizer(y, training=training)
            return activation(y)
        if activation is not None:
            y = activation(y)
        if self.output_quantizer is not None:
            y = self.output_quantizer(y, training=training)
        return y

    def _kernel_op(self, x, kernel):
        layer = self.layer
        if self.kind == "dense":
            y = ops.matmul(x, kernel)
        elif self.kind == "conv":
            y = layer.convolution_op(x, kernel)
        else:
            y = ops.depthwise_conv(x, kernel, strides=layer.strides, padding=layer.padding,
                                   dilation_rate=layer.dilation_rate, data_format=layer.data_format)
        if layer.use_bias:
            bias = layer.bias
            if self.kind != "dense" and layer.data_format == "channels_first":
                bias = ops.reshape(bias, (1, -1) + (1,) * (len(y.shape) - 2))
            y = ops.add(y, bias)
        return y

    # -- shapes and config ---------------------------------------------------

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)


    def get_config(self):
        return {**super().get_config(), "quantize_output": self.quantize_output,
                "quantize_inputs": self.quantize_inputs, "preserve_sparsity": self.preserve_sparsity}
