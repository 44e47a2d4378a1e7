"""Can XNNPACK's sparse inference path run this Keras model?

XNNPACK (the default CPU delegate of LiteRT) has a sparse NCHW path for 1x1
convolutions ("Fast Sparse ConvNets", Elsen et al. 2019). It only applies
when the whole network between the stem and the classifier fits its
pattern; tfmot's `PruneForLatencyOnXNNPack` policy encodes the rules, which
this module checks on a Keras 3 model:

* every input branch starts with `ZeroPadding2D(1)` then a `Conv2D` 3x3,
  stride 2, `padding="valid"` on 3 input channels (the stem);
* every output branch reaches a `GlobalAveragePooling2D(keepdims=True)`;
* every layer in between is one XNNPACK runs in NCHW: 1x1 stride-1 `Conv2D`,
  3x3/5x5 `DepthwiseConv2D` (stride 1 "same", or stride 1/2 "valid" after
  a matching `ZeroPadding2D`), `BatchNormalization` on axis 3, `Add`,
  `Multiply`, `ReLU`, `LeakyReLU`, `ELU`, `Dropout`, `ZeroPadding2D`,
  bilinear `UpSampling2D`, or `Activation` relu/relu6/leaky_relu/elu/sigmoid;
* the 1x1 convolutions have more than 2/3 zeros.

The sparse path runs on ARM (phones) and some other CPUs, not on x86 with
AVX, so a desktop benchmark will not show its speed-up.
"""

from __future__ import annotations

import dataclasses
import platform

import numpy as np

from kprune.utils.table import format_table

#: XNNPACK takes the sparse path when the 1x1 convs have more zeros than this.
MIN_ZEROS = 2.0 / 3.0


@dataclasses.dataclass
class LayerCheck:
    """Verdict on one layer.

    Attributes:
        name: layer name.
        class_name: layer class.
        role: `"stem"`, `"body"`, `"end"`, or `"outside"` (before the stem
            or after the pooling: not part of the sparse subgraph).
        ok: True when the layer satisfies XNNPACK's conditions.
        reason: why not (empty when ok), or a note.
    """

    name: str
    class_name: str
    role: str
    ok: bool
    reason: str = ""


@dataclasses.dataclass
class XnnpackSparseReport:
    """Result of `xnnpack_sparse_report`.

    Attributes:
        eligible: True when every condition holds for the model.
        reasons: model-level reasons it is not eligible (empty when it is).
        layers: `LayerCheck` per layer, in model order.
        machine: `platform.machine()` of this computer.
        note: whether this computer can run the sparse path at all.
    """

    eligible: bool
    reasons: list
    layers: list
    machine: str
    note: str

    def __str__(self):
        head = "XNNPACK sparse inference: " + (
            "conditions hold" if self.eligible else "NOT eligible"
        )
        lines = [head] + [f"- {r}" for r in self.reasons] + [self.note]
        rows = [
            [c.name, c.class_name, c.role, "ok" if c.ok else "NO", c.reason]
            for c in self.layers
        ]
        lines.append(format_table(["layer", "class", "role", "ok", "why"], rows))
        return "\n".join(lines)


def xnnpack_sparse_report(keras_model):
    """Checks XNNPACK's sparse-inference conditions, layer by layer.

    Args:
        keras_model: a built functional or Sequential `keras.Model` (strip
            pruning wrappers first, or pass the pruned model: wrappers are
            looked through).

    Returns:
        An `XnnpackSparseReport`; `print(report)` gives one table saying, for
        each layer, whether it fits and why not.

    Raises:
        TypeError: `keras_model` is not a Keras model.
        ValueError: a subclassed model (no layer graph to check).

    Example:
    >>> report = tflite_export.xnnpack_sparse_report(model)
    >>> report.eligible
    False
    >>> print(report)
    """
    import keras

    if not isinstance(keras_model, keras.Model):
        raise TypeError(
            f"keras_model must be a keras.Model, got {type(keras_model).__name__}."
        )
    if not hasattr(keras_model, "_nodes_by_depth") and not isinstance(
        keras_model, keras.Sequential
    ):
        raise ValueError(
            f"model {keras_model.name!r} is subclassed: XNNPACK conditions are "
            "checked on the layer graph of functional or Sequential models."
        )
    layers = [l for l in keras_model.layers if not isinstance(l, keras.layers.InputLayer)]
    inner = {id(l): _unwrap(l) for l in layers}
    producers = {id(l): _producers(l) for l in layers}
    consumers = {id(l): _consumers(l, keras_model) for l in layers}

    stems = [l for l in layers if _is_stem(inner[id(l)], [inner.get(id(p), p) for p in producers[id(l)]])]
    ends = [l for l in layers if isinstance(inner[id(l)], keras.layers.GlobalAveragePooling2D)]
    reasons = []
    if not stems:
        reasons.append(
            "no stem: need ZeroPadding2D(1) -> Conv2D 3x3, stride 2, padding='valid', "
            "3 input channels, at the start of every input branch"
        )
    if not ends:
        reasons.append("no GlobalAveragePooling2D: the sparse subgraph must end in one")

    # Body: everything reachable from the stems before a GlobalAveragePooling2D.
    body = set()
    frontier = [c for s in stems for c in consumers[id(s)]]
    while frontier:
        layer = frontier.pop()
        if id(layer) in body or layer in ends or layer in stems:
            continue
        body.add(id(layer))
        frontier.extend(consumers.get(id(layer), []))

    checks = []
    for l in layers:
        core = inner[id(l)]
        if l in stems:
            checks.append(LayerCheck(l.name, type(core).__name__, "stem", True))
        elif l in ends:
            ok = bool(getattr(core, "keepdims", False))
            checks.append(LayerCheck(
                l.name, type(core).__name__, "end", ok,
                "" if ok else "GlobalAveragePooling2D needs keepdims=True",
            ))
        elif id(l) in body:
            reason = _unsupported_reason(core, [inner.get(id(p), p) for p in producers[id(l)]])
            checks.append(LayerCheck(l.name, type(core).__name__, "body", not reason, reason))
        else:
            checks.append(LayerCheck(l.name, type(core).__name__, "outside", True,
                                     "not in the stem..pooling subgraph"))
    bad = [c for c in checks if not c.ok]
    if bad:
        reasons.append(
            f"{len(bad)} layer(s) break the pattern: " + ", ".join(c.name for c in bad[:5])
            + ("..." if len(bad) > 5 else "")
        )
    pointwise = [c for c in checks if c.role == "body" and c.ok and _is_pointwise(_inner_of(layers, inner, c.name))]
    if stems and not pointwise:
        reasons.append("no 1x1 Conv2D in the subgraph: nothing for the sparse path to speed up")
    machine = platform.machine()
    x86 = machine.lower() in ("x86_64", "amd64", "i386", "i686", "x86")
    note = (
        f"this machine is {machine}: XNNPACK's sparse path does not run on x86 "
        "with AVX, so measure the speed-up on an ARM phone"
        if x86 else f"this machine is {machine}: the sparse path can run here"
    )
    return XnnpackSparseReport(
        eligible=not reasons, reasons=reasons, layers=checks, machine=machine, note=note
    )


def _inner_of(layers, inner, name):
    for l in layers:
        if l.name == name:
            return inner[id(l)]
    return None


def _unwrap(layer):
    # Pruning wrappers (kprune.PruneWrapper, keras Wrapper) expose `.layer`.
    while hasattr(layer, "layer") and type(layer).__name__.endswith("Wrapper"):
        layer = layer.layer
    return layer


def _producers(layer):
    out = []
    for node in getattr(layer, "_inbound_nodes", []):
        for parent in getattr(node, "parent_nodes", []):
            op = getattr(parent, "operation", None)
            if op is not None and op not in out:
                out.append(op)
    return out


def _consumers(layer, model):
    out = []
    for node in getattr(layer, "_outbound_nodes", []):
        op = getattr(node, "operation", None)
        if op is not None and op in model.layers and op not in out:
            out.append(op)
    return out


def _pair(v):
    return tuple(v) if isinstance(v, (list, tuple)) else (v, v)


def _padding_of(producers):
    import keras

    if len(producers) == 1 and isinstance(producers[0], keras.layers.ZeroPadding2D):
        return tuple(tuple(p) for p in producers[0].padding)
    return None


def _is_stem(layer, producers):
    import keras

    if not isinstance(layer, keras.layers.Conv2D) or isinstance(
        layer, (keras.layers.DepthwiseConv2D, keras.layers.Conv2DTranspose)
    ):
        return False
    kernel = getattr(layer, "kernel", None)
    return (
        kernel is not None
        and tuple(kernel.shape[:3]) == (3, 3, 3)
        and _pair(layer.strides) == (2, 2)
        and layer.padding.lower() == "valid"
        and _padding_of(producers) == ((1, 1), (1, 1))
    )


def _is_pointwise(layer):
    import keras

    return (
        isinstance(layer, keras.layers.Conv2D)
        and not isinstance(layer, (keras.layers.DepthwiseConv2D, keras.layers.Conv2DTranspose))
        and _pair(layer.kernel_size) == (1, 1)
    )


def _unsupported_reason(layer, producers):
    """Empty string when XNNPACK's sparse subgraph supports `layer`."""
    import keras

    L = keras.layers
    name = type(layer).__name__
    if isinstance(layer, (L.Add, L.Multiply, L.ZeroPadding2D, L.ReLU, L.LeakyReLU, L.ELU, L.Dropout)):
        return ""
    if isinstance(layer, L.DepthwiseConv2D):
        k, s, p = _pair(layer.kernel_size), _pair(layer.strides), layer.padding.lower()
        pad = _padding_of(producers)
        if layer.depth_multiplier != 1:
            return "DepthwiseConv2D needs depth_multiplier=1"
        if _pair(layer.dilation_rate) != (1, 1):
            return "DepthwiseConv2D needs dilation_rate=1"
        for size, margin in (((3, 3), 1), ((5, 5), 2)):
            if k != size:
                continue
            if s == (1, 1) and p == "same":
                return ""
            if s in ((1, 1), (2, 2)) and p == "valid" and pad == ((margin, margin),) * 2:
                return ""
            return (
                f"DepthwiseConv2D {k[0]}x{k[1]} needs stride 1 with padding='same', "
                f"or stride 1/2 with padding='valid' after ZeroPadding2D({margin})"
            )
        return f"DepthwiseConv2D kernel {k} not supported (3x3 or 5x5 only)"
    if isinstance(layer, L.Conv2D) and not isinstance(layer, L.Conv2DTranspose):
        if _pair(layer.kernel_size) != (1, 1):
            return f"Conv2D kernel {_pair(layer.kernel_size)}: only 1x1 convs inside the subgraph"
        if _pair(layer.strides) != (1, 1):
            return "1x1 Conv2D needs stride 1"
        if layer.groups != 1 or _pair(layer.dilation_rate) != (1, 1):
            return "1x1 Conv2D needs groups=1 and dilation_rate=1"
        kernel = np.asarray(layer.kernel.numpy())
        zeros = float(np.mean(kernel == 0))
        if zeros <= MIN_ZEROS:
            return f"1x1 Conv2D has {zeros:.0%} zeros, needs more than 2/3"
        return ""
    if isinstance(layer, L.BatchNormalization):
        axis = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
        return "" if list(axis) in ([3], [-1]) else "BatchNormalization needs axis=3"
    if isinstance(layer, L.UpSampling2D):
        return "" if layer.interpolation == "bilinear" else "UpSampling2D needs bilinear"
    if isinstance(layer, L.Activation):
        act = getattr(layer.activation, "__name__", str(layer.activation))
        ok = act in ("relu", "relu6", "leaky_relu", "elu", "sigmoid")
        return "" if ok else f"Activation {act!r} not supported"
    return f"{name} is not supported inside XNNPACK's sparse subgraph"
