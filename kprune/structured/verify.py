"""Self-verification: the thin model must compute what the masked model computes.

`ChannelPruner.prune()` runs `verify_plan` by default: it feeds one random
batch to the thin model and to the channel-zeroed original and raises
`PruningVerificationError` (naming the groups at fault and the difference)
when they differ by more than `tolerance` (relative to the largest output).
Groups the plan marks approximate (e.g. LayerNormalization statistics over
removed channels) are left out of the check, and listed in the report.
"""

from __future__ import annotations

import keras
import numpy as np

from kprune.structured import surgery

__all__ = ["PruningVerificationError", "random_inputs", "relative_difference", "verify_plan"]


class PruningVerificationError(RuntimeError):
    """The thin model does not compute what the channel-zeroed model computes.

    Attributes:
        groups: `{group index: relative difference}` of the groups found at
            fault (each checked alone).
        difference: the relative difference of the whole plan.
    """

    def __init__(self, message, groups=None, difference=None):
        super().__init__(message)
        self.groups = groups or {}
        self.difference = difference


def random_inputs(model, input_shape=None, batch_size=2, seed=0):
    """A random batch for `model`'s inputs.

    Args:
        model: a functional or Sequential model.
        input_shape: shape (without batch) to use for an input whose shape has
            unknown dimensions, or a list of them (one per input). Unknown
            dimensions without `input_shape` are given the size 32.
        batch_size: the batch size.
        seed: random seed.

    Returns:
        A numpy array, or a list of arrays for a multi-input model. Integer
        inputs (token ids, masks) get 0s and 1s.
    """
    rng = np.random.default_rng(seed)
    shapes = input_shape
    if shapes is not None and (not shapes or not isinstance(shapes[0], (list, tuple))):
        shapes = [shapes] * len(model.inputs)
    xs = []
    for i, t in enumerate(model.inputs):
        shape = list(t.shape[1:])
        if shapes is not None and shapes[i] is not None:
            shape = list(shapes[i])
        shape = [32 if d is None else int(d) for d in shape]
        if "int" in str(t.dtype) or "bool" in str(t.dtype):
            xs.append(rng.integers(0, 2, [batch_size] + shape).astype(str(t.dtype)))
        else:
            xs.append(rng.uniform(-1, 1, [batch_size] + shape).astype("float32"))
    return xs if len(xs) > 1 else xs[0]


def _outputs(model, x):
    y = model(x, training=False)
    if isinstance(y, dict):
        y = [y[k] for k in sorted(y)]
    ys = y if isinstance(y, (list, tuple)) else [y]
    return [keras.ops.convert_to_numpy(v).astype(np.float64) for v in ys]


def relative_difference(a_model, b_model, x):
    """`max |a - b| / max(max |b|, 1e-6)` over all outputs of two models on `x`."""
    worst = 0.0
    for a, b in zip(_outputs(a_model, x), _outputs(b_model, x)):
        if a.shape != b.shape:
            return float("inf")
        scale = max(float(np.abs(b).max()) if b.size else 0.0, 1e-6)
        worst = max(worst, float(np.abs(a - b).max()) / scale if a.size else 0.0)
    return worst


def verify_plan(graph, plan, thin=None, tolerance=1e-4, input_shape=None,
                custom_objects=None, max_culprits=16):
    """Checks that pruning `plan` is exact (outside its approximate groups).

    Args:
        graph: the `DependencyGraph`.
        plan: the `PruningPlan`.
        thin: the thin model of `plan`, if already built.
        tolerance: largest relative difference allowed.
        input_shape: see `random_inputs`.
        custom_objects: as for `ChannelPruner`.
        max_culprits: how many groups to check one by one on failure.

    Returns:
        The relative difference found (0.0 when nothing exact is removed).

    Raises:
        PruningVerificationError: naming the groups at fault.
    """
    approx = plan.approximate
    exact = [gi for gi, r in plan.removed.items() if r.any() and gi not in approx]
    if not exact:
        return 0.0
    sub = plan if not approx else plan.subset(exact)
    if approx or thin is None:
        thin = surgery.build_thin_model(graph, sub, custom_objects)
    masked = surgery.build_masked_model(graph, sub, custom_objects)
    x = random_inputs(graph.model, input_shape)
    diff = relative_difference(thin, masked, x)
    if diff <= tolerance:
        return diff
    by_index = {g.index: g for g in graph.groups}
    culprits = {}
    for gi in exact[:max_culprits]:
        one = plan.subset([gi])
        d = relative_difference(surgery.build_thin_model(graph, one, custom_objects),
                                surgery.build_masked_model(graph, one, custom_objects), x)
        if d > tolerance:
            culprits[gi] = d
    named = "; ".join(
        f"group {gi} (producers {by_index[gi].producers}, layers "
        f"{sorted({m.layer_path for m in by_index[gi].members})[:6]}): {d:.2e}"
        for gi, d in culprits.items()) or (
        f"no single group among the first {min(len(exact), max_culprits)} checked")
    raise PruningVerificationError(
        f"The pruned model of {graph.model.name!r} differs from the channel-zeroed original "
        f"by {diff:.2e} (relative; tolerance {tolerance:.0e}). At fault: {named}. This is a "
        f"kprune bug or a custom handler's mistake; pass ignored_layers=[...] to keep "
        f"those layers whole, or verify=False to skip this check.",
        groups=culprits, difference=diff)
