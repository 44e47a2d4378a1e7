"""Pruning plans: which channels of which group are removed, and why.

`ChannelPruner.plan()` makes a `PruningPlan`; `kprune.structured.surgery`
turns a plan into a thinner (or a channel-zeroed) model.
"""

from __future__ import annotations

import dataclasses

from kprune.core import checks
from kprune.utils.table import format_table


__all__ = ["PruningPlan", "check_ratio"]


def check_ratio(value, name):
    """Validates a pruning ratio in [0, 1); returns it as a float (see
    `kprune.core.checks.check_sparsity`: numpy numbers accepted, bools refused)."""
    return checks.check_sparsity(name, value, what="channels")


@dataclasses.dataclass
class PruningPlan:
    """Which channels of which group are removed.

    Attributes:
        graph: the `DependencyGraph` the plan is for.
        removed: dict `group index -> bool array` (True = remove) per channel.
        widths: dict `producer layer path -> (before, after)` output widths
            (a layer inside a nested model is `"model_name/layer_name"`).
        notes: list of strings: groups left alone and why.
        inner: dict `layer path -> {hidden axis: (before, after)}`, e.g.
            `{"mha": {"heads": (8, 4)}}` for attention heads.

    Example:
    >>> plan = ChannelPruner(model, pruning_ratio=0.5).plan()
    >>> print(plan.report())
    >>> plan.approximate  # {group index: [reasons]} of approximate removals
    """

    graph: object
    removed: dict
    widths: dict
    notes: list
    inner: dict = dataclasses.field(default_factory=dict)

    @property
    def num_removed(self):
        """Total number of channels removed over all groups."""
        return int(sum(int(r.sum()) for r in self.removed.values()))

    @property
    def approximate(self):
        """`{group index: reasons}` of removed groups whose removal is approximate.

        Removing channels of these groups changes the kept channels' values
        (e.g. a LayerNormalization normalises over fewer channels), so the
        thin model is close to, not equal to, the channel-zeroed original.
        """
        by_index = {g.index: g for g in self.graph.groups}
        return {gi: list(by_index[gi].approximate) for gi, r in self.removed.items()
                if r.any() and by_index[gi].approximate}

    def subset(self, group_indices):
        """A plan that removes only the channels of `group_indices`."""
        keep = set(group_indices)
        return PruningPlan(self.graph, {gi: r for gi, r in self.removed.items() if gi in keep},
                           {}, [], {})

    def report(self):
        """A per-layer before/after width table, the notes and approximate groups."""
        rows = []
        for path, (b, a) in self.widths.items():
            layer_type = self.graph.layer_types.get(path, "?")
            extra = ", ".join(f"{k} {x} -> {y}" for k, (x, y) in self.inner.get(path, {}).items())
            rows.append((path, layer_type, str(b), str(a), extra))
        lines = [f"Channel pruning plan for {self.graph.model.name!r}: "
                 f"{self.num_removed} channels removed in "
                 f"{sum(1 for r in self.removed.values() if r.any())} groups."]
        lines.append(format_table(["layer", "type", "before", "after", "inner"], rows))
        lines.extend(self.notes)
        approx = self.approximate
        if approx:
            lines.append("Approximate groups (the thin model differs slightly from the "
                         "channel-zeroed original; fine-tune after pruning):")
            by_index = {g.index: g for g in self.graph.groups}
            for gi, reasons in approx.items():
                lines.append(f"  group {gi} {by_index[gi].producers}: {'; '.join(reasons)}")
        if self.graph.unknown_layers:
            lines.append("Layers not understood (their channels are kept):")
            lines.extend(f"  {n}: {why}" for n, why in self.graph.unknown_layers.items())
        return "\n".join(lines)

    def __str__(self):
        return self.report()
