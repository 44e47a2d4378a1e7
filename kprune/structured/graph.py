"""The dependency graph: which channels of a Keras model must go together.

Every tensor of a functional (or Sequential) model gets one integer *channel
id* per position of its last axis. Layers that make new channels (Conv, Dense)
allocate fresh ids; passthrough layers (BatchNormalization, pooling,
activations, DepthwiseConv2D) forward them; Add-like merges *unite* the ids of
their inputs; Concatenate concatenates them; Flatten repeats them once per
spatial position. Positions that end up with the same id (after the unions)
form a **channel**, the unit of removal; the channels created by one set of
coupled producers form a **group**, the unit of a pruning ratio.

Reading the graph: Keras 3 has no public API for a model's nodes, so this
module relies on these private attributes (pinned by
`tests/test_structured_graph.py::test_private_keras_surface`):

* `KerasTensor._keras_history`: `(operation, node_index, tensor_index)`, the
  call that produced the tensor;
* `Operation._inbound_nodes[node_index]`: that call's `Node`;
* `Node.input_tensors` / `Node.output_tensors` (public properties of the
  private `Node` class);
* `Node.arguments.args` / `.kwargs`: the call's arguments (constants of
  `keras.ops` nodes, MultiHeadAttention's query/value/key).

Nested functional and Sequential models are walked into (their layers are
named `"outer/inner"` in paths); a nested model called twice, or subclassed,
is kept whole.

`model.inputs`, `model.outputs`, `model.layers` and `layer.weights` are public.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from kprune.core.model_tree import find_wrappers, is_graph_model
from kprune.structured import handlers as handlers_lib

__all__ = ["DependencyGraph", "Group", "Member", "model_nodes", "check_graph_model",
           "resolve_layers", "accepts_argument", "is_graph_model"]


def check_graph_model(model, what="Channel pruning", allow_wrappers=False):
    """Raises a clear error unless `model` is a built functional/Sequential model.

    Args:
        model: the model to read.
        what: the caller's name, for the messages.
        allow_wrappers: True for callers that only read the graph (the
            XNNPACK policy choosing layers of a model that already holds
            pruned layers); channel pruning needs them stripped first.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"{what} needs a keras.Model, got {type(model).__name__}.")
    from keras.src.models.functional import Functional  # noqa: PLC0415

    if not isinstance(model, (Functional, keras.Sequential)):
        raise TypeError(
            f"{what} needs a functional graph, but {type(model).__name__!r} is a "
            f"subclassed keras.Model whose call() Keras cannot read. Rebuild it "
            f"functionally, e.g. `inputs = keras.Input(shape); outputs = "
            f"block(inputs); model = keras.Model(inputs, outputs)` with the same "
            f"layers, then copy the weights with set_weights()."
        )
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        outputs = None
    if not outputs:
        raise ValueError(
            f"{what}: model {model.name!r} has no defined inputs/outputs yet. "
            f"Start a Sequential model with keras.Input(shape=...) (or call "
            f"model.build on a Sequential with known input shape)."
        )
    wrapped = [] if allow_wrappers else [m.label for m in find_wrappers(model)]
    if wrapped:
        shown = ", ".join(repr(n) for n in wrapped[:5]) + (", ..." if len(wrapped) > 5 else "")
        raise ValueError(
            f"{what}: model {model.name!r} still holds kprune's pruning wrappers "
            f"({len(wrapped)}: {shown}). strip_pruning first: "
            f"`model = kprune.strip_pruning(model)`, then prune the stripped model "
            f"(with from_zero_channels=True to remove the channels a Channel "
            f"granularity zeroed)."
        )


def model_nodes(model):
    """The calls (nodes) of a functional/Sequential model in topological order.

    Args:
        model: a built functional or Sequential `keras.Model`.

    Returns:
        A list of `keras.src.ops.node.Node`, inputs first. InputLayer nodes are
        skipped.
    """
    check_graph_model(model, "Reading the graph", allow_wrappers=True)
    order, seen = [], set()
    stack = [(t, False) for t in reversed(model.outputs)]
    while stack:
        tensor, expanded = stack.pop()
        op, node_index, _ = tensor._keras_history
        if op is None:
            continue
        node = op._inbound_nodes[node_index]
        if expanded:
            if id(node) not in seen:
                seen.add(id(node))
                order.append(node)
            continue
        if id(node) in seen:
            continue
        stack.append((tensor, True))
        for parent in reversed(node.input_tensors):
            stack.append((parent, False))
    return [n for n in order if n.input_tensors]


@dataclasses.dataclass
class Member:
    """One weight axis of one layer that belongs to a group.

    Attributes:
        layer: the layer (of the original model).
        weight: the weight's name.
        axis: the axis indexed.
        role: see `handlers.Slot`.
        channel: int array, for each position along `axis` the index of the
            group channel it belongs to, or -1 if it is outside the group.
    """

    layer: keras.layers.Layer
    weight: str
    axis: int
    role: str
    channel: np.ndarray
    layer_path: str = None

    @property
    def variable(self):
        """The weight's variable."""
        return _weight(self.layer, self.weight)

    def values(self):
        """The weight as a numpy array."""
        return keras.ops.convert_to_numpy(self.variable)

    @property
    def path(self):
        """`layer.name`, prefixed by the names of the nested models around it."""
        return self.layer_path


@dataclasses.dataclass
class Group:
    """A set of coupled channels: removing channel `i` removes it everywhere.

    Attributes:
        index: the group's number in the graph.
        producers: names of the layers whose output channels make the group.
        size: number of channels.
        frozen: bool array per channel: True where the channel may not be
            removed (it reaches a model output, an ignored or unknown layer).
        reasons: why channels are frozen (empty if none is).
        members: list of `Member`, every weight axis the group indexes.
        model: the model the group belongs to.
        approximate: reasons why removing channels of this group changes
            the kept channels' values (e.g. LayerNormalization statistics);
            empty when removal is exact.
    """

    index: int
    producers: list
    size: int
    frozen: np.ndarray
    reasons: list
    members: list
    model: keras.Model = dataclasses.field(repr=False, default=None)
    ids: list = dataclasses.field(repr=False, default=None)
    approximate: list = dataclasses.field(default_factory=list)

    @property
    def prunable(self):
        """True when at least one channel may be removed."""
        return bool((~self.frozen).any())

    def reduce(self, fn, roles=("out",), source=None):
        """Sums `fn` over the members with the given roles, per channel.

        Args:
            fn: maps an array whose first axis is the member's axis to a 1-D
                array with one value per position.
            roles: member roles to include (see `handlers.Slot`).
            source: `member -> numpy array` giving the array to reduce
                (default: the member's weight values).

        Returns:
            `(sums, counts)`: float64 arrays of length `size`; `counts` is how
            many positions contributed to each channel.

        Example:
        >>> l1, _ = group.reduce(lambda w: np.abs(w).reshape(len(w), -1).sum(1))
        """
        sums = np.zeros(self.size)
        counts = np.zeros(self.size)
        for m in self.members:
            if m.role not in roles:
                continue
            arr = m.values() if source is None else source(m)
            vals = np.asarray(fn(np.moveaxis(arr, m.axis, 0)), dtype=np.float64)
            inside = m.channel >= 0
            np.add.at(sums, m.channel[inside], vals[inside])
            np.add.at(counts, m.channel[inside], 1)
        return sums, counts

    def __str__(self):
        state = (
            f"{int((~self.frozen).sum())}/{self.size} prunable"
            if self.prunable else "frozen"
        )
        layers = sorted({m.layer.name for m in self.members})
        return (
            f"Group {self.index} ({state}): producers {self.producers}; "
            f"layers {layers}" + (f"; frozen because {'; '.join(self.reasons)}" if self.reasons else "")
            + (f"; approximate: {'; '.join(self.approximate)}" if self.approximate else "")
        )


class _Ctx:
    """What a handler sees while the graph is built (see `handlers`).

    Attributes:
        node: the node (call) being handled; `node.arguments` has its args.
        input_shapes / output_shapes: static shapes of its tensors.
        inner_ids: hidden axes declared so far with `inner` for this node.
    """

    def __init__(self, graph):
        self._g = graph
        self.input_shapes = []
        self.output_shapes = []
        self.owner = None
        self.node = None
        self.inner_ids = {}

    def fresh(self, n, part=None):
        """Allocates `n` new channel ids (a new group unless tied later).

        `part` names a part of the layer (e.g. `"attention_output"`): the
        group's producer is then `"layer/part"`, so a `{layer: ratio}` dict
        naming the layer does not reach it.
        """
        owner = self.owner if part is None else f"{self.owner}/{part}"
        return self._g._fresh(int(n), owner)  # noqa: SLF001 - same module

    def union(self, a, b):
        """Ties ids `a[i]` and `b[i]`: they are removed together."""
        self._g._union(a, b)  # noqa: SLF001 - same module

    def freeze(self, ids, reason):
        """These channels may not be removed, because of `reason`."""
        self._g._freeze(ids, reason)  # noqa: SLF001 - same module

    def approximate(self, ids, reason):
        """Removing these channels changes the kept ones a little (statistics)."""
        for i in np.asarray(ids).tolist():
            self._g._approx.setdefault(i, reason)  # noqa: SLF001 - same module

    def inner(self, name, ids):
        """Declares a hidden axis of the layer (e.g. attention heads)."""
        self.inner_ids[name] = np.asarray(ids, dtype=np.int64)


class DependencyGraph:
    """The channel dependency graph of a functional or Sequential model.

    Args:
        model: a built functional or Sequential `keras.Model`. It is read, never
            modified.
        ignored_layers: layer names (or layers) whose output channels are not
            pruned. Default: the layers that produce the model's outputs.

    Attributes:
        groups: list of `Group`, every group (prunable or not).
        unknown_layers: dict `layer name -> reason` for layers that froze
            channels because they are not understood.
        nodes: the model's nodes in topological order.

    Example:
    >>> graph = DependencyGraph(model)
    >>> print(graph.report())
    """

    def __init__(self, model, ignored_layers=None):
        check_graph_model(model)
        self.model = model
        self.nodes = model_nodes(model)
        self.ignored = resolve_layers(model, ignored_layers, "ignored_layers")
        if ignored_layers is None:
            self.ignored = {t._keras_history[0].name for t in model.outputs
                            if t._keras_history[0] is not None}
        self._parent = []  # union-find over channel ids
        self._alloc = []  # id -> allocation index
        self._alloc_owner = []  # allocation -> producer layer name (or None)
        self._alloc_parent = []  # union-find over allocations
        self._frozen = {}  # id -> first reason
        self._approx = {}  # id -> first reason its removal is approximate
        self.unknown_layers = {}
        self.tensor_ids = {}
        self.node_slots = {}  # id(node) -> list[Slot]
        self.node_handler = {}
        self.node_inner = {}  # id(node) -> {hidden axis name: ids}
        self.node_path = {}  # id(node) -> "nested/model/layer" path of the layer
        self.layer_types = {}  # path -> class name
        self.nested_inputs = {}  # path of a nested model's InputLayer -> its ids
        self.nodes = []  # leaf nodes (nested models expanded), topological order
        self._build()

    # -- union-find ---------------------------------------------------------
    def _fresh(self, n, owner):
        start = len(self._parent)
        alloc = len(self._alloc_owner)
        self._alloc_owner.append(owner)
        self._alloc_parent.append(alloc)
        self._parent.extend(range(start, start + n))
        self._alloc.extend([alloc] * n)
        return np.arange(start, start + n, dtype=np.int64)

    def _find(self, i):
        p = self._parent
        root = i
        while p[root] != root:
            root = p[root]
        while p[i] != root:
            p[i], i = root, p[i]
        return root

    def _find_alloc(self, a):
        p = self._alloc_parent
        while p[a] != a:
            p[a] = p[p[a]]
            a = p[a]
        return a

    def _union(self, a, b):
        for x, y in zip(np.asarray(a).tolist(), np.asarray(b).tolist()):
            rx, ry = self._find(x), self._find(y)
            if rx != ry:
                self._parent[ry] = rx
            ax, ay = self._find_alloc(self._alloc[x]), self._find_alloc(self._alloc[y])
            if ax != ay:
                self._alloc_parent[ay] = ax

    def _freeze(self, ids, reason):
        for i in np.asarray(ids).tolist():
            self._frozen.setdefault(i, reason)

    # -- building -----------------------------------------------------------
    def _ids(self, tensor):
        return self.tensor_ids[id(tensor)]

    def _build(self):
        model = self.model
        ctx = _Ctx(self)
        for t in model.inputs:
            ctx.owner = None
            dim = t.shape[-1] if len(t.shape) else 1
            ids = ctx.fresh(dim if dim is not None else 0)
            self.tensor_ids[id(t)] = ids
            self._freeze(ids, "model input")
        self._calls = {}
        self._count_calls(model)
        self._walk(model, "", ctx)
        for t in model.outputs:
            self._freeze(self._ids(t), "model output")
        self._make_groups()

    def _count_calls(self, model):
        for node in model_nodes(model):
            op = node.operation
            self._calls[id(op)] = self._calls.get(id(op), 0) + 1
            if is_graph_model(op) and self._calls[id(op)] == 1:
                self._count_calls(op)

    def _walk(self, model, prefix, ctx):
        for node in model_nodes(model):
            layer = node.operation
            path = prefix + layer.name
            ins = [self._ids(t) for t in node.input_tensors]
            if is_graph_model(layer) and self._calls[id(layer)] == 1 and len(
                    layer.inputs) == len(ins):
                for t, ids in zip(layer.inputs, ins):
                    self.tensor_ids[id(t)] = ids
                    if t._keras_history[0] is not None:
                        self.nested_inputs[path + "/" + t._keras_history[0].name] = ids
                self._walk(layer, path + "/", ctx)
                for t, inner in zip(node.output_tensors, layer.outputs):
                    self.tensor_ids[id(t)] = self._ids(inner)
                if not prefix and layer.name in self.ignored:
                    for t in node.output_tensors:
                        self._freeze(self._ids(t), f"output of ignored layer {layer.name!r}")
                continue
            self.nodes.append(node)
            self.node_path[id(node)] = path
            self.layer_types[path] = type(layer).__name__
            ctx.input_shapes = [tuple(t.shape) for t in node.input_tensors]
            ctx.output_shapes = [tuple(t.shape) for t in node.output_tensors]
            ctx.owner = path
            ctx.node = node
            ctx.inner_ids = {}
            handler = handlers_lib.get_handler(layer)
            label = handlers_lib.operation_label(layer)
            reason = None
            if handler is None:
                if isinstance(layer, keras.Model):
                    reason = (f"nested model {layer.name!r} is called more than once"
                              if self._calls[id(layer)] > 1 else
                              f"nested model {layer.name!r} ({type(layer).__name__}) "
                              f"is not a functional graph")
                elif isinstance(layer, keras.layers.Layer):
                    reason = f"no handler for layer type {type(layer).__name__}"
                else:
                    reason = (f"no handler for keras.ops operation "
                              f"{type(layer).__module__.rsplit('.', 1)[-1]}.{type(layer).__name__}")
            elif self._calls[id(layer)] > 1:
                reason = (f"layer is called {self._calls[id(layer)]} times (shared weights): "
                          f"its calls would have to be pruned alike; kept whole")
            elif any(s[-1] is None for s in ctx.output_shapes if len(s)) or any(
                    len(s) and s[-1] is None and len(i) for s, i in zip(ctx.input_shapes, ins)):
                # (an input of unknown width, such as token ids or a padding
                # mask of unknown length, carries no channel ids: allowed)
                reason = "channel dimension is not static"
            outs, slots = None, []
            if reason is None:
                try:
                    outs = handler.out_ids(layer, ins, ctx)
                    if len(outs) != len(node.output_tensors) or any(
                        len(o) != (s[-1] if len(s) else 1) for o, s in zip(outs, ctx.output_shapes)
                    ):
                        raise handlers_lib.Unsupported(
                            "handler's channel ids do not match the output shape"
                        )
                    if _accepts(handler.slots, "ctx"):
                        slots = handler.slots(layer, ins, outs, ctx=ctx)
                    else:
                        slots = handler.slots(layer, ins, outs)
                    for s in slots:
                        w = handlers_lib.find_weight(layer, s.weight)
                        if w is None or w.shape[s.axis] != len(s.ids):
                            raise handlers_lib.Unsupported(
                                f"weight {s.weight!r} does not match its channel ids"
                            )
                except handlers_lib.Unsupported as e:
                    reason = str(e)
            if reason is not None:
                self.unknown_layers[path] = f"{label}: {reason}" if handler is not None else reason
                for i in ins:
                    self._freeze(i, f"input of {label} ({reason})")
                outs = []
                for s in ctx.output_shapes:
                    o = ctx.fresh(s[-1] if len(s) and s[-1] is not None else (1 if not len(s) else 0))
                    self._freeze(o, f"output of {label} ({reason})")
                    outs.append(o)
                slots = []
                handler = None
                ctx.inner_ids = {}
            self.node_handler[id(node)] = handler
            self.node_slots[id(node)] = slots
            self.node_inner[id(node)] = dict(ctx.inner_ids)
            for t, o in zip(node.output_tensors, outs):
                self.tensor_ids[id(t)] = np.asarray(o, dtype=np.int64)
            if not prefix and layer.name in self.ignored:
                for o in outs:
                    self._freeze(o, f"output of ignored layer {layer.name!r}")

    def _make_groups(self):
        n = len(self._parent)
        self.root = np.array([self._find(i) for i in range(n)], dtype=np.int64)
        alloc_root = np.array(
            [self._find_alloc(a) for a in range(len(self._alloc_owner))], dtype=np.int64
        )
        id_group_key = alloc_root[np.asarray(self._alloc, dtype=np.int64)] if n else np.zeros(0, int)
        frozen_root = {}
        for i, reason in self._frozen.items():
            frozen_root.setdefault(int(self.root[i]), reason)
        keys = sorted(set(id_group_key.tolist()))
        self.groups = []
        self.id_group = np.full(n, -1, dtype=np.int64)
        self.id_channel = np.full(n, -1, dtype=np.int64)
        for gi, key in enumerate(keys):
            ids = np.flatnonzero(id_group_key == key)
            roots = sorted(set(self.root[ids].tolist()))
            root_index = {r: c for c, r in enumerate(roots)}
            chan = np.array([root_index[r] for r in self.root[ids].tolist()], dtype=np.int64)
            self.id_group[ids] = gi
            self.id_channel[ids] = chan
            frozen = np.array([r in frozen_root for r in roots], dtype=bool)
            reasons = sorted({frozen_root[r] for r in roots if r in frozen_root})
            approx = sorted({self._approx[i] for i in ids.tolist() if i in self._approx})
            producers = sorted({self._alloc_owner[a] for a in range(len(self._alloc_owner))
                                if alloc_root[a] == key and self._alloc_owner[a] is not None})
            self.groups.append(Group(
                index=gi, producers=producers, size=len(roots), frozen=frozen,
                reasons=_short(reasons), members=[], model=self.model,
                ids=[ids[chan == c] for c in range(len(roots))], approximate=_short(approx),
            ))
        for node in self.nodes:
            for s in self.node_slots[id(node)]:
                gids = self.id_group[s.ids]
                for gi in sorted(set(gids.tolist())):
                    channel = np.where(gids == gi, self.id_channel[s.ids], -1)
                    self.groups[gi].members.append(
                        Member(node.operation, s.weight, s.axis, s.role, channel,
                               self.node_path[id(node)]))
        # A group with no weights to cut (e.g. a model input) is not a group.
        self.groups = [g for g in self.groups if g.members]
        for new_index, g in enumerate(self.groups):
            g.index = new_index

    # -- queries ------------------------------------------------------------
    @property
    def approximate_groups(self):
        """Prunable groups whose removal changes kept values (see `Group.approximate`)."""
        return [g for g in self.prunable_groups if g.approximate]

    @property
    def prunable_groups(self):
        """Groups with at least one removable channel."""
        return [g for g in self.groups if g.prunable]

    def layer_group(self, name):
        """Groups whose channels a producer layer `name` makes."""
        return [g for g in self.groups if name in g.producers]

    def removed_ids(self, removed):
        """Bool array over channel ids from `{group index: bool array per channel}`."""
        out = np.zeros(len(self._parent), dtype=bool)
        by_index = {g.index: g for g in self.groups}
        for gi, rem in removed.items():
            g = by_index[gi]
            for c in np.flatnonzero(rem):
                out[g.ids[c]] = True
        return out

    def report(self):
        """A readable summary: groups, frozen channels and unknown layers."""
        lines = [f"Dependency graph of {self.model.name!r}: {len(self.groups)} groups, "
                 f"{len(self.prunable_groups)} prunable."]
        for g in self.groups:
            lines.append("  " + str(g))
        if self.unknown_layers:
            lines.append("Layers not understood (their channels are frozen):")
            for name, why in self.unknown_layers.items():
                lines.append(f"  {name}: {why}")
        return "\n".join(lines)


def _accepts(fn, name):
    import inspect  # noqa: PLC0415

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False
    return name in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def accepts_argument(fn, name):
    """True when callable `fn` takes a keyword argument `name`."""
    return _accepts(fn, name)


def _short(reasons, limit=4):
    if len(reasons) <= limit:
        return list(reasons)
    return list(reasons[:limit]) + [f"... and {len(reasons) - limit} more"]


def _weight(layer, name):
    return handlers_lib.find_weight(layer, name)


def resolve_layers(model, layers, param):
    """Validates a list of layer names/layers; returns a set of names."""
    if layers is None:
        return set()
    if isinstance(layers, (str, keras.layers.Layer)):
        layers = [layers]
    names = {l.name for l in model.layers}
    out = set()
    for item in layers:
        name = item.name if isinstance(item, keras.layers.Layer) else item
        if not isinstance(name, str):
            raise TypeError(f"{param}: expected layer names or layers, got {item!r}.")
        if name not in names:
            raise ValueError(
                f"{param}: model {model.name!r} has no layer named {name!r}. "
                f"Its layers are: {sorted(names)[:20]}{' ...' if len(names) > 20 else ''}."
            )
        out.add(name)
    return out
