"""Latency-budgeted channel pruning: widths chosen from a measured latency model.

`prune_for_latency(model, budget=0.5)` removes channels until the latency
predicted by a `LatencyModel` meets the budget, then builds the thin model
with `kprune.structured.ChannelPruner` (the same dependency graph, handlers,
importance and surgery), converts it and measures it.

The allocation is a greedy knapsack over the latency table (after HALP,
Shen et al. 2022): every prunable group starts whole; each step moves one
group to a smaller candidate width, the move that saves the most predicted
latency per unit of importance lost (the group's channel scores, normalised
by their mean, least important first), until the prediction is within the
budget. Moves may skip widths: measured latency is not monotone in width
(XNNPACK packs channels in tiles, so 48 channels can be slower than 64). Groups keep at least `1 - max_ratio` of
their channels; the model with every group there is the smallest latency
reachable, and a budget below it is refused. The candidate widths are the
latency model's (its `levels`, rounded to `round_to`), where every layer was
timed exactly.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from kprune.core import checks
from kprune.deploy.latency import LatencyModel, kept_counts
from kprune.structured.channel_pruner import ChannelPruner
from kprune.structured.iterative import prune_iteratively

__all__ = [
    "LatencyPlan",
    "LatencyResult",
    "allocate",
    "check_budget",
    "measure_result",
    "prune_for_latency",
]


def check_budget(budget=None, budget_ms=None):
    """Validates a latency budget: a fraction in (0, 1] or milliseconds > 0 (one of them).

    Returns:
        `(budget, budget_ms)` as floats (one of them None).
    """
    if (budget is None) == (budget_ms is None):
        raise ValueError(
            "Pass one latency budget: budget= (a fraction of the dense model's measured "
            "latency, in (0, 1]) or budget_ms= (milliseconds); got "
            f"budget={budget!r}, budget_ms={budget_ms!r}.")
    if budget is not None:
        budget = checks.check_float(
            "budget", budget, lo=0, hi=1, lo_inclusive=False,
            fix="It is a fraction of the dense model's latency, e.g. 0.5 for twice as fast; "
                "pass budget_ms= for milliseconds.")
        return budget, None
    return None, checks.check_float("budget_ms", budget_ms, lo=0, lo_inclusive=False)


@dataclasses.dataclass
class LatencyPlan:
    """The widths chosen for a latency budget.

    Attributes:
        kept: `{group index: kept channels}` for the groups that lose some.
        pruning_ratio: `{producer layer name: ratio}` for `ChannelPruner`
            or `kprune.structured.prune_iteratively`.
        predicted_ms: predicted latency with these widths.
        dense_ms: measured latency of the dense model.
        min_ms: the smallest predicted latency reachable (`max_ratio`).
        budget_ms: the budget in milliseconds.
        budget: the budget as a fraction of the dense latency (None when
            given in milliseconds).
    """

    kept: dict
    pruning_ratio: dict
    predicted_ms: float
    dense_ms: float
    min_ms: float
    budget_ms: float
    budget: float = None


@dataclasses.dataclass
class LatencyResult:
    """What `prune_for_latency` returns.

    Attributes:
        model: the thin Keras model.
        plan: the `LatencyPlan`.
        predicted_ms: predicted latency of the thin model (its actual widths).
        measured_ms: measured latency of its .tflite (None with `measure=False`).
        dense_ms: latency of the dense model (measured in the same comparison
            when the measurer is a `LiteRTMeasurer`).
        budget_ms: the budget in milliseconds (a fraction budget times the
            dense latency measured alongside the thin model).
        speedup: `dense_ms / measured_ms` (None if not measured).
        spread: `(min, max)` of the interleaved per-repetition speed-ups
            (LiteRT measurer only), else None.
        met: measured (else predicted) latency <= budget.
        missed_by: how much over the budget, as a fraction (0.0 when met).
    """

    model: object
    plan: LatencyPlan
    predicted_ms: float
    measured_ms: float
    dense_ms: float
    budget_ms: float
    speedup: float = None
    spread: tuple = None

    @property
    def met(self):
        """True when the measured (or, unmeasured, predicted) latency is within budget."""
        return self.missed_by == 0.0

    @property
    def missed_by(self):
        """Fraction by which the latency exceeds the budget (0.0 when met)."""
        ms = self.predicted_ms if self.measured_ms is None else self.measured_ms
        return max(0.0, ms / self.budget_ms - 1.0)

    def __str__(self):
        measured = "not measured" if self.measured_ms is None else f"measured {self.measured_ms:.3f} ms"
        speed = "" if self.speedup is None else f", {self.speedup:.2f}x faster than dense"
        if self.spread:
            speed += f" (min-max {self.spread[0]:.2f}-{self.spread[1]:.2f}x)"
        verdict = "MET" if self.met else f"MISSED by {100 * self.missed_by:.1f}%"
        return (f"latency budget {self.budget_ms:.3f} ms ({self.budget_ms / self.dense_ms:.2f}x of "
                f"dense {self.dense_ms:.3f} ms): predicted {self.predicted_ms:.3f} ms, {measured}"
                f"{speed}: {verdict}")


def _normalised_scores(pruner, group):
    s = np.asarray(pruner.importance(group), dtype=np.float64).reshape(-1)
    s = s[~group.frozen]
    mean = float(np.mean(s)) if s.size else 0.0
    return np.sort(s / mean) if mean > 0 else np.ones_like(s)


def allocate(latency_model, budget=None, budget_ms=None, importance="l1", max_ratio=0.875,
             pruner=None):
    """Chooses per-group widths that meet a latency budget (greedy knapsack).

    Args:
        latency_model: a `LatencyModel` of the model.
        budget: fraction of the dense model's measured latency, in (0, 1].
        budget_ms: or the budget in milliseconds.
        importance: channel importance (as in `ChannelPruner`).
        max_ratio: the largest fraction of a group's channels that may go.
        pruner: a `ChannelPruner` on `latency_model.graph`'s model to score
            with (default: made here).

    Returns:
        A `LatencyPlan`.

    Raises:
        ValueError: a bad budget, or one below the smallest reachable latency
            (the message names it).

    Example:
    >>> plan = kprune.deploy.allocate(LatencyModel(model), budget=0.5)
    >>> thin = ChannelPruner(model, pruning_ratio=plan.pruning_ratio).prune()
    """
    budget, budget_ms = check_budget(budget, budget_ms)
    max_ratio = checks.check_float("max_ratio", max_ratio, lo=0, hi=1, hi_inclusive=False)
    lat = latency_model
    if not isinstance(lat, LatencyModel):
        raise TypeError(f"latency_model must be a kprune.deploy.LatencyModel, got "
                        f"{checks.describe(lat)}.")
    target = budget_ms if budget_ms is not None else budget * lat.dense_ms
    pruner = pruner or ChannelPruner(lat.model, importance=importance, pruning_ratio=0.0)
    options = {}  # group -> kept counts, largest first (the latency model's candidates)
    losses = {}  # group -> cumulative importance lost at each option
    for g in lat.groups:
        frozen = int(g.frozen.sum())
        n = g.size - frozen
        low = max(frozen + max(1, int(np.ceil(n * (1.0 - max_ratio)))), pruner.min_channels)
        counts = [k for k in lat.options[g.index] if k >= low or k == g.size]
        if len(counts) < 2:
            continue
        scores = _normalised_scores(pruner, g)
        cum = np.concatenate([[0.0], np.cumsum(scores)])
        options[g.index] = counts
        losses[g.index] = [float(cum[g.size - k]) for k in counts]
    full = {gi: opts[0] for gi, opts in options.items()}
    min_ms = lat.predict({gi: opts[-1] for gi, opts in options.items()})
    if target < min_ms - 1e-12:
        asked = f"{budget:g} of the dense latency, " if budget is not None else ""
        raise ValueError(
            f"The latency budget {asked}{target:.4f} ms is below the smallest latency this model "
            f"can reach: {min_ms:.4f} ms ({min_ms / lat.dense_ms:.2f}x of the dense "
            f"{lat.dense_ms:.4f} ms, with every group pruned by max_ratio={max_ratio:g}). Pass a "
            f"budget of at least {min_ms / lat.dense_ms:.2f} (budget_ms={min_ms:.4f}), or raise "
            f"max_ratio.")
    state = {gi: 0 for gi in options}
    kept = dict(full)
    current = lat.predict(kept)
    while current > target:
        best, best_gain = None, -np.inf
        for gi, i in state.items():
            for j in range(i + 1, len(options[gi])):  # curves need not be monotone
                saved = current - lat.predict({**kept, gi: options[gi][j]})
                lost = losses[gi][j] - losses[gi][i]
                gain = saved / max(lost, 1e-9)
                if saved > 0 and gain > best_gain:
                    best, best_gain = (gi, j), gain
        if best is None:
            break
        gi, j = best
        state[gi] = j
        kept[gi] = options[gi][j]
        current = lat.predict(kept)
    by_index = {g.index: g for g in lat.groups}
    ratios = {}
    for gi, k in kept.items():
        g = by_index[gi]
        n = g.size - int(g.frozen.sum())
        r = (g.size - k) / n if n else 0.0
        if r > 0:
            for p in g.producers:
                ratios[p] = min(r, ratios.get(p, r))
    return LatencyPlan({gi: k for gi, k in kept.items() if k < full[gi]}, ratios, current,
                       lat.dense_ms, min_ms, target, budget)


def prune_for_latency(model, budget=None, budget_ms=None, latency_model=None, measurer=None,
                      cache_dir=None, importance="l1", max_ratio=0.875, round_to=8,
                      measure=True, steps=1, fine_tune=None, verbose=0, verify=True):
    """Prunes channels so that the model meets a latency budget on the target runtime.

    Args:
        model: a built functional or Sequential `keras.Model` (not modified).
        budget: fraction of the dense model's measured latency, in (0, 1]
            (0.5: twice as fast).
        budget_ms: or the budget in milliseconds.
        latency_model: a `LatencyModel` of `model` to reuse (default: built
            with `measurer` and `cache_dir`).
        measurer: callable `.tflite -> ms` (default `LiteRTMeasurer()`).
        cache_dir: latency cache folder (default `default_cache_dir()`).
        importance: channel importance (`"l1"`, `"l2"`, `"bn_scale"`, a
            `TaylorImportance`, ...), as in `ChannelPruner`.
        max_ratio: the largest fraction of a group's channels that may go.
        round_to: candidate kept channel counts are multiples of this
            (default 8; see `LatencyModel`), for a latency model built here.
        measure: convert the thin model and measure it (with the
            `LiteRTMeasurer`, interleaved with the dense file).
        steps: > 1 prunes in that many steps with `fine_tune` after each
            (`kprune.structured.prune_iteratively` with the chosen ratios).
        fine_tune: `fn(model, step) -> model or None`, for `steps > 1`.
        verbose: 1 prints the plan and the measured check.
        verify: check the thin model against the channel-zeroed original.

    Returns:
        A `LatencyResult` (`.model` is the thin model; `.met`, `.missed_by`,
        `.measured_ms`, `.predicted_ms`, `.speedup`). When the measured
        latency misses the budget a `UserWarning` says by how much.

    Raises:
        ValueError: a budget outside (0, 1], or below the smallest latency
            reachable (the message names it); the model is unchanged.

    Example:
    >>> result = kprune.deploy.prune_for_latency(model, budget=0.5)
    >>> print(result)            # predicted and measured latency, MET / MISSED
    >>> thin = result.model      # fine-tune it, then export
    """
    check_budget(budget, budget_ms)
    steps = checks.check_int("steps", steps, lo=1)
    checks.check_callable("fine_tune", fine_tune)
    if latency_model is None:
        latency_model = LatencyModel(model, measurer=measurer, cache_dir=cache_dir, round_to=round_to,
                                     verbose=verbose)
    elif latency_model.model is not model:
        raise ValueError("latency_model was built for another model; pass the LatencyModel of "
                         "this model object.")
    pruner = ChannelPruner(model, importance=importance, pruning_ratio=0.0,
                           ignored_layers=None)
    plan = allocate(latency_model, budget, budget_ms, importance=importance, max_ratio=max_ratio,
                    pruner=pruner)
    if not plan.pruning_ratio:
        thin, predicted = model, latency_model.dense_ms
    elif steps == 1:
        channel_plan = pruner.plan(pruning_ratio=plan.pruning_ratio)
        predicted = latency_model.predict(kept_counts(channel_plan))
        thin = pruner.prune(channel_plan, verify=verify)
    else:
        thin = prune_iteratively(model, pruning_ratio=plan.pruning_ratio, steps=steps,
                                 fine_tune=fine_tune, verify=verify, importance=importance)
        predicted = plan.predicted_ms
    if verbose:
        print(f"latency plan: {len(plan.pruning_ratio)} layers pruned, predicted "
              f"{predicted:.3f} ms for a budget of {plan.budget_ms:.3f} ms")
    result = LatencyResult(thin, plan, predicted, None, latency_model.dense_ms, plan.budget_ms)
    if measure:
        measure_result(result, model, latency_model.measurer)
        if not result.met:
            warnings.warn(f"The pruned model misses its latency budget: {result}", stacklevel=2)
    if verbose:
        print(result)
    return result


def measure_result(result, dense_model, measurer):
    """Converts the dense and the thin model and measures both into `result`.

    With a measurer that has a `compare(a, b)` method (`LiteRTMeasurer`) the
    two files are timed interleaved in one run; otherwise one after the
    other. A fraction budget is re-based on the dense latency measured here.
    """
    import tflite_export

    dense = tflite_export.convert(dense_model, sparsity="dense")
    thin = tflite_export.convert(result.model, sparsity="dense")
    if hasattr(measurer, "compare"):
        c = measurer.compare(dense, thin)
        result.dense_ms, result.measured_ms = c.a.median_ms, c.b.median_ms
        result.speedup, result.spread = c.speedup, (c.speedup_min, c.speedup_max)
    else:
        result.dense_ms, result.measured_ms = float(measurer(dense)), float(measurer(thin))
        result.speedup = result.dense_ms / result.measured_ms if result.measured_ms else None
    if result.plan.budget is not None:  # a fraction: of the dense latency measured alongside
        result.budget_ms = result.plan.budget * result.dense_ms
