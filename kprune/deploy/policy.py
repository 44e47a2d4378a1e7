"""Pruning policies: which layers of a model to prune, after checking the model.

A `PruningPolicy` is passed to `kprune.prune_low_magnitude(model,
pruning_policy=...)`. It first checks the whole model
(`ensure_model_supports_pruning`, raising `ValueError` if the model does not
fit), then decides per layer whether it is wrapped (`allow_pruning`).

`PruneForLatencyOnXNNPack` targets XNNPACK's sparse inference path (Elsen et
al. 2019, "Fast Sparse ConvNets"), as tfmot's policy of the same name does:
TFLite's XNNPACK delegate runs a sparse 1x1 convolution fast only inside a
subgraph that starts with a stride-2 3x3 convolution on the 3-channel image
and ends in a global average pooling, with only supported operators in
between. The graph is read with `kprune.structured.graph.model_nodes`.
"""

from __future__ import annotations

import keras

from kprune.core.wrapper import PruneWrapper
from kprune.structured.graph import check_graph_model, is_graph_model, model_nodes

__all__ = ["PruningPolicy", "PruneForLatencyOnXNNPack"]

L = keras.layers


class PruningPolicy:
    """Base class: which layers `prune_low_magnitude` wraps, for a whole model.

    Subclasses define both methods.

    Example:
    ```python
    class OnlyDense(kprune.PruningPolicy):
        def allow_pruning(self, layer):
            return isinstance(layer, keras.layers.Dense)
        def ensure_model_supports_pruning(self, model):
            pass
    pruned = kprune.prune_low_magnitude(model, pruning_policy=OnlyDense())
    ```
    """

    def allow_pruning(self, layer):
        """Whether `layer` (a prunable layer of the model) is wrapped."""
        raise NotImplementedError

    def ensure_model_supports_pruning(self, model):
        """Raises `ValueError` if `model` does not fit the policy."""
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}()"


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _padding_of(layer):
    """ZeroPadding2D padding as `((top, bottom), (left, right))`."""
    return tuple(tuple(p) for p in layer.padding)


class _Graph:
    """Producers and consumers of every call (node) of a functional model.

    Nested Sequential/functional models called once are walked into (as
    tfmot's policy does), so their layers are checked one by one.
    """

    def __init__(self, model):
        alias = {}
        self.nodes = _leaf_nodes(model, alias)
        producer = {}
        for node in self.nodes:
            for t in node.output_tensors:
                producer[id(t)] = node
        self.producers = {id(n): [] for n in self.nodes}
        self.consumers = {id(n): [] for n in self.nodes}
        self.from_input = []
        input_ids = {id(t) for t in model.inputs}
        for node in self.nodes:
            for t in node.input_tensors:
                key = alias.get(id(t), id(t))
                parent = producer.get(key)
                if parent is not None and parent not in self.producers[id(node)]:
                    self.producers[id(node)].append(parent)
                    self.consumers[id(parent)].append(node)
                elif key in input_ids and node not in self.from_input:
                    self.from_input.append(node)
        output_ids = {alias.get(id(t), id(t)) for t in model.outputs}
        self.to_output = [n for n in self.nodes if any(id(t) in output_ids for t in n.output_tensors)]
        self.order = {id(n): i for i, n in enumerate(self.nodes)}


def _leaf_nodes(model, alias):
    """`model_nodes(model)` with nested graph models called once expanded;
    `alias` maps a nested model's input and output tensors to the outer
    tensors they stand for (`id -> id`)."""
    nodes = model_nodes(model)
    calls = {}
    for node in nodes:
        calls[id(node.operation)] = calls.get(id(node.operation), 0) + 1
    out = []
    for node in nodes:
        op = node.operation
        if (is_graph_model(op) and calls[id(op)] == 1
                and len(op.inputs) == len(node.input_tensors)):
            for inner, outer in zip(op.inputs, node.input_tensors):
                alias[id(inner)] = alias.get(id(outer), id(outer))
            out.extend(_leaf_nodes(op, alias))
            for outer, inner in zip(node.output_tensors, op.outputs):
                alias[id(outer)] = alias.get(id(inner), id(inner))
        else:
            out.append(node)
    return out


def _name(node):
    op = node.operation
    return f"'{op.name}' ({type(op).__name__})"


class PruneForLatencyOnXNNPack(PruningPolicy):
    """Prunes only the 1x1 convolutions XNNPACK runs sparse, after checking the model.

    `allow_pruning` wraps only `Conv2D` layers with a 1x1 kernel, stride 1
    and `groups=1`. `ensure_model_supports_pruning` checks, as tfmot's policy
    of the same name does, that:

    * every input branch reaches a **start** layer: a 3x3 `Conv2D` with
      stride 2 and `padding="valid"` on 3 input channels, whose only input is
      a `ZeroPadding2D(1)` (padding 1 on each side);
    * every output branch comes from a **GlobalAveragePooling2D** (the end);
    * every layer between start and end is one XNNPACK's sparse path supports:
      1x1 stride-1 `Conv2D` (no dilation, `groups=1`); `DepthwiseConv2D` with
      `depth_multiplier=1`, no dilation, 3x3 or 5x5 kernel, either stride 1
      with `"same"` padding or stride 1/2 with `"valid"` padding after a
      `ZeroPadding2D` of 1 (3x3) or 2 (5x5); `BatchNormalization` on the
      channel axis; `ReLU`, `LeakyReLU`, `ELU`, `Activation` of relu, relu6,
      leaky_relu, elu or sigmoid; `Add`, `Multiply`, the `+`, `-`, `*` ops;
      `ZeroPadding2D`, `Dropout`, `Identity`; `GlobalAveragePooling2D(keepdims=True)`;
      bilinear `UpSampling2D`.

    Layers of nested Sequential or functional models are checked as if
    inlined. A model that does not fit raises `ValueError` naming the first layer (in
    graph order) that does not, and why.

    Example:
    ```python
    pruned = kprune.prune_low_magnitude(
        model, kprune.PolynomialDecay(0.25, 0.75, 0, 1000),
        pruning_policy=kprune.PruneForLatencyOnXNNPack())
    ```
    """

    def allow_pruning(self, layer):
        return (
            isinstance(layer, L.Conv2D)
            and _pair(layer.kernel_size) == (1, 1)
            and _pair(layer.strides) == (1, 1)
            and getattr(layer, "groups", 1) == 1
        )

    # -- the model check ------------------------------------------------------

    def ensure_model_supports_pruning(self, model):
        check_graph_model(model, type(self).__name__, allow_wrappers=True)
        graph = _Graph(model)
        starts = self._find_starts(graph)
        ends = self._find_ends(graph)
        self._check_between(graph, starts, ends)

    def _start_problem(self, graph, node):
        """None if `node` starts XNNPACK's sparse subgraph, else why not."""
        op = node.operation
        kernel = getattr(op, "kernel", None)
        problems = []
        if _pair(op.kernel_size) != (3, 3):
            problems.append(f"kernel_size {_pair(op.kernel_size)}")
        if _pair(op.strides) != (2, 2):
            problems.append(f"strides {_pair(op.strides)}")
        if op.padding.lower() != "valid":
            problems.append(f"padding '{op.padding}'")
        if kernel is not None and tuple(kernel.shape)[2] != 3:
            problems.append(f"{tuple(kernel.shape)[2]} input channels")
        producers = graph.producers[id(node)]
        if not (len(producers) == 1 and isinstance(producers[0].operation, L.ZeroPadding2D)
                and _padding_of(producers[0].operation) == ((1, 1), (1, 1))):
            problems.append("no ZeroPadding2D(padding=1) as its only input")
        return ", ".join(problems) or None

    def _find_starts(self, graph):
        starts, seen = [], set()
        todo = list(graph.from_input)
        first_conv = {}
        while todo:
            node = todo.pop(0)
            if id(node) in seen:
                continue
            seen.add(id(node))
            op = node.operation
            if isinstance(op, L.Conv2D) and self._start_problem(graph, node) is None:
                starts.append(node)
                continue
            if isinstance(op, (L.Conv2D, L.DepthwiseConv2D, L.Dense, PruneWrapper)) and not first_conv:
                first_conv["node"] = node
            nxt = graph.consumers[id(node)]
            if not nxt:
                culprit = first_conv.get("node", node)
                why = (
                    self._start_problem(graph, culprit)
                    if isinstance(culprit.operation, L.Conv2D) else None
                )
                raise ValueError(
                    f"{type(self).__name__}: layer {_name(culprit)} does not fit "
                    f"XNNPACK's sparse inference path: every input branch must "
                    f"start with ZeroPadding2D(padding=1) followed by a 3x3 "
                    f"Conv2D with strides=2, padding='valid' on 3 input "
                    f"channels, but the branch through {_name(culprit)} reaches "
                    f"the model output {_name(node)} without one"
                    + (f" ({culprit.operation.name} has {why})" if why else "")
                    + ". Change that stem, or prune without this policy."
                )
            todo.extend(nxt)
        return starts

    def _find_ends(self, graph):
        ends, seen = [], set()
        todo = list(graph.to_output)
        while todo:
            node = todo.pop(0)
            if id(node) in seen:
                continue
            seen.add(id(node))
            if isinstance(node.operation, L.GlobalAveragePooling2D):
                ends.append(node)
                continue
            prev = graph.producers[id(node)]
            if not prev:
                out = graph.to_output
                raise ValueError(
                    f"{type(self).__name__}: the model output "
                    f"{', '.join(_name(n) for n in out)} does not fit XNNPACK's "
                    f"sparse inference path: every output branch must come "
                    f"from a GlobalAveragePooling2D, but the branch through "
                    f"{_name(node)} reaches the model input without one. Add "
                    f"a GlobalAveragePooling2D before the classifier, or prune "
                    f"without this policy."
                )
            todo.extend(prev)
        return ends

    def _check_between(self, graph, starts, ends):
        end_ids = {id(n) for n in ends}
        between, seen = [], set()
        todo = [c for s in starts for c in graph.consumers[id(s)]]
        while todo:
            node = todo.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            if id(node) in end_ids:
                continue
            between.append(node)
            todo.extend(graph.consumers[id(node)])
        for node in sorted(between, key=lambda n: graph.order[id(n)]):
            why = self._unsupported(graph, node, node.operation)
            if why:
                raise ValueError(
                    f"{type(self).__name__}: layer {_name(node)} does not fit "
                    f"XNNPACK's sparse inference path (between the stride-2 "
                    f"stem convolution and the GlobalAveragePooling2D): {why}. "
                    f"Change or remove it, or prune without this policy."
                )

    def _unsupported(self, graph, node, op):
        """None if XNNPACK's sparse path supports `op`, else why not."""
        if isinstance(op, PruneWrapper):
            return self._unsupported(graph, node, op.layer)
        if isinstance(op, (L.Add, L.Multiply, L.ZeroPadding2D, L.ReLU, L.LeakyReLU,
                           L.ELU, L.Dropout, L.Identity)):
            return None
        kind = type(op).__name__
        if kind in ("Add", "Subtract", "Multiply") and not isinstance(op, L.Layer):
            return None  # `x + y`, `x - y`, `x * y` on KerasTensors
        if isinstance(op, L.DepthwiseConv2D):
            k, s = _pair(op.kernel_size), _pair(op.strides)
            padding = op.padding.lower()
            producers = graph.producers[id(node)]
            pad = (
                _padding_of(producers[0].operation)
                if len(producers) == 1 and isinstance(producers[0].operation, L.ZeroPadding2D)
                else None
            )
            if op.depth_multiplier != 1 or _pair(op.dilation_rate) != (1, 1):
                return "a DepthwiseConv2D needs depth_multiplier=1 and no dilation"
            for size, p in ((3, 1), (5, 2)):
                if k == (size, size):
                    if s == (1, 1) and padding == "same":
                        return None
                    if s in ((1, 1), (2, 2)) and padding == "valid" and pad == ((p, p), (p, p)):
                        return None
            return (
                f"a DepthwiseConv2D must be 3x3 or 5x5, with stride 1 and "
                f"padding 'same', or stride 1 or 2 and padding 'valid' after "
                f"ZeroPadding2D(padding=1) (3x3) or (padding=2) (5x5); got "
                f"kernel_size {k}, strides {s}, padding '{op.padding}'"
                + (f" after ZeroPadding2D {pad}" if pad else "")
            )
        if isinstance(op, L.Conv2D):
            if (_pair(op.kernel_size) == (1, 1) and _pair(op.strides) == (1, 1)
                    and _pair(op.dilation_rate) == (1, 1) and getattr(op, "groups", 1) == 1):
                return None
            return (
                f"a Conv2D here must be 1x1 with stride 1, no dilation and "
                f"groups=1; got kernel_size {_pair(op.kernel_size)}, strides "
                f"{_pair(op.strides)}, dilation_rate {_pair(op.dilation_rate)}, "
                f"groups {getattr(op, 'groups', 1)}"
            )
        if isinstance(op, L.GlobalAveragePooling2D):
            return None if op.keepdims else (
                "a GlobalAveragePooling2D inside the subgraph needs keepdims=True"
            )
        if isinstance(op, L.BatchNormalization):
            rank = len(node.input_tensors[0].shape)
            axis = op.axis if isinstance(op.axis, int) else (list(op.axis) or [None])[0]
            ok = isinstance(op.axis, int) or len(list(op.axis)) == 1
            return None if ok and axis is not None and axis % rank == 3 else (
                f"a BatchNormalization must normalise the channel axis (3), got axis={op.axis}"
            )
        if isinstance(op, L.UpSampling2D):
            return None if op.interpolation == "bilinear" else (
                f"an UpSampling2D must use interpolation='bilinear', got '{op.interpolation}'"
            )
        if isinstance(op, L.Activation):
            name = keras.activations.serialize(op.activation)
            name = name if isinstance(name, str) else str(name)
            supported = ("relu", "relu6", "leaky_relu", "elu", "sigmoid")
            return None if name in supported else (
                f"an Activation must be one of {', '.join(supported)}, got '{name}'"
            )
        return (
            f"{kind} is not an operator XNNPACK's sparse path supports (1x1 "
            f"Conv2D, DepthwiseConv2D, BatchNormalization, ReLU/LeakyReLU/ELU, "
            f"Activation, Add, Multiply, ZeroPadding2D, Dropout, Identity, "
            f"GlobalAveragePooling2D(keepdims=True), bilinear UpSampling2D)"
        )
