"""ChannelPruner: removes whole channels and returns a physically thinner model.

The pruner puts the pieces together: the `DependencyGraph` says which channels
go together (groups), an importance criterion scores each group's channels,
`kprune.core.masking` turns the scores into keep-sets (per group, or one global
threshold over all groups), `kprune.structured.surgery` rebuilds the model
with fewer channels, and `kprune.structured.verify` checks that the thin
model computes what the channel-zeroed original computes.

The caller's model is only read: `prune()` returns a NEW plain Keras model
with the same layer names and types.
"""

from __future__ import annotations

import collections.abc

import keras
import numpy as np

from kprune.core import checks, masking
from kprune.utils.progress import Progress
from kprune.structured import surgery
from kprune.structured import verify as verify_lib
from kprune.structured.graph import DependencyGraph, check_graph_model, resolve_layers
from kprune.structured.importance import MagnitudeImportance, get_importance
from kprune.structured.plan import PruningPlan, check_ratio

__all__ = ["ChannelPruner", "prune_channels", "check_ratio_arg"]


def check_ratio_arg(model, pruning_ratio, global_pruning=False):
    """`pruning_ratio` as a float, or a dict keyed by layer *names* (layer
    objects are accepted as keys and turned into their names)."""
    if isinstance(pruning_ratio, collections.abc.Mapping):
        if global_pruning:
            raise ValueError(
                "global_pruning=True takes a single float pruning_ratio, got a dict."
            )
        resolve_layers(model, list(pruning_ratio), "pruning_ratio")
        out = {}
        for k, v in pruning_ratio.items():
            name = k.name if isinstance(k, keras.layers.Layer) else k
            if name in out:
                raise ValueError(f"pruning_ratio names layer {name!r} twice.")
            out[name] = check_ratio(v, f"pruning_ratio[{name!r}]")
        return out
    return check_ratio(pruning_ratio, "pruning_ratio")


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
            `kprune.core.masking.compute_masks(scope="global")`), so some layers
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
        verified_difference: relative difference between the last thin model
            and the channel-zeroed original found by `prune(verify=True)`.

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
            pruning_ratio = check_ratio_arg(model, pruning_ratio, global_pruning)
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
        self.verified_difference = None

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
            ratio = check_ratio_arg(self.model, ratio, self.global_pruning)
        force_removed = force_removed or {}
        notes, scores, ratios = [], {}, {}
        groups = self.groups
        bar = Progress(len(groups), "ChannelPruner: scoring groups", verbose=1,
                       unit="group") if self.verbose else None
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
            # Every producer keeps a channel: a concat branch whose channels all
            # rank low (ties through Add to a wider residual) must not vanish.
            for m in g.members:
                if m.role != "out":
                    continue
                chans = np.unique(m.channel[m.channel >= 0])
                if chans.size and rem[chans].all():
                    rem[chans[int(np.argmax(s[chans]))]] = False
            if rem.any():
                removed[gi] = rem

        removed_ids = self.graph.removed_ids(removed)
        widths, inner = {}, {}
        for node in self.graph.nodes:
            handler = self.graph.node_handler[id(node)]
            path = self.graph.node_path[id(node)]
            if handler is not None and handler.kind == "prune_out":
                ids = self.graph.tensor_ids[id(node.output_tensors[0])]
                widths[path] = (len(ids), int((~removed_ids[ids]).sum()))
            hidden = self.graph.node_inner.get(id(node)) or {}
            if hidden:
                inner[path] = {k: (len(v), int((~removed_ids[v]).sum())) for k, v in hidden.items()}
        self._plan = PruningPlan(self.graph, removed, widths, notes, inner)
        return self._plan

    def report(self):
        """The graph report and the plan's width table."""
        plan = self._plan or self.plan()
        return self.graph.report() + "\n" + plan.report()

    # -- surgery ------------------------------------------------------------
    def prune(self, plan=None, verify=True, tolerance=1e-4, input_shape=None):
        """Returns a NEW, thinner model; the original is not modified.

        Args:
            plan: a `PruningPlan` (default: `self.plan()`).
            verify: check, on one random batch, that the thin model equals
                the channel-zeroed original (`masked_model()`) within
                `tolerance`, leaving out the plan's approximate groups (see
                `PruningPlan.approximate`). Costs one more model rebuild and
                two forward passes; pass False to skip.
            tolerance: largest relative difference `verify` accepts.
            input_shape: input shape (without batch) for `verify` when the
                model's input has unknown dimensions (default: 32 for each).

        Returns:
            A plain (uncompiled) keras.Model with the same layer names and
            types and fewer channels, holding the kept channels' weights.

        Raises:
            kprune.structured.PruningVerificationError: when `verify` finds a
                difference, naming the groups at fault.
        """
        _check_plan(self, plan)
        plan = plan or self._plan or self.plan()
        thin = surgery.build_thin_model(self.graph, plan, self.custom_objects)
        if verify:
            self.verified_difference = verify_lib.verify_plan(
                self.graph, plan, thin=thin, tolerance=tolerance, input_shape=input_shape,
                custom_objects=self.custom_objects)
        return thin

    def masked_model(self, plan=None):
        """A copy of the model with the removed channels zeroed, not removed.

        Every weight that touches a removed channel is zeroed (filters, biases,
        normalisation scales/offsets, and the next layers' input slices), so
        its outputs equal `prune()`'s (up to the plan's approximate groups).
        """
        _check_plan(self, plan)
        plan = plan or self._plan or self.plan()
        return surgery.build_masked_model(self.graph, plan, self.custom_objects)

    def masks(self, plan=None):
        """Keep-masks `{(layer path, weight key): float array}` of a plan."""
        _check_plan(self, plan)
        plan = plan or self._plan or self.plan()
        return surgery.channel_masks(self.graph, plan)


def prune_channels(model, importance="l1", pruning_ratio=0.5, **kwargs):
    """Prunes channels in one call: `ChannelPruner(...).prune()`.

    Args:
        model: a functional or Sequential keras.Model (not modified).
        importance: see `ChannelPruner`.
        pruning_ratio: see `ChannelPruner`.
        **kwargs: other `ChannelPruner` arguments (`global_pruning`,
            `round_to`, `ignored_layers`, `from_zero_channels`, ...), and
            `verify`, `tolerance`, `input_shape` for `ChannelPruner.prune`.

    Returns:
        The new, thinner keras.Model.

    Example:
    >>> thin = kprune.structured.prune_channels(model, pruning_ratio=0.5, round_to=8)
    """
    prune_kwargs = {k: kwargs.pop(k) for k in ("verify", "tolerance", "input_shape")
                    if k in kwargs}
    return ChannelPruner(model, importance=importance, pruning_ratio=pruning_ratio,
                         **kwargs).prune(**prune_kwargs)
