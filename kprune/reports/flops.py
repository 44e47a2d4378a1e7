"""FLOPs and parameter counts, and a before/after width report.

`count_flops` counts the multiply-accumulates of the layers that dominate
inference cost (Conv*, DepthwiseConv*, SeparableConv*, Conv*Transpose, Dense,
MultiHeadAttention, LSTM/GRU/SimpleRNN and Bidirectional) and reports
FLOPs = 2 x MACs, per example (batch 1). Normalisation, activations, pooling,
additions and other `keras.ops` nodes are not counted: they are cheap, and
BatchNormalization is folded into the convolution on TFLite export.

A model whose input has unknown spatial dimensions (`Input((None, None, 3))`)
needs `input_shape=` to be counted.
"""

from __future__ import annotations

import copy

import keras
import numpy as np

from kprune.core import checks
from kprune.structured.graph import model_nodes

__all__ = ["count_flops", "count_params", "layer_widths", "width_report"]


def _prod(values):
    return int(np.prod([int(v) for v in values], dtype=np.int64)) if len(values) else 1


def _layer_macs(layer, in_shape, out_shape, key_len=None):
    L = keras.layers
    name = type(layer).__name__
    if not isinstance(layer, L.Layer):
        return 0  # a keras.ops node: elementwise, cheap
    weights = {v.name: tuple(v.shape) for v in layer.weights}
    if isinstance(layer, L.MultiHeadAttention):
        shapes = {v.path.split("/")[-2]: tuple(v.shape) for v in layer.weights
                  if v.name == "kernel"}
        q, k, v, o = (shapes[n] for n in ("query", "key", "value", "attention_output"))
        t = _prod(out_shape[1:-1])
        s = t if key_len is None else key_len  # length of the keys/values
        heads, dk, dv = q[1], q[2], v[2]
        return (t * _prod(q) + s * (_prod(k) + _prod(v)) + t * s * heads * (dk + dv)
                + t * _prod(o))
    if isinstance(layer, L.Bidirectional):
        return (_layer_macs(layer.forward_layer, in_shape, out_shape)
                + _layer_macs(layer.backward_layer, in_shape, out_shape))
    if isinstance(layer, (L.LSTM, L.GRU, L.SimpleRNN)):
        steps = in_shape[1] if len(in_shape) > 2 else 1
        return int(steps or 1) * sum(_prod(v.shape) for v in layer.weights
                                     if v.name in ("kernel", "recurrent_kernel"))
    if isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)):
        dk = weights["depthwise_kernel"]
        pk = weights["pointwise_kernel"]
        spatial = _prod(out_shape[1:-1])
        return spatial * (_prod(dk[:-2]) * dk[-2] * dk[-1] + pk[-2] * pk[-1])
    if isinstance(layer, (L.DepthwiseConv1D, L.DepthwiseConv2D)):
        k = weights["kernel"]
        return _prod(out_shape[1:-1]) * _prod(k)
    if "Transpose" in name and "kernel" in weights:
        k = weights["kernel"]
        return _prod(in_shape[1:-1]) * _prod(k)
    if isinstance(layer, (L.Conv1D, L.Conv2D, L.Conv3D)):
        k = weights["kernel"]
        return _prod(out_shape[1:-1]) * _prod(k)
    if isinstance(layer, L.Dense):
        k = weights["kernel"]
        return _prod(out_shape[1:-1]) * _prod(k)
    return 0


def _unknown_dims(model):
    for node in model_nodes(model):
        if not isinstance(node.operation, keras.layers.Layer):
            continue
        for t in list(node.input_tensors) + list(node.output_tensors):
            if any(d is None for d in tuple(t.shape)[1:]):
                return node.operation.name
    return None


def _with_input_shape(model, input_shape):
    """The model's graph rebuilt for a static input shape (weights not copied)."""
    shapes = input_shape
    if not shapes or not isinstance(shapes[0], (list, tuple)):
        shapes = [shapes] * len(model.inputs)
    if len(shapes) != len(model.inputs):
        raise ValueError(f"input_shape: model {model.name!r} has {len(model.inputs)} inputs, "
                         f"got {len(shapes)} shapes.")
    config = copy.deepcopy(model.get_config())
    names = [t._keras_history[0].name for t in model.inputs]
    for entry in config.get("layers", []):
        name = entry.get("config", {}).get("name")
        if entry.get("class_name") == "InputLayer" and name in names:
            shape = shapes[names.index(name)]
            entry["config"]["batch_shape"] = [None] + [int(d) for d in shape]
        entry.pop("build_config", None)
    cls = keras.Sequential if isinstance(model, keras.Sequential) else keras.Model
    return cls.from_config(config)


def _per_layer_flops(model):
    out = {}
    for node in model_nodes(model):
        layer = node.operation
        if isinstance(layer, keras.Model):
            sub = _per_layer_flops(layer)
            out[layer.name] = out.get(layer.name, 0) + sum(sub.values())
            continue
        if not node.input_tensors or not node.output_tensors:
            continue
        key_len = None
        if isinstance(layer, keras.layers.MultiHeadAttention) and len(node.input_tensors) > 1:
            key_len = _prod(tuple(node.input_tensors[1].shape)[1:-1])
        macs = _layer_macs(layer, tuple(node.input_tensors[0].shape),
                           tuple(node.output_tensors[0].shape), key_len)
        if macs:
            out[layer.name] = out.get(layer.name, 0) + 2 * macs
    return out


def count_flops(model, per_layer=False, input_shape=None):
    """FLOPs of one forward pass at batch size 1 (2 x multiply-accumulates).

    Args:
        model: a built functional or Sequential keras.Model.
        per_layer: if True, return a dict `layer name -> FLOPs` instead.
        input_shape: input shape without the batch axis (or a list, one per
            input), needed when the model's input has unknown dimensions,
            e.g. `(224, 224, 3)` for `keras.Input((None, None, 3))`.

    Returns:
        An int (or a dict with `per_layer=True`).

    Raises:
        ValueError: if a layer's shape is unknown and `input_shape` is not given.

    Example:
    >>> count_flops(keras.applications.MobileNetV2(weights=None))  # ~0.6 GFLOPs
    >>> count_flops(fully_convolutional, input_shape=(224, 224, 3))
    """
    per_layer = checks.check_bool("per_layer", per_layer)
    if input_shape is not None:
        model = _with_input_shape(model, input_shape)
    else:
        where = _unknown_dims(model)
        if where is not None:
            raise ValueError(
                f"count_flops: model {model.name!r} has unknown dimensions (first at layer "
                f"{where!r}, input shape {[tuple(t.shape) for t in model.inputs]}); pass "
                f"input_shape=, e.g. count_flops(model, input_shape=(224, 224, 3)).")
    per = _per_layer_flops(model)
    return per if per_layer else int(sum(per.values()))


def count_params(model):
    """Number of scalars in all of the model's weights (trainable or not).

    Example:
    >>> count_params(model) == model.count_params()
    True
    """
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(f"count_params needs a Keras model or layer, got {checks.describe(model)}.")
    return int(sum(_prod(tuple(v.shape)) for v in model.weights))


def layer_widths(model):
    """Output width (last axis) of every layer that has weights: `{name: width}`."""
    out = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):
            continue
        if len(shape):
            out[layer.name] = shape[-1]
    return out


def width_report(before, after, print_fn=None, input_shape=None):
    """A per-layer table of widths and FLOPs before and after pruning.

    Args:
        before: the original model.
        after: the pruned model (same layer names).
        print_fn: if given, called with the table; otherwise it is returned.
        input_shape: see `count_flops` (for inputs with unknown dimensions).

    Returns:
        The table as a string (None when `print_fn` is given).

    Example:
    >>> print(width_report(model, pruned))
    """
    for name, model in (("before", before), ("after", after)):
        if not isinstance(model, keras.Model):
            raise TypeError(f"width_report: {name} must be a keras.Model, got {checks.describe(model)}.")
    checks.check_callable("print_fn", print_fn, signature="such as print")
    wb, wa = layer_widths(before), layer_widths(after)
    fb = count_flops(before, per_layer=True, input_shape=input_shape)
    fa = count_flops(after, per_layer=True, input_shape=input_shape)
    types = {l.name: type(l).__name__ for l in before.layers}
    rows = [("layer", "type", "width", "FLOPs")]
    for name, w in wb.items():
        w2 = wa.get(name, "-")
        flops = f"{fb.get(name, 0):,} -> {fa.get(name, 0):,}" if name in fb else ""
        rows.append((name, types.get(name, "?"), f"{w} -> {w2}", flops))
    tb, ta = sum(fb.values()), sum(fa.values())
    pb, pa = count_params(before), count_params(after)
    rows.append(("TOTAL", "", f"params {pb:,} -> {pa:,} ({pa / max(pb, 1):.1%})",
                 f"{tb:,} -> {ta:,} ({ta / max(tb, 1):.1%})"))
    width = [max(len(str(r[i])) for r in rows) for i in range(4)]
    text = "\n".join("  ".join(str(c).ljust(x) for c, x in zip(r, width)) for r in rows)
    if print_fn is not None:
        print_fn(text)
        return None
    return text
