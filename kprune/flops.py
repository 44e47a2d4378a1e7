"""FLOPs and parameter counts, and a before/after width report.

`count_flops` counts the multiply-accumulates of the layers that dominate
inference cost (Conv*, DepthwiseConv*, SeparableConv*, Conv*Transpose, Dense)
and reports FLOPs = 2 x MACs, per example (batch 1). Normalisation,
activations, pooling and additions are not counted: they are cheap, and
BatchNormalization is folded into the convolution on TFLite export.
"""

from __future__ import annotations

import numpy as np

from kprune import checks

__all__ = ["count_flops", "count_params", "layer_widths", "width_report"]


def _prod(values):
    return int(np.prod([int(v) for v in values], dtype=np.int64)) if len(values) else 1


def _layer_macs(layer, in_shape, out_shape):
    import keras  # noqa: PLC0415

    L = keras.layers
    name = type(layer).__name__
    weights = {v.name: tuple(v.shape) for v in layer.weights}
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


def _per_layer_flops(model):
    import keras  # noqa: PLC0415

    from kprune.structured.graph import model_nodes  # noqa: PLC0415

    out = {}
    for node in model_nodes(model):
        layer = node.operation
        if isinstance(layer, keras.Model):
            sub = _per_layer_flops(layer)
            out[layer.name] = out.get(layer.name, 0) + sum(sub.values())
            continue
        if not node.input_tensors or not node.output_tensors:
            continue
        macs = _layer_macs(layer, tuple(node.input_tensors[0].shape),
                           tuple(node.output_tensors[0].shape))
        if macs:
            out[layer.name] = out.get(layer.name, 0) + 2 * macs
    return out


def count_flops(model, per_layer=False):
    """FLOPs of one forward pass at batch size 1 (2 x multiply-accumulates).

    Args:
        model: a built functional or Sequential keras.Model.
        per_layer: if True, return a dict `layer name -> FLOPs` instead.

    Returns:
        An int (or a dict with `per_layer=True`).

    Example:
    >>> count_flops(keras.applications.MobileNetV2(weights=None))  # ~0.6 GFLOPs
    """
    per_layer = checks.check_bool("per_layer", per_layer)
    per = _per_layer_flops(model)
    return per if per_layer else int(sum(per.values()))


def count_params(model):
    """Number of scalars in all of the model's weights (trainable or not).

    Example:
    >>> count_params(model) == model.count_params()
    True
    """
    import keras  # noqa: PLC0415

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


def width_report(before, after, print_fn=None):
    """A per-layer table of widths and FLOPs before and after pruning.

    Args:
        before: the original model.
        after: the pruned model (same layer names).
        print_fn: if given, called with the table; otherwise it is returned.

    Returns:
        The table as a string (None when `print_fn` is given).

    Example:
    >>> print(width_report(model, pruned))
    """
    import keras  # noqa: PLC0415

    for name, model in (("before", before), ("after", after)):
        if not isinstance(model, keras.Model):
            raise TypeError(f"width_report: {name} must be a keras.Model, got {checks.describe(model)}.")
    checks.check_callable("print_fn", print_fn, signature="such as print")
    wb, wa = layer_widths(before), layer_widths(after)
    fb, fa = count_flops(before, per_layer=True), count_flops(after, per_layer=True)
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
