"""ChannelPruner: removes whole channels and returns a physically thinner model.

The pruner puts the pieces together: the `DependencyGraph` says which channels
go together (groups), an importance criterion scores each group's channels,
`kprune.masking` turns the scores into keep-sets (per group, or one global
threshold over all groups), and the surgery rebuilds the model from its
config with smaller `filters`/`units` and copies the kept weights.

The caller's model is only read: `prune()` returns a NEW plain Keras model
with the same layer names and types.
"""

from __future__ import annotations

import collections.abc
import copy
import dataclasses

import keras
import numpy as np

from kprune import checks, masking, progress
from kprune.structured import handlers as handlers_lib
from kprune.structured.graph import DependencyGraph, _resolve_layers, check_graph_model
from kprune.structured.importance import MagnitudeImportance, get_importance

__all__ = [
    "ChannelPruner",
    "PruningPlan",
    "prune_channels",
    "prune_iteratively",
    "ChannelPruningCallback",
]


def _check_ratio(value, name):
    return checks.check_sparsity(name, value, what="channels")


def _check_ratio_arg(model, pruning_ratio, global_pruning=False):
    """`pruning_ratio` as a float, or a dict keyed by layer *names*."""
    if isinstance(pruning_ratio, collections.abc.Mapping):
        if global_pruning:
            raise ValueError(
                "global_pruning=True takes a single float pruning_ratio, got a dict."
            )
        _resolve_layers(model, list(pruning_ratio), "pruning_ratio")
        out = {}
        for k, v in pruning_ratio.items():
            name = k.name if isinstance(k, keras.layers.Layer) else k
            if name in out:
                raise ValueError(f"pruning_ratio names layer {name!r} twice.")
            out[name] = _check_ratio(v, f"pruning_ratio[{name!r}]")
        return out
    return _check_ratio(pruning_ratio, "pruning_ratio")


@dataclasses.dataclass
class PruningPlan:
    """Which channels of which group are removed.

    Attributes:
        removed: dict `group index -> bool array` (True = remove) per channel.
        widths: dict `producer layer name -> (before, after)` output widths.
        notes: list of strings: groups left alone and why.
    """

    graph: DependencyGraph
    removed: dict
    widths: dict
    notes: list

    @property
    def num_removed(self):
        """Total number of channels removed over all groups."""
        return int(sum(int(r.sum()) for r in self.removed.values()))

    def report(self):
        """A per-layer before/after width table, and the notes."""
        rows = [("layer", "type", "before", "after")]
        for layer in self.graph.model.layers:
            if layer.name in self.widths:
                b, a = self.widths[layer.name]
                rows.append((layer.name, type(layer).__name__, str(b), str(a)))
        w = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [f"Channel pruning plan for {self.graph.model.name!r}: "
                 f"{self.num_removed} channels removed in "
                 f"{sum(1 for r in self.removed.values() if r.any())} groups."]
        for r in rows:
            lines.append("  ".join(c.ljust(x) for c, x in zip(r, w)))
        lines.extend(self.notes)
        if self.graph.unknown_layers:
            lines.append("Layers not understood (their channels are kept):")
            lines.extend(f"  {n}: {why}" for n, why in self.graph.unknown_layers.items())
        return "\n".join(lines)

    def __str__(self):
        return self.report()


class ChannelPruner:
    """Structured (filter/channel) pruning of a functional or Sequential model.

    Args:
        model: a built functional or Sequential `keras.Model` (channels_last).
            It is never modified.
        importance: `"l1"` (default), `"l2"`, `"bn_scale"`, a
            `TaylorImportance(x, y, loss)`, or any callable
            `group -> scores` (one score per channel, higher = keep).
        pruning_ratio: fraction of each group's channels to remove, in [0, 1);
            or a dict `{layer name: ratio}` that prunes only the groups those
            producer layers belong to (the others are kept whole).
        global_pruning: False: every group loses `pruning_ratio` of its
            channels. True: one threshold over all groups' scores (see
            `kprune.masking.compute_masks(scope="global")`), so some layers
            lose more than others; needs a float ratio.
        global_normalize: `"lamp"` (default) or None: how scores are made
            comparable across groups in global pruning.
        round_to: if set, every pruned group keeps a multiple of `round_to`
            channels (e.g. 8), rounding the kept count up.
        ignored_layers: layer names (or layers) whose output channels are kept.
            Default: the layers that produce the model outputs.
        min_channels: every group keeps at least this many channels (>= 1).
        from_zero_channels: instead of scoring, remove exactly the channels
            whose filters are all zero (for example a model pruned with
            `kprune.Channel()` and stripped). `pruning_ratio` is ignored.
        custom_objects: dict for rebuilding custom layers from their config.
        verbose: 1 shows a progress bar while scoring groups.

    Attributes:
        graph: the `DependencyGraph`.
        groups: the prunable groups (`Group`).

    Example:
    >>> pruner = ChannelPruner(model, importance="l1", pruning_ratio=0.5)
    >>> print(pruner.plan().report())
    >>> thin = pruner.prune()
    """

    def __init__(
        self,
        model,
        importance="l1",
        pruning_ratio=0.5,
        global_pruning=False,
        round_to=None,
        ignored_layers=None,
        min_channels=1,
        from_zero_channels=False,
        global_normalize="lamp",
        custom_objects=None,
        verbose=0,
    ):
        check_graph_model(model)
        self.importance = get_importance(importance)
        global_pruning = checks.check_bool("global_pruning", global_pruning)
        from_zero_channels = checks.check_bool("from_zero_channels", from_zero_channels)
        if isinstance(pruning_ratio, collections.abc.Mapping) or not from_zero_channels:
            pruning_ratio = _check_ratio_arg(model, pruning_ratio, global_pruning)
        if round_to is not None:
            round_to = checks.check_int("round_to", round_to, lo=1, fix="Or pass None for no rounding.")
        min_channels = checks.check_int("min_channels", min_channels, lo=1)
        checks.check_choice("global_normalize", global_normalize, (None, "lamp"))
        if custom_objects is not None and not isinstance(custom_objects, collections.abc.Mapping):
            raise TypeError(
                f"custom_objects must be a dict {{name: class}} or None, got "
                f"{checks.describe(custom_objects)}."
            )
        checks.check_choice("verbose", verbose, (0, 1, 2, False, True))
        self.graph = DependencyGraph(model, ignored_layers=ignored_layers)
        self.model = model
        self.pruning_ratio = pruning_ratio
        self.global_pruning = bool(global_pruning)
        self.global_normalize = global_normalize
        self.round_to = round_to
        self.min_channels = min_channels
        self.from_zero_channels = bool(from_zero_channels)
        self.custom_objects = custom_objects or {}
        self.verbose = verbose
        if not self.groups:
            raise ValueError(
                f"Nothing to prune in model {model.name!r}: no group of channels can be "
                f"removed.\n{self.graph.report()}"
            )
        self._plan = None

    @property
    def groups(self):
        """The prunable groups of the dependency graph."""
        return self.graph.prunable_groups

    # -- planning ---------------------------------------------------------
    def _group_ratio(self, group, ratio):
        if not isinstance(ratio, dict):
            return ratio
        found = [ratio[p] for p in group.producers if p in ratio]
        return min(found) if found else 0.0

    def _target(self, group, kept_prunable):
        """Final kept count of prunable channels after min_channels/round_to."""
        nf = int(group.frozen.sum())
        total = nf + kept_prunable
        if self.round_to:
            total = -(-total // self.round_to) * self.round_to
        total = max(total, self.min_channels, nf)
        return min(total, group.size) - nf

    def plan(self, pruning_ratio=None, force_removed=None):
        """Decides which channels go.

        Args:
            pruning_ratio: override the pruner's ratio for this plan.
            force_removed: dict `group index -> bool array` of channels that
                must be removed (used by iterative pruning); they count towards
                the ratio.

        Returns:
            A `PruningPlan`.
        """
        ratio = self.pruning_ratio if pruning_ratio is None else pruning_ratio
        if pruning_ratio is not None:
            ratio = _check_ratio_arg(self.model, ratio, self.global_pruning)
        force_removed = force_removed or {}
        notes, scores, ratios = [], {}, {}
        groups = self.groups
        bar = keras.utils.Progbar(len(groups)) if self.verbose else None
        for g in groups:
            if bar is not None:
                bar.add(1)
            if self.from_zero_channels:
                s = MagnitudeImportance(p=1)(g)
                r = None
            else:
                r = self._group_ratio(g, ratio)
                if r == 0.0 and g.index not in force_removed:
                    continue
                s = self.importance(g)
            if s is None:
                notes.append(f"Group {g.index} {g.producers}: importance "
                             f"{self.importance!r} gives no score; kept whole.")
                continue
            s = np.asarray(s, dtype=np.float64).reshape(-1)
            if s.shape != (g.size,):
                raise ValueError(
                    f"importance returned {s.shape[0]} scores for group {g.index} "
                    f"{g.producers}, which has {g.size} channels."
                )
            scores[g.index] = s
            ratios[g.index] = r

        by_index = {g.index: g for g in groups}
        kept = {}
        sub = {gi: s[~by_index[gi].frozen] for gi, s in scores.items()}
        if self.from_zero_channels:
            kept = {gi: int(np.count_nonzero(v > 0)) for gi, v in sub.items()}
        elif self.global_pruning and sub:
            masks = masking.compute_masks(
                sub, ratio, granularity=masking.Unstructured(), scope="global",
                normalize=self.global_normalize, min_keep=self.min_channels,
            )
            kept = {gi: int(m.sum()) for gi, m in masks.items()}
        elif sub:
            masks = masking.compute_masks(
                sub, {gi: ratios[gi] for gi in sub}, granularity=masking.Unstructured(),
                scope="layer",
            )
            kept = {gi: int(m.sum()) for gi, m in masks.items()}

        removed = {}
        for gi, s in scores.items():
            g = by_index[gi]
            forced = force_removed.get(gi, np.zeros(g.size, bool))[~g.frozen]
            k = self._target(g, kept[gi])
            k = min(k, int((~forced).sum())) if forced.any() else k
            choose = np.where(forced, -np.inf, sub[gi])
            keep_sub = masking.select_top_k(choose, k)
            rem = np.zeros(g.size, dtype=bool)
            rem[~g.frozen] = ~keep_sub
            if rem.any():
                removed[gi] = rem

        removed_ids = self.graph.removed_ids(removed)
        widths = {}
        for node in self.graph.nodes:
            handler = self.graph.node_handler[id(node)]
            if isinstance(handler, handlers_lib.ProducerHandler):
                ids = self.graph.tensor_ids[id(node.output_tensors[0])]
                widths[node.operation.name] = (len(ids), int((~removed_ids[ids]).sum()))
        self._plan = PruningPlan(self.graph, removed, widths, notes)
        return self._plan

    def report(self):
        """The graph report and the plan's width table."""
        plan = self._plan or self.plan()
        return self.graph.report() + "\n" + plan.report()

    # -- surgery ------------------------------------------------------------
    def _sliced(self, plan, zero_only=False):
        """New weights per layer name (sliced, or zeroed when `zero_only`)."""
        removed_ids = self.graph.removed_ids(plan.removed)
        weights, widths = {}, {}
        for node in self.graph.nodes:
            layer = node.operation
            slots = self.graph.node_slots[id(node)]
            handler = self.graph.node_handler[id(node)]
            if isinstance(handler, handlers_lib.ProducerHandler):
                out = [self.graph.tensor_ids[id(t)] for t in node.output_tensors]
                widths[layer.name] = [int((~removed_ids[o]).sum()) for o in out]
            if not slots:
                continue
            names = [v.name for v in layer.weights]
            arrays = [keras.ops.convert_to_numpy(v).copy() for v in layer.weights]
            for s in slots:
                drop = removed_ids[s.ids]
                if not drop.any():
                    continue
                i = names.index(s.weight)
                if zero_only:
                    if s.role == "stat":
                        continue
                    index = [slice(None)] * arrays[i].ndim
                    index[s.axis] = np.flatnonzero(drop)
                    arrays[i][tuple(index)] = 0
                else:
                    arrays[i] = np.compress(~drop, arrays[i], axis=s.axis)
            weights[layer.name] = arrays
        return weights, widths

    def _rebuild(self, weights, widths):
        model = self.model
        config = copy.deepcopy(model.get_config())
        by_name = {l.name: l for l in model.layers}
        for entry in config.get("layers", []):
            layer_config = entry.get("config", {})
            name = layer_config.get("name", entry.get("name"))
            layer = by_name.get(name)
            if layer is not None and not isinstance(layer, keras.Model):
                entry.pop("build_config", None)
            if name in widths:
                handler = handlers_lib.get_handler(layer)
                entry["config"] = handler.new_config(layer, layer_config, widths[name])
        with keras.saving.custom_object_scope(self.custom_objects):
            if isinstance(model, keras.Sequential):
                new = keras.Sequential.from_config(config)
            else:
                new = keras.Model.from_config(config)
        for layer in model.layers:
            target = new.get_layer(layer.name)
            values = weights.get(layer.name)
            if values is None:
                values = layer.get_weights()
            try:
                target.set_weights(values)
            except ValueError as e:  # pragma: no cover - internal consistency
                raise RuntimeError(
                    f"Channel surgery made inconsistent weights for layer "
                    f"{layer.name!r}: {e}"
                ) from e
        return new

    def prune(self, plan=None):
        """Returns a NEW, thinner model; the original is not modified.

        Args:
            plan: a `PruningPlan` (default: `self.plan()`).

        Returns:
            A plain (uncompiled) keras.Model with the same layer names and
            types and fewer channels, holding the kept channels' weights.
        """
        _check_plan(self, plan)
        plan = plan or self._plan or self.plan()
        weights, widths = self._sliced(plan)
        return self._rebuild(weights, widths)

    def masked_model(self, plan=None):
        """A copy of the model with the removed channels zeroed, not removed.

        Every weight that touches a removed channel is zeroed (filters, biases,
        normalisation scales/offsets, and the next layers' input slices), so
        its outputs equal `prune()`'s. Useful to verify the surgery.
        """
        _check_plan(self, plan)
        plan = plan or self._plan or self.plan()
        weights, _ = self._sliced(plan, zero_only=True)
        return self._rebuild(weights, {})

    def masks(self, plan=None):
        """Keep-masks `{(layer name, weight name): float array}` of a plan."""
        _check_plan(self, plan)
        plan = plan or self._plan or self.plan()
        removed_ids = self.graph.removed_ids(plan.removed)
        out = {}
        for node in self.graph.nodes:
            layer = node.operation
            for s in self.graph.node_slots[id(node)]:
                drop = removed_ids[s.ids]
                if not drop.any() or s.role == "stat":
                    continue
                var = [v for v in layer.weights if v.name == s.weight][0]
                key = (layer.name, s.weight)
                m = out.get(key)
                if m is None:
                    m = np.ones(tuple(var.shape), dtype=np.float32)
                index = [slice(None)] * m.ndim
                index[s.axis] = np.flatnonzero(drop)
                m[tuple(index)] = 0
                out[key] = m
        return out


def _check_plan(pruner, plan):
    """`plan` must be None or a `PruningPlan` made by this pruner's graph."""
    if plan is None:
        return
    if not isinstance(plan, PruningPlan):
        raise TypeError(
            f"plan must be a PruningPlan from ChannelPruner.plan(), or None, got "
            f"{checks.describe(plan)}."
        )
    if plan.graph is not pruner.graph:
        raise ValueError(
            f"plan was made by another ChannelPruner (model "
            f"{plan.graph.model.name!r}); pass a plan from this pruner's plan()."
        )


def prune_channels(model, importance="l1", pruning_ratio=0.5, **kwargs):
    """Prunes channels in one call: `ChannelPruner(...).prune()`.

    Args:
        model: a functional or Sequential keras.Model (not modified).
        importance: see `ChannelPruner`.
        pruning_ratio: see `ChannelPruner`.
        **kwargs: other `ChannelPruner` arguments (`global_pruning`,
            `round_to`, `ignored_layers`, `from_zero_channels`, ...).

    Returns:
        The new, thinner keras.Model.

    Example:
    >>> thin = kprune.structured.prune_channels(model, pruning_ratio=0.5, round_to=8)
    """
    return ChannelPruner(model, importance=importance, pruning_ratio=pruning_ratio,
                         **kwargs).prune()


def _cumulative(ratio, step, steps):
    if isinstance(ratio, dict):
        return {k: v * step / steps for k, v in ratio.items()}
    return ratio * step / steps


def _step_ratio(ratio, step, steps):
    """Ratio to apply to the current model so that, after `step` of `steps`,
    the cumulative removed fraction is `ratio * step / steps`."""

    def one(r):
        before = 1.0 - r * (step - 1) / steps
        after = 1.0 - r * step / steps
        return 1.0 - after / before

    if isinstance(ratio, dict):
        return {k: one(v) for k, v in ratio.items()}
    return one(ratio)


def prune_iteratively(model, pruning_ratio=0.5, steps=3, fine_tune=None, verbose=0, **kwargs):
    """Prunes in `steps` physical steps, fine-tuning after each.

    After step `i` of `k`, about `pruning_ratio * i / k` of every group's
    original channels are gone (each step prunes the current, already thinner
    model by the matching fraction).

    Args:
        model: the model to prune (not modified).
        pruning_ratio: final fraction (float or `{layer: ratio}` dict).
        steps: number of pruning steps.
        fine_tune: `fn(model, step) -> model or None`, called after each step
            with the new thinner model (compile and fit it there). If it
            returns None, the same model object is used for the next step.
        verbose: 1 prints each step's plan and a progress line per step
            (`kprune.progress`), 0 is silent.
        **kwargs: other `ChannelPruner` arguments.

    Returns:
        The final thinner model.

    Example:
    >>> def tune(m, step):
    ...     m.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    ...     m.fit(x, y, epochs=1, verbose=0)
    >>> thin = prune_iteratively(model, 0.5, steps=3, fine_tune=tune)
    """
    steps = checks.check_int("steps", steps, lo=1)
    check_graph_model(model)
    _check_ratio_arg(model, pruning_ratio, kwargs.get("global_pruning", False))
    checks.check_callable("fine_tune", fine_tune, signature="fn(model, step) -> model or None")
    checks.check_choice("verbose", verbose, (0, 1, 2, False, True))
    current = model
    # Full lines (no in-place bar): each step prints its plan and the user's fine-tuning output.
    bar = progress.Progress(steps, "prune_iteratively", verbose=1 if verbose else 0, unit="step",
                            interactive=False)
    for step in range(1, steps + 1):
        pruner = ChannelPruner(current, pruning_ratio=_step_ratio(pruning_ratio, step, steps),
                               **kwargs)
        plan = pruner.plan()
        if verbose:
            print(plan.report())
        current = pruner.prune(plan)
        if fine_tune is not None:
            tuned = fine_tune(current, step)
            current = tuned if tuned is not None else current
        bar.update(1)
    return current


class ChannelPruningCallback(keras.callbacks.Callback):
    """Prunes channels during `model.fit` at given epochs; the thin model comes at the end.

    `fit` trains one model object and cannot swap it for another, so during
    training the callback *masks*: at each pruning epoch it scores the
    channels of the model being trained, zeroes every weight of the channels
    it removes (filters, biases, normalisation parameters and the next
    layers' input slices), and keeps them at zero after every batch. A masked
    model computes exactly what the thinner model computes, so the
    remaining epochs fine-tune the thinner network. When training ends, the
    physically thinner model is built and stored in `callback.pruned_model`
    (the fitted model itself stays full-size, with zeros).

    Args:
        pruning_ratio: final fraction of channels removed (float or dict).
        prune_epochs: epochs (0-based) at whose start a pruning step happens;
            after the `i`-th of `k` steps, `pruning_ratio * i / k` is removed.
        **kwargs: `ChannelPruner` arguments (`importance`, `round_to`, ...).

    Attributes:
        pruned_model: the thinner model after `fit` (None before).
        plan: the last `PruningPlan`.

    Example:
    >>> cb = ChannelPruningCallback(0.5, prune_epochs=[0, 2, 4])
    >>> model.fit(x, y, epochs=6, callbacks=[cb])
    >>> thin = cb.pruned_model
    """

    def __init__(self, pruning_ratio=0.5, prune_epochs=(0,), **kwargs):
        super().__init__()
        if isinstance(prune_epochs, (str, bytes)) or not isinstance(
            prune_epochs, collections.abc.Iterable
        ):
            raise TypeError(
                f"prune_epochs must be a list of epoch indices, e.g. [0, 2, 4], got "
                f"{checks.describe(prune_epochs)}."
            )
        epochs = [checks.check_int(f"prune_epochs[{i}]", e, lo=0) for i, e in enumerate(prune_epochs)]
        if not epochs:
            raise ValueError("prune_epochs must list at least one epoch.")
        if len(set(epochs)) != len(epochs):
            raise ValueError(f"prune_epochs lists an epoch twice: {epochs}; list each epoch once.")
        self.prune_epochs = sorted(epochs)
        if isinstance(pruning_ratio, dict):
            for k, v in pruning_ratio.items():
                _check_ratio(v, f"pruning_ratio[{k!r}]")
        else:
            _check_ratio(pruning_ratio, "pruning_ratio")
        self.pruning_ratio = pruning_ratio
        self.kwargs = kwargs
        self.pruned_model = None
        self.plan = None
        self._pruner = None
        self._masks = []

    def on_train_begin(self, logs=None):
        self._pruner = ChannelPruner(self.model, pruning_ratio=self.pruning_ratio, **self.kwargs)
        self.plan = None
        self.pruned_model = None

    def on_epoch_begin(self, epoch, logs=None):
        if epoch not in self.prune_epochs:
            return
        step = self.prune_epochs.index(epoch) + 1
        ratio = _cumulative(self.pruning_ratio, step, len(self.prune_epochs))
        forced = self.plan.removed if self.plan is not None else None
        self.plan = self._pruner.plan(pruning_ratio=ratio, force_removed=forced)
        by_name = {l.name: l for l in self.model.layers}
        self._masks = []
        for (lname, wname), m in self._pruner.masks(self.plan).items():
            var = [v for v in by_name[lname].weights if v.name == wname][0]
            self._masks.append((var, m))
        self._apply()

    def _apply(self):
        for var, m in self._masks:
            var.assign(keras.ops.multiply(var, m))

    def on_train_batch_end(self, batch, logs=None):
        self._apply()

    def on_train_end(self, logs=None):
        if self.plan is not None:
            self.pruned_model = self._pruner.prune(self.plan)
