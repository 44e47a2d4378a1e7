"""Per-layer handlers: how each Keras layer type moves and owns channels.

A *handler* answers three questions about one call (node) of a layer, in
terms of **channel ids**: every tensor in the graph carries one integer id per
position of its last (channel) axis, and positions that share an id must be
removed together.

* `out_ids(layer, in_ids, ctx)`: the ids of the layer's outputs, given the ids
  of its inputs. A layer that **prunes outputs** (Conv, Dense) allocates fresh
  ids with `ctx.fresh(n)`; a **passthrough** layer (BatchNormalization,
  pooling, activations) returns its input ids; a merge (Add) ties its inputs
  together with `ctx.union(a, b)`.
* `slots(layer, in_ids, out_ids)`: which weight axes are indexed by which ids.
  A Conv2D kernel `[kh, kw, in, out]` has its axis 2 indexed by the input ids
  (it **prunes inputs**) and axis 3 by the output ids (it **prunes outputs**).
* `new_config(layer, config, out_widths)`: the layer config for the thinner
  layer (for example `filters` set to the new width).

Handlers live in a registry keyed by the *exact* layer class: a subclass of
`Conv2D` that overrides `call` is not silently treated as a Conv2D. Layers
without a handler are "unknown": every channel that touches them is frozen, so
an unknown layer can make a model less prunable but never wrong. Register a
handler for a custom layer with `register_handler`.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

__all__ = [
    "Slot",
    "Unsupported",
    "LayerHandler",
    "ProducerHandler",
    "PassthroughHandler",
    "NormalizationHandler",
    "DepthwiseHandler",
    "SeparableHandler",
    "MergeHandler",
    "ConcatenateHandler",
    "FlattenHandler",
    "register_handler",
    "get_handler",
    "registered_handlers",
]


class Unsupported(Exception):
    """Raised by a handler when it cannot handle this particular layer call.

    The message says why; the graph freezes every channel touching the layer
    and lists it in its report.
    """


@dataclasses.dataclass(frozen=True)
class Slot:
    """One weight axis indexed by channel ids.

    Args:
        weight: the weight's name (`variable.name`, e.g. `"kernel"`).
        axis: the axis of that weight indexed by `ids`.
        ids: int array, one channel id per position along `axis`.
        role: what the axis is, used by importance criteria: `"out"` (the
            output axis of a kernel: a filter), `"in"` (the input axis of a
            kernel), `"bias"`, `"gamma"` (a normalisation scale), `"beta"`,
            `"stat"` (moving statistics, never zeroed by masking) or `"dw"`
            (a depthwise kernel's channel axis).
    """

    weight: str
    axis: int
    ids: np.ndarray
    role: str


_MIXING_ACTIVATIONS = ("softmax", "log_softmax")


def _activation_name(layer):
    act = getattr(layer, "activation", None)
    return getattr(act, "__name__", str(act))


def _check_channels_last(layer):
    fmt = getattr(layer, "data_format", None)
    if fmt not in (None, "channels_last"):
        raise Unsupported(
            f"data_format={fmt!r}; only channels_last is understood (the "
            f"channel axis must be the last one)"
        )


def _last_dim(ids_list):
    return [len(i) for i in ids_list]


class LayerHandler:
    """Base handler. Subclasses override the three methods below.

    Example:
    >>> class MyScale(keras.layers.Layer):  # y = x * w, w of shape (channels,)
    ...     ...
    >>> class MyScaleHandler(kprune.structured.PassthroughHandler):
    ...     def slots(self, layer, in_ids, out_ids):
    ...         return [Slot("w", 0, in_ids[0], "gamma")]
    >>> kprune.structured.register_handler(MyScale, MyScaleHandler())
    """

    #: "prune_out", "passthrough" or "merge": shown in reports.
    kind = "passthrough"

    def out_ids(self, layer, in_ids, ctx):
        """Returns a list of id arrays, one per output tensor.

        Args:
            layer: the layer (from the original model).
            in_ids: list of int arrays, one per input tensor.
            ctx: the graph builder; offers `ctx.fresh(n)`,
                `ctx.union(ids_a, ids_b)`, `ctx.freeze(ids, reason)`,
                `ctx.input_shapes` and `ctx.output_shapes`.

        Raises:
            Unsupported: when this call cannot be handled.
        """
        raise NotImplementedError

    def slots(self, layer, in_ids, out_ids):
        """Returns the `Slot`s of the layer's weights (may be empty)."""
        return []

    def new_config(self, layer, config, out_widths):
        """Returns the config of the thinner layer.

        Args:
            layer: the original layer.
            config: a copy of `layer.get_config()` (may be edited in place).
            out_widths: list of new output widths, one per output tensor.
        """
        return config


class PassthroughHandler(LayerHandler):
    """Channels go through unchanged (pooling, dropout, activations, padding)."""

    kind = "passthrough"

    def out_ids(self, layer, in_ids, ctx):
        _check_channels_last(layer)
        if len(in_ids) != 1:
            raise Unsupported(f"expected one input, got {len(in_ids)}")
        act = getattr(layer, "activation", None)
        if act is not None and _activation_name(layer) in _MIXING_ACTIVATIONS:
            raise Unsupported(f"activation {_activation_name(layer)!r} mixes channels")
        axis = getattr(layer, "axis", -1)
        if type(layer).__name__ == "Softmax" and axis in (-1, len(ctx.input_shapes[0]) - 1):
            raise Unsupported("Softmax over the channel axis mixes channels")
        return [in_ids[0]]


class NormalizationHandler(PassthroughHandler):
    """BatchNormalization / LayerNormalization over the last axis only.

    BatchNormalization is per channel, so removing channels leaves the others
    exactly unchanged. LayerNormalization(axis=-1) takes its mean and variance
    *over* the channels: the thinner layer normalises over the kept channels
    only (as Torch-Pruning does), which is a valid smaller model but not the
    same function as zeroing those channels.
    """

    def out_ids(self, layer, in_ids, ctx):
        rank = len(ctx.input_shapes[0])
        axis = layer.axis
        axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
        axes = [a % rank for a in axes]
        if axes != [rank - 1]:
            raise Unsupported(f"normalises over axis {layer.axis}, not only the channel axis")
        if getattr(layer, "renorm", False):
            raise Unsupported("renorm=True is not handled")
        if isinstance(layer, keras.layers.LayerNormalization) and getattr(layer, "rms_scaling", False):
            raise Unsupported("rms_scaling=True is not handled")
        return [in_ids[0]]

    def slots(self, layer, in_ids, out_ids):
        ids = in_ids[0]
        roles = {"gamma": "gamma", "beta": "beta", "moving_mean": "stat", "moving_variance": "stat"}
        out = []
        for v in layer.weights:
            if v.name not in roles:
                raise Unsupported(f"unexpected weight {v.name!r}")
            out.append(Slot(v.name, 0, ids, roles[v.name]))
        return out


class ProducerHandler(LayerHandler):
    """A layer that makes new channels: Conv*, Dense, Embedding.

    Args:
        width_key: the config key of the output width (`"filters"`, `"units"`).
        in_axis: axis of the kernel indexed by input channels (None: none).
        out_axis: axis of the kernel indexed by output channels.
        kernel: name of the kernel weight.
    """

    kind = "prune_out"

    def __init__(self, width_key, in_axis=-2, out_axis=-1, kernel="kernel"):
        self.width_key = width_key
        self.in_axis = in_axis
        self.out_axis = out_axis
        self.kernel = kernel

    def out_ids(self, layer, in_ids, ctx):
        _check_channels_last(layer)
        if getattr(layer, "groups", 1) != 1:
            raise Unsupported(f"grouped convolution (groups={layer.groups})")
        if getattr(layer, "lora_enabled", False):
            raise Unsupported("LoRA-enabled layers are not handled")
        if getattr(layer, "quantization_mode", None):
            raise Unsupported(f"quantized layer (mode {layer.quantization_mode!r})")
        if len(ctx.output_shapes) != 1:
            raise Unsupported("expected one output")
        ids = ctx.fresh(ctx.output_shapes[0][-1])
        if _activation_name(layer) in _MIXING_ACTIVATIONS:
            ctx.freeze(ids, f"activation {_activation_name(layer)!r} mixes output channels")
        return [ids]

    def slots(self, layer, in_ids, out_ids):
        names = {v.name for v in layer.weights}
        unexpected = names - {self.kernel, "bias"}
        if unexpected:
            raise Unsupported(f"unexpected weights {sorted(unexpected)}")
        out = [Slot(self.kernel, self.out_axis, out_ids[0], "out")]
        if self.in_axis is not None:
            out.append(Slot(self.kernel, self.in_axis, in_ids[0], "in"))
        if "bias" in names:
            out.append(Slot("bias", 0, out_ids[0], "bias"))
        return out

    def new_config(self, layer, config, out_widths):
        config[self.width_key] = int(out_widths[0])
        return config


class DepthwiseHandler(LayerHandler):
    """DepthwiseConv1D/2D: channel c makes outputs `c*m .. c*m+m-1`."""

    kind = "passthrough"

    def out_ids(self, layer, in_ids, ctx):
        _check_channels_last(layer)
        m = int(layer.depth_multiplier)
        return [np.repeat(in_ids[0], m)]

    def slots(self, layer, in_ids, out_ids):
        names = {v.name for v in layer.weights}
        if names - {"kernel", "bias"}:
            raise Unsupported(f"unexpected weights {sorted(names)}")
        # Keras 3 names the depthwise kernel "kernel": [k..., in, multiplier].
        out = [Slot("kernel", -2, in_ids[0], "dw")]
        if "bias" in names:
            out.append(Slot("bias", 0, out_ids[0], "bias"))
        return out


class SeparableHandler(ProducerHandler):
    """SeparableConv1D/2D: depthwise `[k..., in, m]` then pointwise `[1.., in*m, out]`."""

    def __init__(self):
        super().__init__("filters")

    def slots(self, layer, in_ids, out_ids):
        names = {v.name for v in layer.weights}
        if names - {"depthwise_kernel", "pointwise_kernel", "bias"}:
            raise Unsupported(f"unexpected weights {sorted(names)}")
        m = int(layer.depth_multiplier)
        mid = np.repeat(in_ids[0], m)
        out = [
            Slot("depthwise_kernel", -2, in_ids[0], "dw"),
            Slot("pointwise_kernel", -2, mid, "in"),
            Slot("pointwise_kernel", -1, out_ids[0], "out"),
        ]
        if "bias" in names:
            out.append(Slot("bias", 0, out_ids[0], "bias"))
        return out


class MergeHandler(LayerHandler):
    """Add, Subtract, Multiply, Average, Maximum, Minimum: ties all inputs."""

    kind = "merge"

    def out_ids(self, layer, in_ids, ctx):
        widths = _last_dim(in_ids)
        if len(set(widths)) != 1:
            raise Unsupported(f"inputs have different channel counts {widths} (broadcasting)")
        for other in in_ids[1:]:
            ctx.union(in_ids[0], other)
        return [in_ids[0]]


class ConcatenateHandler(LayerHandler):
    """Concatenate: index ranges along the channel axis, a merge otherwise."""

    kind = "merge"

    def out_ids(self, layer, in_ids, ctx):
        rank = len(ctx.output_shapes[0])
        if layer.axis % rank == rank - 1:
            return [np.concatenate(in_ids)]
        return MergeHandler().out_ids(layer, in_ids, ctx)


class FlattenHandler(LayerHandler):
    """Flatten of `[..., C]`: position `p` of the output is channel `p % C`."""

    kind = "passthrough"

    def out_ids(self, layer, in_ids, ctx):
        _check_channels_last(layer)
        spatial = ctx.input_shapes[0][1:-1]
        if any(d is None for d in spatial):
            raise Unsupported("spatial size is not static")
        return [np.tile(in_ids[0], int(np.prod(spatial, dtype=np.int64)))]


_REGISTRY = {}


def register_handler(layer_cls, handler):
    """Registers `handler` for layers whose exact class is `layer_cls`.

    Args:
        layer_cls: a `keras.layers.Layer` subclass.
        handler: a `LayerHandler` instance (or None to unregister).

    Example:
    >>> register_handler(MyGate, PassthroughHandler())
    """
    if not (isinstance(layer_cls, type) and issubclass(layer_cls, keras.layers.Layer)):
        raise TypeError(f"layer_cls must be a keras.layers.Layer subclass, got {layer_cls!r}.")
    if handler is None:
        _REGISTRY.pop(layer_cls, None)
        return
    if not isinstance(handler, LayerHandler):
        raise TypeError(f"handler must be a LayerHandler instance, got {handler!r}.")
    _REGISTRY[layer_cls] = handler


def get_handler(layer):
    """The handler for `layer`'s exact class, or None if it is unknown."""
    return _REGISTRY.get(type(layer))


def registered_handlers():
    """A copy of the registry: `{layer class: handler}`."""
    return dict(_REGISTRY)


def _register_builtins():
    L = keras.layers
    conv = ProducerHandler("filters", in_axis=-2, out_axis=-1)
    for cls in (L.Conv1D, L.Conv2D, L.Conv3D):
        register_handler(cls, conv)
    conv_t = ProducerHandler("filters", in_axis=-1, out_axis=-2)
    for cls in (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose):
        register_handler(cls, conv_t)
    register_handler(L.Dense, ProducerHandler("units", in_axis=0, out_axis=1))
    register_handler(L.Embedding, ProducerHandler("output_dim", in_axis=None, out_axis=1,
                                                  kernel="embeddings"))
    for cls in (L.DepthwiseConv1D, L.DepthwiseConv2D):
        register_handler(cls, DepthwiseHandler())
    for cls in (L.SeparableConv1D, L.SeparableConv2D):
        register_handler(cls, SeparableHandler())
    register_handler(L.BatchNormalization, NormalizationHandler())
    register_handler(L.LayerNormalization, NormalizationHandler())
    for cls in (L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum):
        register_handler(cls, MergeHandler())
    register_handler(L.Concatenate, ConcatenateHandler())
    register_handler(L.Flatten, FlattenHandler())
    passthrough = PassthroughHandler()
    for name in (
        "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
        "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
        "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
        "MaxPooling1D", "MaxPooling2D", "MaxPooling3D",
        "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
        "GaussianDropout", "GaussianNoise", "AlphaDropout",
        "Activation", "ReLU", "LeakyReLU", "ELU", "Identity",
        "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D",
        "Cropping1D", "Cropping2D", "Cropping3D",
        "UpSampling1D", "UpSampling2D", "UpSampling3D",
        "ActivityRegularization",
    ):
        cls = getattr(L, name, None)
        if cls is not None:
            register_handler(cls, passthrough)


_register_builtins()
