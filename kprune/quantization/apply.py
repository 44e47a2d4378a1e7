"""Turning a Keras model into a quantization-aware one: annotate, fold, wrap.

`quantize_model(model)` (or `quantize_annotate_*` then `quantize_apply`)
returns a **new** model (the caller's is unchanged) in which:

* every Dense/Conv/DepthwiseConv layer is a `QuantizeWrapper` (fake-quantized
  kernel, quantized output where the int8 graph has a tensor);
* a BatchNormalization right after a convolution or Dense layer (its only
  consumer, no activation in between) is **folded** into that layer's kernel
  and bias, with the moving statistics, exactly as TFLite's converter folds
  it, and becomes a `FoldedBatchNorm` (the identity); the folded layer then trains directly (the
  batch statistics are no longer used: a difference from tfmot, which keeps
  batch norm in training);
* ReLU/ReLU6 layers after a convolution are fused as TFLite fuses them (the
  convolution's output is not quantized, the ReLU's is); Add, Concatenate,
  average pooling and other weightless layers quantize their outputs;
  MaxPooling, Flatten, Reshape, Dropout, ZeroPadding keep their input's range;
* with `preserve_sparsity=True` (the default, and tfmot's
  `Default8BitPrunePreserveQuantizeScheme`) the zeros of every kernel are kept
  exactly zero during training (`kprune.core.wrapper.MaskConstraint`).

A layer with weights that QAT cannot cover (LSTM, Embedding, a custom layer,
SeparableConv, grouped Conv) raises an error naming it; with annotation, leave
it unannotated to keep it float.
"""

from __future__ import annotations

import keras
import numpy as np

from kprune.core import model_tree
from kprune.quantization.wrapper import (QuantizeWrapper, activation_name, call_layer, fused_activation,
                                         kernel_kind)
from kprune.core.wrapper import PruneWrapper

__all__ = ["FoldedBatchNorm", "QuantizeAnnotate", "quantize_annotate_layer", "quantize_annotate_model",
           "quantize_apply",
           "quantize_model", "check_not_keras_quantized", "is_quantization_aware", "uncovered_layers"]

L = keras.layers
_INPUT = "__input__"
#: Layers that keep their input's quantization range (no quantizer of their own).
PASS_THROUGH = (L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D, L.GlobalMaxPooling1D, L.GlobalMaxPooling2D,
                L.GlobalMaxPooling3D, L.Flatten, L.Reshape, L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D,
                L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D, L.Cropping1D, L.Cropping2D, L.Identity,
                L.Permute, L.GaussianNoise, L.GaussianDropout, L.ActivityRegularization)
#: Activations whose int8 TFLite kernels have fixed output ranges.
FIXED_RANGE = ("softmax", "sigmoid", "tanh", "log_softmax")


@keras.saving.register_keras_serializable(package="kprune")
class QuantizeAnnotate(L.Wrapper):
    """Marks a layer for `quantize_apply` (computes exactly like the layer).

    Args:
        layer: the Keras layer to quantize.
        **kwargs: standard layer arguments.

    Example:
    >>> layer = quantize_annotate_layer(keras.layers.Dense(10))
    """

    def __init__(self, layer, **kwargs):
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(f"quantize_annotate_layer takes a Keras layer, got {type(layer).__name__}.")
        kwargs.setdefault("name", f"quant_annotate_{layer.name}")
        super().__init__(layer, **kwargs)

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        self.built = True

    def call(self, inputs, training=None, **kwargs):
        # `mask` comes in `kwargs` only when the graph recorded one: the
        # annotated layer can be replaced by the bare layer again.
        return call_layer(self.layer, inputs, training, kwargs.get("mask"))

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)



@keras.saving.register_keras_serializable(package="kprune")
class FoldedBatchNorm(L.Layer):
    """What a batch norm folded into the layer before it becomes: the identity.

    (Unlike `keras.layers.Identity`, it takes batch norm's `training` and
    `mask` arguments, which the cloned graph passes on.)
    """

    def call(self, inputs, training=None, mask=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


def quantize_annotate_layer(layer):
    """Marks `layer` (not built, or built) to be quantized by `quantize_apply`.

    Args:
        layer: a Keras layer.

    Returns:
        A `QuantizeAnnotate` layer around it.

    Example:
    ```python
    model = keras.Sequential([keras.Input((784,)),
                              quantize_annotate_layer(keras.layers.Dense(10))])
    qat = quantize_apply(model)
    ```
    """
    if isinstance(layer, (QuantizeAnnotate, QuantizeWrapper)):
        raise ValueError(f"Layer '{layer.name}' is already annotated or quantized.")
    if isinstance(layer, keras.Model):
        raise TypeError(f"quantize_annotate_layer takes a layer; for the model '{layer.name}' use "
                        f"quantize_annotate_model.")
    return QuantizeAnnotate(layer)


def quantize_annotate_model(model):
    """A copy of `model` with every layer annotated for `quantize_apply`.

    Args:
        model: a built Sequential or functional model (not modified).

    Returns:
        The annotated copy (same weights).

    Example:
    >>> qat = quantize_apply(quantize_annotate_model(model))
    """
    _check_model(model, "quantize_annotate_model")

    def clone_layer(layer):
        new = model_tree.fresh_copy(layer)
        return QuantizeAnnotate(new, name=f"quant_annotate_{layer.name}")

    return model_tree.clone_layers(model, clone_layer)


def quantize_model(model, preserve_sparsity=True, name_prefix="quant_"):
    """A quantization-aware copy of `model` (every layer quantized).

    Args:
        model: a built Sequential or functional model, float, optionally
            pruned and stripped (`kprune.strip_pruning`). Not modified.
        preserve_sparsity: keep every kernel's zeros exactly zero during
            training (PQAT); False lets training revive them (tfmot's
            `quantize_model`).
        name_prefix: prefix of the quantized layers' names.

    Returns:
        The quantization-aware model: compile and `fit` it, then export with
        `tflite_export.convert(qat, quantize="int8")` (no calibration data:
        the trained ranges are the file's quantization parameters).

    Raises:
        ValueError: a layer QAT cannot cover (named), a model quantized by
            Keras' `model.quantize`, or pruning wrappers still in the model.

    Example:
    ```python
    qat = kprune.quantization.quantize_model(kprune.strip_pruning(pruned))
    qat.compile("adam", "sparse_categorical_crossentropy")
    qat.fit(x, y, epochs=1)
    tflite = tflite_export.convert(qat, quantize="int8")
    ```
    """
    return _apply(model, None, preserve_sparsity, name_prefix)


def quantize_apply(model, preserve_sparsity=False, name_prefix="quant_"):
    """Quantizes the annotated layers of `model` (see `quantize_annotate_*`).

    Args:
        model: a model with `QuantizeAnnotate` layers. Not modified.
        preserve_sparsity: keep every kernel's zeros exactly zero (PQAT).
        name_prefix: prefix of the quantized layers' names.

    Returns:
        The quantization-aware model; unannotated layers stay float.

    Example:
    >>> qat = quantize_apply(quantize_annotate_model(model), preserve_sparsity=True)
    """
    _check_model(model, "quantize_apply")
    layers = list(model.layers)
    annotated = {l.layer.name for l in layers if isinstance(l, QuantizeAnnotate)}
    if not annotated:
        raise ValueError(
            f"quantize_apply: model '{model.name}' has no annotated layer. Annotate layers with "
            f"quantize_annotate_layer or the whole model with quantize_annotate_model first.")

    def clone_layer(layer):
        return model_tree.fresh_copy(layer.layer if isinstance(layer, QuantizeAnnotate) else layer)

    plain = model_tree.clone_layers(model, clone_layer)
    return _apply(plain, annotated, preserve_sparsity, name_prefix)


# --------------------------------------------------------------------------


def _all_layers(model):
    """Every layer in `model`: nested models and wrapped layers included (public attributes only)."""
    out = []
    for layer in getattr(model, "layers", []):
        out.append(layer)
        if isinstance(layer, keras.Model):
            out.extend(_all_layers(layer))
        elif isinstance(layer, L.Wrapper):
            out.extend([layer.layer] + _all_layers(layer.layer))
    return out


def check_not_keras_quantized(model, what):
    """Raises kprune's message for a model quantized by Keras' `model.quantize`."""
    for layer in _all_layers(model):
        mode = getattr(layer, "quantization_mode", None)
        if mode:
            raise ValueError(
                f"{what}: layer '{layer.name}' ({type(layer).__name__}) was quantized by Keras' "
                f"model.quantize({mode!r}). Keras' quantized layers hold int8 weights with their own "
                f"scales, which TFLite's converter cannot export (it fails with 'operand must be QI8') "
                f"and QAT cannot train. Start from the float model: export it with "
                f"tflite_export.convert(model, quantize='int8', representative_data=x) (post-training "
                f"int8), or train it with kprune.quantization.quantize_model(model) and export that.")


def is_quantization_aware(model):
    """Whether `model` holds `QuantizeWrapper` layers (made by quantize_model/apply)."""
    return any(isinstance(l, QuantizeWrapper) for l in _all_layers(model))


def uncovered_layers(model):
    """`(name, type)` of the layers with weights that are neither quantized nor folded."""
    out = []
    for layer in model.layers:
        if isinstance(layer, (QuantizeWrapper, L.InputLayer)) or not layer.weights:
            continue
        out.append((layer.name, type(layer).__name__))
    return out


def _check_model(model, what):
    if not isinstance(model, keras.Model):
        raise TypeError(f"{what} takes a keras.Model, got {type(model).__name__}.")
    if not (isinstance(model, keras.Sequential) or callable(getattr(model, "_run_through_graph", None))):
        raise TypeError(f"{what}: model '{model.name}' is a subclassed keras.Model; QAT needs a Sequential "
                        f"or functional model (rebuild it with keras.Input and the same layers).")
    if not model.built or not model.weights:
        raise ValueError(f"{what}: model '{model.name}' is not built: call it on data or build it first.")
    check_not_keras_quantized(model, what)
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            raise ValueError(f"{what}: layer '{layer.name}' is a nested model; QAT quantizes flat models. "
                             f"Flatten it (call its layers in the outer model) first.")
        if isinstance(layer, PruneWrapper):
            raise ValueError(
                f"{what}: layer '{layer.name}' is still a PruneWrapper. Strip the pruning first "
                f"(kprune.strip_pruning(model)); quantize_model(..., preserve_sparsity=True) keeps its zeros.")
        if isinstance(layer, QuantizeWrapper):
            raise ValueError(f"{what}: layer '{layer.name}' is already quantization-aware.")


def _graph(model):
    """`{layer name: [producer names]}` (`_INPUT` for a model input), from the public config."""
    names = [l.name for l in model.layers]
    if isinstance(model, keras.Sequential):
        return {n: [names[i - 1] if i else _INPUT] for i, n in enumerate(names)}
    producers = {}
    inputs = {l.name for l in model.layers if isinstance(l, L.InputLayer)}
    for entry in model.get_config()["layers"]:
        found = []

        def walk(obj):
            if isinstance(obj, dict):
                if obj.get("class_name") == "__keras_tensor__":
                    found.append(obj["config"]["keras_history"][0])
                    return
                for v in obj.values():
                    walk(v)
            elif isinstance(obj, (list, tuple)):
                for v in obj:
                    walk(v)

        walk(entry.get("inbound_nodes", []))
        producers[entry["name"]] = [_INPUT if p in inputs else p for p in found]
    return producers


def _apply(model, only, preserve_sparsity, name_prefix="quant_"):
    _check_model(model, "quantize_model" if only is None else "quantize_apply")
    by_name = {l.name: l for l in model.layers}
    producers = _graph(model)
    consumers = {n: [] for n in by_name}
    for name, ps in producers.items():
        for p in ps:
            if p in consumers:
                consumers[p].append(name)
    wanted = (lambda name: True) if only is None else (lambda name: name in only)

    folds = {}  # producer name -> its BatchNormalization layer
    for name, layer in by_name.items():
        if not isinstance(layer, L.BatchNormalization) or not wanted(name):
            continue
        ps = producers.get(name, [])
        if len(ps) != 1 or ps[0] not in by_name or not wanted(ps[0]):
            continue
        p = by_name[ps[0]]
        if (kernel_kind(p) and consumers[p.name] == [name] and activation_name(p.activation) == "linear"
                and layer.axis in (-1, len(layer.input.shape) - 1)):
            folds[p.name] = layer
    folded = {bn.name for bn in folds.values()}

    for name, layer in by_name.items():
        if (wanted(name) and only is None and layer.weights and not kernel_kind(layer)
                and not isinstance(layer, L.BatchNormalization)):
            raise ValueError(
                f"quantize_model: layer '{name}' ({type(layer).__name__}) has weights that "
                f"quantization-aware training cannot cover (it quantizes Dense, Conv1D/2D/3D, "
                f"DepthwiseConv1D/2D and folds BatchNormalization). Annotate only the other layers "
                f"(quantize_annotate_layer, then quantize_apply) to keep it float, or replace it.")
        if wanted(name) and only is not None and layer.weights and not kernel_kind(layer) and not isinstance(
                layer, L.BatchNormalization):
            raise ValueError(
                f"quantize_apply: layer '{name}' ({type(layer).__name__}) is annotated but QAT cannot cover "
                f"it (it quantizes Dense, Conv1D/2D/3D, DepthwiseConv1D/2D and folds "
                f"BatchNormalization). Remove its quantize_annotate_layer to keep it float.")

    def effective_consumers(name):
        out = []
        for c in consumers[name]:
            out.extend(effective_consumers(c) if c in folded else [c])
        return out

    def quantize_output(name, layer):
        if kernel_kind(layer) and activation_name(layer.activation) not in ("linear", "relu", "relu6"):
            return True  # quantized before softmax/sigmoid/tanh (see QuantizeWrapper)
        after = effective_consumers(name)
        if (len(after) == 1 and fused_activation(by_name[after[0]]) and wanted(after[0])
                and (kernel_kind(layer) and activation_name(layer.activation) == "linear")):
            return False
        return True

    def clone_layer(layer):
        name = layer.name
        new = model_tree.fresh_copy(layer)
        if not wanted(name):
            return new
        if name in folded:
            return FoldedBatchNorm(name=name)
        fed_by_input = _INPUT in producers.get(name, []) and len(producers.get(name, [])) == 1
        if name in folds:
            config = layer.get_config()
            config["use_bias"] = True
            new = layer.__class__.from_config(config)
        if kernel_kind(layer):
            return QuantizeWrapper(new, quantize_output=quantize_output(name, layer), quantize_inputs=fed_by_input,
                                   preserve_sparsity=preserve_sparsity, name=f"{name_prefix}{name}")
        if isinstance(layer, PASS_THROUGH):
            if fed_by_input:
                return QuantizeWrapper(new, quantize_output=False, quantize_inputs=True, name=f"{name_prefix}{name}")
            return new
        if isinstance(layer, (L.Activation, L.Softmax)) and not fused_activation(layer):
            return new  # softmax/sigmoid/tanh: fixed output range in TFLite
        return QuantizeWrapper(new, quantize_output=True, quantize_inputs=fed_by_input, name=f"{name_prefix}{name}")

    qat = model_tree.clone_layers(model, clone_layer)
    new_by_name = {}
    for layer in qat.layers:
        inner = layer.layer if isinstance(layer, QuantizeWrapper) else layer
        new_by_name[inner.name] = layer
    for name, bn in folds.items():
        _fold(by_name[name], bn, new_by_name[name].layer)
    for layer in qat.layers:
        if isinstance(layer, QuantizeWrapper):
            layer.sync_kernel_state()
    return qat


def _fold(layer, bn, target):
    """Sets `target`'s kernel and bias to `layer`'s with `bn` folded in (inference statistics)."""
    kernel = keras.ops.convert_to_numpy(layer.kernel).astype(np.float64)
    bias = keras.ops.convert_to_numpy(layer.bias).astype(np.float64) if layer.use_bias else 0.0
    mean = keras.ops.convert_to_numpy(bn.moving_mean).astype(np.float64)
    var = keras.ops.convert_to_numpy(bn.moving_variance).astype(np.float64)
    gamma = keras.ops.convert_to_numpy(bn.gamma).astype(np.float64) if bn.scale else 1.0
    beta = keras.ops.convert_to_numpy(bn.beta).astype(np.float64) if bn.center else 0.0
    scale = gamma / np.sqrt(var + bn.epsilon)
    if kernel_kind(layer) == "depthwise":
        folded = kernel * scale.reshape(kernel.shape[-2], kernel.shape[-1])
    else:
        folded = kernel * scale
    target.kernel.assign(folded.astype(np.float32))
    target.bias.assign(((bias - mean) * scale + beta).astype(np.float32))
