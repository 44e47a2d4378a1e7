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
  layer (for example `filters` set to the new width). A handler may also take
  `in_widths=` (kept width of each input) and `inner=` (kept size of each
  hidden axis it declared with `ctx.inner(name, ids)`, e.g. attention heads).

Handlers exist for layers and for `keras.ops` operations: a functional graph
records `x + 3`, `x * s` or `ops.mean(x, axis=(1, 2))` as operation nodes,
which are handled like layers (and named as operations in reports).

Some removals are exact only up to changed statistics: a LayerNormalization
over pruned channels normalises over fewer values. Handlers mark such
channels with `ctx.approximate(ids, reason)`; the plan lists those groups and
the self-check of `ChannelPruner.prune` does not hold them to exactness.

Handlers live in a registry keyed by the *exact* layer (or operation) class: a subclass of
`Conv2D` that overrides `call` is not silently treated as a Conv2D. Layers
without a handler are "unknown": every channel that touches them is frozen, so
an unknown layer can make a model less prunable but never wrong. Register a
handler for a custom layer with `register_handler`.
"""

from __future__ import annotations

import dataclasses
import numbers

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
    "ReshapeHandler",
    "PermuteHandler",
    "ElementwiseOpHandler",
    "ReduceOpHandler",
    "GroupedConvHandler",
    "ScaleHandler",
    "MultiHeadAttentionHandler",
    "RNNHandler",
    "BidirectionalHandler",
    "GroupNormalizationHandler",
    "KerasHubTransformerHandler",
    "operation_label",
    "weight_key",
    "find_weight",
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
        """Returns the `Slot`s of the layer's weights (may be empty).

        An override may take `ctx=` as well (to read `ctx.inner_ids` or
        `ctx.node`). A `Slot.weight` is the variable's `weight_key`: its name,
        or its path below the layer when the name is not unique.
        """
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
        if isinstance(layer, keras.layers.Normalization) and getattr(layer, "invert", False):
            raise Unsupported("invert=True is not handled")
        axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
        axes = [a % rank for a in axes]
        if axes != [rank - 1]:
            raise Unsupported(f"normalises over axis {layer.axis}, not only the channel axis")
        if getattr(layer, "renorm", False):
            raise Unsupported("renorm=True is not handled")
        if isinstance(layer, keras.layers.LayerNormalization):
            if getattr(layer, "rms_scaling", False):
                raise Unsupported("rms_scaling=True is not handled")
            ctx.approximate(in_ids[0], f"LayerNormalization {layer.name!r} normalises over "
                                       f"the channels: removing some changes its mean and "
                                       f"variance")
        return [in_ids[0]]

    def slots(self, layer, in_ids, out_ids):
        ids = in_ids[0]
        roles = {"gamma": "gamma", "beta": "beta", "moving_mean": "stat", "moving_variance": "stat",
                 "mean": "stat", "variance": "stat"}
        out = []
        for v in layer.weights:
            if v.name == "count":
                continue  # keras.layers.Normalization's sample count
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
            return GroupedConvHandler().out_ids(layer, in_ids, ctx)
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
        if getattr(layer, "groups", 1) != 1:
            return GroupedConvHandler().slots(layer, in_ids, out_ids)
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
        if getattr(layer, "groups", 1) != 1:
            config["groups"] = GroupedConvHandler.kept_groups(layer, out_widths[0])
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
        return [tie_operands(layer, in_ids, ctx.input_shapes, ctx.output_shapes[0], ctx)]


def tie_operands(op, in_ids, in_shapes, out_shape, ctx):
    """Ids of an elementwise result: operands of full width are tied together;
    an operand of width 1 (or a scalar) broadcasts and is frozen.

    Raises:
        Unsupported: if an operand has another width (it would broadcast
            differently after pruning).
    """
    width = out_shape[-1] if len(out_shape) else 1
    result = None
    for ids, shape in zip(in_ids, in_shapes):
        w = shape[-1] if len(shape) else 1
        if w == width:
            if result is None:
                result = ids
            else:
                ctx.union(result, ids)
        elif w == 1:
            ctx.freeze(ids, f"broadcast over the channels by {operation_label(op)}")
        else:
            raise Unsupported(f"operands have channel counts "
                              f"{[s[-1] if len(s) else 1 for s in in_shapes]} (broadcasting)")
    if result is None:
        raise Unsupported("no operand has the output's channel count")
    return result


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


def operation_label(op):
    """How reports name a layer or a `keras.ops` operation node."""
    if isinstance(op, keras.layers.Layer):
        return f"layer {op.name!r} ({type(op).__name__})"
    return f"keras.ops operation {op.name!r} ({type(op).__module__.rsplit('.', 1)[-1]}.{type(op).__name__})"


def weight_key(layer, variable):
    """The name that identifies `variable` among `layer.weights`.

    The variable's name (`"kernel"`) when it is unique in the layer, else its
    path below the layer (`"query/kernel"` in a MultiHeadAttention,
    `"forward_lstm/lstm_cell/kernel"` in a Bidirectional).
    """
    names = [v.name for v in layer.weights]
    if names.count(variable.name) == 1:
        return variable.name
    path, prefix = variable.path, (getattr(layer, "path", None) or layer.name) + "/"
    return path[len(prefix):] if path.startswith(prefix) else path


def find_weight(layer, key):
    """The variable of `layer` whose `weight_key` is `key` (None if none)."""
    for v in layer.weights:
        if weight_key(layer, v) == key:
            return v
    return None


def _arguments(ctx):
    """(args, kwargs) of the node being handled."""
    node = ctx.node
    return tuple(node.arguments.args), dict(node.arguments.kwargs)


def _is_tensor(x):
    return isinstance(x, keras.KerasTensor)


def _constants(ctx):
    """Non-tensor operands of an operation node (numbers, arrays)."""
    args, kwargs = _arguments(ctx)
    return [a for a in list(args) + list(kwargs.values())
            if not _is_tensor(a) and isinstance(a, (numbers.Number, np.ndarray, list, tuple))]


class ElementwiseOpHandler(LayerHandler):
    """Elementwise keras.ops operations: `x + 3`, `x * s`, `relu(x)`, `a + b`.

    A scalar (or width-1) operand broadcasts, so channels go through; two
    tensors of the channel width are tied, as by `keras.layers.Add`.
    """

    kind = "merge"

    def out_ids(self, op, in_ids, ctx):
        if len(ctx.output_shapes) != 1:
            raise Unsupported("expected one output")
        for c in _constants(ctx):
            shape = np.shape(c)
            if len(shape) and shape[-1] != 1:
                raise Unsupported(f"constant operand of shape {shape} broadcasts over the channels")
        return [tie_operands(op, in_ids, ctx.input_shapes, ctx.output_shapes[0], ctx)]


class ReduceOpHandler(LayerHandler):
    """keras.ops reductions (`mean`, `sum`, `max`, ...) over non-channel axes."""

    def out_ids(self, op, in_ids, ctx):
        rank = len(ctx.input_shapes[0])
        axis = getattr(op, "axis", None)
        if axis is None:
            raise Unsupported("reduces over every axis, the channels included")
        axes = [a % rank for a in (axis if isinstance(axis, (list, tuple)) else [axis])]
        if rank - 1 in axes:
            raise Unsupported("reduces over the channel axis")
        if len(in_ids) != 1:
            raise Unsupported(f"expected one input, got {len(in_ids)}")
        return [in_ids[0]]


def _reshape_ids(in_shape, out_shape, ids, ctx):
    """Channel ids through a row-major reshape, when the channel axis survives."""
    cin, cout = in_shape[-1], out_shape[-1] if len(out_shape) else None
    if cout == cin:
        return ids
    if cout is not None and cout % cin == 0:
        return np.tile(ids, cout // cin)  # [..., k, C] -> [..., k*C]
    if cout is not None and cin % cout == 0:  # [..., k*c] -> [..., k, c]
        k = cin // cout
        blocks = ids.reshape(k, cout)
        for b in blocks[1:]:
            ctx.union(blocks[0], b)
        return blocks[0]
    raise Unsupported(f"reshape {tuple(in_shape)} -> {tuple(out_shape)} moves the channel axis")


class ReshapeHandler(LayerHandler):
    """Reshape (layer or op), ExpandDims, Squeeze: an index map of the channels.

    The last axis keeps its channels when its size is unchanged (an SE block's
    `[N, C] -> [N, 1, 1, C]`, a token reshape `[N, H, W, C] -> [N, H*W, C]`);
    `[..., k, C] -> [..., k*C]` repeats them; `[..., k*c] -> [..., k, c]`
    ties position `j` of every block. Anything else is not understood.
    """

    def out_ids(self, op, in_ids, ctx):
        if len(in_ids) != 1:
            raise Unsupported(f"expected one input, got {len(in_ids)}")
        return [_reshape_ids(ctx.input_shapes[0], ctx.output_shapes[0], in_ids[0], ctx)]

    def new_config(self, layer, config, out_widths):
        key = "target_shape" if "target_shape" in config else "newshape"
        shape = config.get(key)
        if isinstance(shape, (list, tuple)) and shape and shape[-1] not in (-1, None):
            config[key] = type(shape)(list(shape[:-1]) + [int(out_widths[0])])
        return config


class PermuteHandler(LayerHandler):
    """Permute (layer) / transpose (op) that keeps the channel axis last."""

    def out_ids(self, op, in_ids, ctx):
        rank = len(ctx.input_shapes[0])
        if isinstance(op, keras.layers.Layer):  # Permute: 1-based dims without batch
            last = op.dims[-1] == rank - 1
        else:
            axes = getattr(op, "axes", None)
            last = axes is not None and axes[-1] % rank == rank - 1
        if not last:
            raise Unsupported("the permutation moves the channel axis")
        return [in_ids[0]]


class GetItemHandler(LayerHandler):
    """`x[...]` indexing that leaves the channel axis whole (`x[:, 0]`)."""

    def out_ids(self, op, in_ids, ctx):
        args, _ = _arguments(ctx)
        key = args[1] if len(args) > 1 else None
        key = tuple(key) if isinstance(key, (list, tuple)) else (key,)
        rank = len(ctx.input_shapes[0])
        if any(k is None for k in key) or any(_is_tensor(k) for k in key):
            raise Unsupported("indexing with a new axis or a tensor")
        if key and key[-1] is Ellipsis:
            untouched = True
        elif Ellipsis in key:
            untouched = key[-1] == slice(None)
        else:
            untouched = len(key) < rank or key[-1] == slice(None)
        if not untouched or ctx.output_shapes[0][-1] != ctx.input_shapes[0][-1]:
            raise Unsupported("indexing the channel axis")
        return [in_ids[0]]


class ConcatenateOpHandler(ConcatenateHandler):
    """`keras.ops.concatenate`: as the Concatenate layer."""


class GroupedConvHandler(ProducerHandler):
    """Conv with `groups=g > 1`: whole groups are removed.

    Input group `j` (`C_in / g` channels) makes output group `j`
    (`filters / g` channels), so they form one channel of removal: every
    position of input group `j` and of output group `j` shares one id. With
    `groups == C_in == filters` (a depthwise conv written as a grouped one, as
    in ConvNeXt) this is exactly a passthrough.
    """

    def __init__(self):
        super().__init__("filters")

    @staticmethod
    def kept_groups(layer, width):
        per = layer.filters // layer.groups
        return max(1, int(width) // per)

    def out_ids(self, layer, in_ids, ctx):
        _check_channels_last(layer)
        g = int(layer.groups)
        ids = in_ids[0]
        fi, fo = len(ids) // g, layer.filters // g
        blocks = ids.reshape(g, fi)
        for k in range(1, fi):
            ctx.union(blocks[:, 0], blocks[:, k])
        return [np.repeat(blocks[:, 0], fo)]

    def slots(self, layer, in_ids, out_ids):
        names = {v.name for v in layer.weights}
        if names - {"kernel", "bias"}:
            raise Unsupported(f"unexpected weights {sorted(names)}")
        out = [Slot("kernel", -1, out_ids[0], "out")]
        if "bias" in names:
            out.append(Slot("bias", 0, out_ids[0], "bias"))
        return out


class ScaleHandler(PassthroughHandler):
    """A per-channel scale such as ConvNeXt's LayerScale (`x * gamma`).

    Args:
        weight: the scale's weight name (None: the layer's only weight).
        width_key: config key of the channel count (None: none).
    """

    def __init__(self, weight=None, width_key="projection_dim"):
        self.weight = weight
        self.width_key = width_key

    def slots(self, layer, in_ids, out_ids):
        ws = [v for v in layer.weights if self.weight in (None, v.name)]
        if len(ws) != 1 or len(layer.weights) != 1 or tuple(ws[0].shape) != (len(in_ids[0]),):
            raise Unsupported(f"expected one weight of shape ({len(in_ids[0])},), got "
                              f"{[(v.name, tuple(v.shape)) for v in layer.weights]}")
        return [Slot(weight_key(layer, ws[0]), 0, in_ids[0], "gamma")]

    def new_config(self, layer, config, out_widths):
        if self.width_key in config:
            config[self.width_key] = int(out_widths[0])
        return config


class GroupNormalizationHandler(PassthroughHandler):
    """GroupNormalization: whole normalisation groups are removed (exact).

    The channels of one normalisation group share their statistics, so they
    form one channel of removal; the thinner layer has fewer groups.
    """

    def out_ids(self, layer, in_ids, ctx):
        rank = len(ctx.input_shapes[0])
        if layer.axis % rank != rank - 1:
            raise Unsupported(f"normalises groups along axis {layer.axis}, not the channels")
        g = int(layer.groups)
        blocks = in_ids[0].reshape(g, -1)
        for k in range(1, blocks.shape[1]):
            ctx.union(blocks[:, 0], blocks[:, k])
        return [in_ids[0]]

    def slots(self, layer, in_ids, out_ids):
        return [Slot(v.name, 0, in_ids[0], v.name) for v in layer.weights
                if v.name in ("gamma", "beta")]

    def new_config(self, layer, config, out_widths):
        per = None
        for v in layer.weights:
            per = v.shape[0] // layer.groups
        if per is None:
            raise Unsupported("GroupNormalization without weights")
        config["groups"] = max(1, int(out_widths[0]) // per)
        return config


class MultiHeadAttentionHandler(LayerHandler):
    """keras.layers.MultiHeadAttention: removes whole heads.

    The heads are one hidden axis: head `h` is `query/key/value` kernel
    column block `h` and `attention_output` kernel row block `h`, removed
    together. Softmax is taken per head, so removing heads is exact. The
    output width (last axis of `attention_output`) is a producer, usually tied
    to the residual stream by the Add that follows; `query`, `key` and
    `value` inputs prune their kernels' input axis.

    Args:
        prune_heads: remove whole heads (default True).
        prune_head_dims: also remove value dimensions inside every head
            (exact; the same positions in every head). Query/key dimensions
            are kept: removing them would change the `1/sqrt(key_dim)` scale.
            On JAX the value dims are kept (frozen, with the reason), because
            Keras 3.15's MultiHeadAttention fails there when `value_dim !=
            key_dim`.
    """

    kind = "prune_out"

    def __init__(self, prune_heads=True, prune_head_dims=False):
        self.prune_heads = bool(prune_heads)
        self.prune_head_dims = bool(prune_head_dims)

    def _roles(self, layer, in_ids, ctx):
        args, kwargs = _arguments(ctx)
        names = ["query", "value", "key"]
        tensors = {n: a for n, a in zip(names, args) if _is_tensor(a)}
        tensors.update({n: kwargs[n] for n in names if _is_tensor(kwargs.get(n))})
        by_tensor = {id(t): ids for t, ids in zip(ctx.node.input_tensors, in_ids)}
        roles = {n: by_tensor[id(t)] for n, t in tensors.items()}
        roles.setdefault("key", roles["value"])
        for t, ids in zip(ctx.node.input_tensors, in_ids):
            if all(t is not tensors.get(n) for n in names):
                ctx.freeze(ids, f"attention mask of {operation_label(layer)}")
        return roles

    def out_ids(self, layer, in_ids, ctx):
        if len(ctx.output_shapes) != 1:
            raise Unsupported("return_attention_scores=True: the scores' head axis is used")
        if getattr(layer, "_use_gate", False):
            raise Unsupported("use_gate=True is not handled")
        if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
            raise Unsupported("LoRA / quantized attention is not handled")
        self._roles(layer, in_ids, ctx)
        heads = ctx.fresh(layer.num_heads)
        ctx.inner("heads", heads)
        if not self.prune_heads:
            ctx.freeze(heads, f"heads of {layer.name!r} are kept (prune_heads=False)")
        if self.prune_head_dims:
            dims = ctx.fresh(layer.value_dim)
            ctx.inner("value_dims", dims)
            if keras.backend.backend() == "jax" and layer.value_dim == layer.key_dim:
                # Keras 3.15 on JAX: MultiHeadAttention calls
                # jax.nn.dot_product_attention, which needs value_dim == key_dim,
                # and its fallback fails too; a thinner value would not run.
                ctx.freeze(dims, f"value head dims of {layer.name!r} are kept on JAX: Keras "
                                 f"3.15's MultiHeadAttention fails there when value_dim != key_dim")
        return [ctx.fresh(ctx.output_shapes[0][-1], part="attention_output")]

    def slots(self, layer, in_ids, out_ids, ctx=None):
        roles = self._roles(layer, in_ids, ctx)
        heads = ctx.inner_ids["heads"]
        dims = ctx.inner_ids.get("value_dims")
        keys = {weight_key(layer, v): tuple(v.shape) for v in layer.weights}
        expected = {f"{p}/{w}" for p in ("query", "key", "value", "attention_output")
                    for w in ("kernel", "bias")}
        if set(keys) - expected:
            raise Unsupported(f"unexpected weights {sorted(set(keys) - expected)}")
        if len(keys["query/kernel"]) != 3 or len(keys["attention_output/kernel"]) != 3:
            raise Unsupported("attention_axes / output_shape with more than one axis")
        out = []
        for p in ("query", "key", "value"):
            out.append(Slot(f"{p}/kernel", 0, roles[p], "in"))
            out.append(Slot(f"{p}/kernel", 1, heads, "out"))
            if f"{p}/bias" in keys:
                out.append(Slot(f"{p}/bias", 0, heads, "bias"))
        out.append(Slot("attention_output/kernel", 0, heads, "in"))
        out.append(Slot("attention_output/kernel", 2, out_ids[0], "out"))
        if "attention_output/bias" in keys:
            out.append(Slot("attention_output/bias", 0, out_ids[0], "bias"))
        if dims is not None:
            out.append(Slot("value/kernel", 2, dims, "out"))
            if "value/bias" in keys:
                out.append(Slot("value/bias", 1, dims, "bias"))
            out.append(Slot("attention_output/kernel", 1, dims, "in"))
        return out

    def new_config(self, layer, config, out_widths, in_widths=None, inner=None):
        inner = inner or {}
        config["num_heads"] = int(inner.get("heads", layer.num_heads))
        if "value_dims" in inner:
            config["value_dim"] = int(inner["value_dims"])
        config["output_shape"] = [int(out_widths[0])]
        return config


class RNNHandler(LayerHandler):
    """LSTM / GRU / SimpleRNN: removes hidden units.

    Unit `u` is column `u` of each of the `gates` blocks (4 for LSTM, 3 for
    GRU, 1 for SimpleRNN) of `kernel`, `recurrent_kernel` and `bias`, and row
    `u` of `recurrent_kernel`; they go together.
    """

    kind = "prune_out"

    def __init__(self, gates):
        self.gates = int(gates)

    def _check(self, rnn):
        if getattr(rnn, "stateful", False):
            raise Unsupported("stateful RNN")
        cell = getattr(rnn, "cell", None)
        if cell is None or type(cell).__name__ not in ("LSTMCell", "GRUCell", "SimpleRNNCell"):
            raise Unsupported("custom RNN cell")

    def out_ids(self, layer, in_ids, ctx):
        self._check(layer)
        if len(in_ids) != 1:
            raise Unsupported("initial states / masks as inputs are not handled")
        units = ctx.fresh(layer.units)
        return [units for _ in ctx.output_shapes]

    def rnn_slots(self, owner, rnn, in_ids, units):
        out = []
        for v in rnn.weights:
            key = weight_key(owner, v)
            cols = np.tile(units, self.gates)
            if v.name == "kernel":
                out += [Slot(key, 0, in_ids, "in"), Slot(key, 1, cols, "out")]
            elif v.name == "recurrent_kernel":
                out += [Slot(key, 0, units, "in"), Slot(key, 1, cols, "out")]
            elif v.name == "bias":
                out.append(Slot(key, len(v.shape) - 1, cols, "bias"))
            else:
                raise Unsupported(f"unexpected weight {v.name!r}")
        return out

    def slots(self, layer, in_ids, out_ids):
        return self.rnn_slots(layer, layer, in_ids[0], out_ids[0])

    def new_config(self, layer, config, out_widths):
        config["units"] = int(out_widths[0])
        return config


_RNN_GATES = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}


class BidirectionalHandler(LayerHandler):
    """Bidirectional around LSTM / GRU / SimpleRNN: both directions' units."""

    kind = "prune_out"

    def _inner(self, layer):
        handlers = []
        for rnn in (layer.forward_layer, layer.backward_layer):
            gates = _RNN_GATES.get(type(rnn).__name__)
            if gates is None:
                raise Unsupported(f"wraps {type(rnn).__name__}, not LSTM/GRU/SimpleRNN")
            h = RNNHandler(gates)
            h._check(rnn)  # noqa: SLF001 - same module
            handlers.append(h)
        return handlers

    def out_ids(self, layer, in_ids, ctx):
        self._inner(layer)
        if len(in_ids) != 1:
            raise Unsupported("initial states / masks as inputs are not handled")
        if getattr(layer, "return_state", False) or len(ctx.output_shapes) != 1:
            raise Unsupported("return_state=True is not handled")
        fw, bw = ctx.fresh(layer.forward_layer.units), ctx.fresh(layer.backward_layer.units)
        ctx.inner("forward", fw)
        ctx.inner("backward", bw)
        if layer.merge_mode == "concat":
            return [np.concatenate([fw, bw])]
        if layer.merge_mode in ("sum", "ave", "mul"):
            ctx.union(fw, bw)
            return [fw]
        raise Unsupported(f"merge_mode={layer.merge_mode!r}")

    def slots(self, layer, in_ids, out_ids, ctx=None):
        hf, hb = self._inner(layer)
        return (hf.rnn_slots(layer, layer.forward_layer, in_ids[0], ctx.inner_ids["forward"])
                + hb.rnn_slots(layer, layer.backward_layer, in_ids[0], ctx.inner_ids["backward"]))

    def new_config(self, layer, config, out_widths, in_widths=None, inner=None):
        config["layer"]["config"]["units"] = int(inner["forward"])
        if config.get("backward_layer"):
            config["backward_layer"]["config"]["units"] = int(inner["backward"])
        return config


class KerasHubTransformerHandler(LayerHandler):
    """KerasHub's TransformerEncoder / TransformerDecoder: the MLP's hidden width.

    The feed-forward `intermediate_dim` is pruned (exact). The hidden size and
    the heads are kept: KerasHub derives `key_dim = hidden_dim // num_heads`
    from the config, so a thinner config cannot express fewer heads of the
    same size. Extra inputs (the encoder sequence, masks) are kept.
    """

    kind = "prune_out"

    def out_ids(self, layer, in_ids, ctx):
        if len(ctx.output_shapes) != 1:
            raise Unsupported("expected one output (no cache)")
        for ids in in_ids:
            ctx.freeze(ids, f"hidden size of {operation_label(layer)} is kept (KerasHub derives "
                            f"key_dim = hidden_dim // num_heads)")
        ctx.inner("intermediate", ctx.fresh(layer.intermediate_dim, part="feedforward"))
        return [in_ids[0]]

    def slots(self, layer, in_ids, out_ids, ctx=None):
        mlp = ctx.inner_ids["intermediate"]
        keys = {weight_key(layer, v) for v in layer.weights}
        up, down = "feedforward_intermediate_dense", "feedforward_output_dense"
        if f"{up}/kernel" not in keys or f"{down}/kernel" not in keys:
            raise Unsupported("feed-forward weights not found")
        out = [Slot(f"{up}/kernel", 1, mlp, "out"), Slot(f"{down}/kernel", 0, mlp, "in")]
        if f"{up}/bias" in keys:
            out.append(Slot(f"{up}/bias", 0, mlp, "bias"))
        return out

    def new_config(self, layer, config, out_widths, in_widths=None, inner=None):
        config["intermediate_dim"] = int(inner["intermediate"])
        return config


def _register_keras_hub(cls):
    """Registers the KerasHub handlers when a KerasHub layer is first seen."""
    import importlib  # noqa: PLC0415

    try:
        layers = importlib.import_module("keras_hub.layers")
    except ImportError:  # pragma: no cover
        return
    for name in ("TransformerEncoder", "TransformerDecoder"):
        hub_cls = getattr(layers, name, None)
        if hub_cls is not None and hub_cls not in _REGISTRY:
            _REGISTRY[hub_cls] = KerasHubTransformerHandler()


class TwoInputScaleMergeHandler(MergeHandler):
    """InceptionResNetV2's CustomScaleLayer: `inputs[0] + inputs[1] * scale`."""

    def out_ids(self, layer, in_ids, ctx):
        if not isinstance(getattr(layer, "scale", None), numbers.Number):
            raise Unsupported("scale is not a number")
        return super().out_ids(layer, in_ids, ctx)


class RescalingHandler(PassthroughHandler):
    """Rescaling with a scalar scale and offset."""

    def out_ids(self, layer, in_ids, ctx):
        for v in (layer.scale, layer.offset):
            if np.size(v) != 1:
                raise Unsupported("per-channel scale/offset")
        return [in_ids[0]]


_REGISTRY = {}


def register_handler(layer_cls, handler):
    """Registers `handler` for layers whose exact class is `layer_cls`.

    Args:
        layer_cls: a `keras.layers.Layer` subclass, or a `keras.Operation`
            subclass for the nodes of `keras.ops` calls in functional graphs.
        handler: a `LayerHandler` instance (or None to unregister).

    Example:
    >>> register_handler(MyGate, PassthroughHandler())
    """
    if not (isinstance(layer_cls, type) and issubclass(layer_cls, keras.Operation)):
        raise TypeError(
            f"layer_cls must be a keras.layers.Layer subclass (or a keras.Operation "
            f"subclass for keras.ops nodes), got {layer_cls!r}.")
    if handler is None:
        _REGISTRY.pop(layer_cls, None)
        return
    if not isinstance(handler, LayerHandler):
        raise TypeError(f"handler must be a LayerHandler instance, got {handler!r}.")
    _REGISTRY[layer_cls] = handler


def get_handler(layer):
    """The handler for `layer`'s (or operation's) exact class, or None if it is unknown."""
    cls = type(layer)
    if cls not in _REGISTRY and cls.__module__.startswith("keras_hub."):
        _register_keras_hub(cls)
    return _REGISTRY.get(cls)


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
    register_handler(L.Normalization, NormalizationHandler())
    register_handler(L.Rescaling, RescalingHandler())
    register_handler(L.Reshape, ReshapeHandler())
    register_handler(L.Permute, PermuteHandler())
    register_handler(L.GroupNormalization, GroupNormalizationHandler())
    register_handler(L.MultiHeadAttention, MultiHeadAttentionHandler())
    for cls, gates in ((L.LSTM, 4), (L.GRU, 3), (L.SimpleRNN, 1)):
        register_handler(cls, RNNHandler(gates))
    register_handler(L.Bidirectional, BidirectionalHandler())
    _register_ops()
    _register_application_layers()


_ELEMENTWISE_OPS = {
    "numpy": ("Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Power", "Maximum",
              "Minimum", "Negative", "Abs", "Absolute", "Sqrt", "Square", "Exp", "Log",
              "Log1p", "Expm1", "Tanh", "Sin", "Cos", "Clip", "Sign", "Reciprocal",
              "Rsqrt", "Floor", "Ceil", "Round", "Erf", "FloorDivide", "Mod"),
    "nn": ("Relu", "Relu6", "Sigmoid", "HardSigmoid", "HardSilu", "Silu", "Swish",
           "HardSwish", "Gelu", "Elu", "Selu", "LeakyRelu", "Softplus", "Softsign",
           "Celu", "Glu", "Mish", "Tanh", "SparsePlus", "Squareplus", "SoftShrink",
           "HardShrink", "HardTanh", "ThresholdedRelu", "LogSigmoid", "Sparsemax"),
    "math": ("Erf", "Erfinv", "Rsqrt"),
    "core": ("Cast", "StopGradient"),
}
_NOT_ELEMENTWISE = {"Glu", "Sparsemax"}  # mix along an axis


def _register_ops():
    import importlib  # noqa: PLC0415

    elementwise = ElementwiseOpHandler()
    for module, names in _ELEMENTWISE_OPS.items():
        try:
            mod = importlib.import_module(f"keras.src.ops.{module}")
        except ImportError:  # pragma: no cover
            continue
        for name in names:
            cls = getattr(mod, name, None)
            if (isinstance(cls, type) and issubclass(cls, keras.Operation)
                    and name not in _NOT_ELEMENTWISE):
                register_handler(cls, elementwise)
    numpy_ops = importlib.import_module("keras.src.ops.numpy")
    reduce = ReduceOpHandler()
    for name in ("Mean", "Sum", "Max", "Min", "Var", "Std", "Prod", "Amax", "Amin"):
        cls = getattr(numpy_ops, name, None)
        if isinstance(cls, type) and issubclass(cls, keras.Operation):
            register_handler(cls, reduce)
    for name in ("Reshape", "ExpandDims", "Squeeze"):
        register_handler(getattr(numpy_ops, name), ReshapeHandler())
    register_handler(numpy_ops.Transpose, PermuteHandler())
    register_handler(numpy_ops.GetItem, GetItemHandler())
    register_handler(numpy_ops.Concatenate, ConcatenateOpHandler())


def _register_application_layers():
    import importlib  # noqa: PLC0415

    for module, name, handler in (
        ("keras.src.applications.convnext", "LayerScale", ScaleHandler()),
        ("keras.src.applications.convnext", "StochasticDepth", PassthroughHandler()),
        ("keras.src.applications.inception_resnet_v2", "CustomScaleLayer",
         TwoInputScaleMergeHandler()),
    ):
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):  # pragma: no cover
            continue
        register_handler(cls, handler)


_register_builtins()
