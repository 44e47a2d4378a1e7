"""Depth pruning of KerasHub decoders: remove whole blocks (ShortGPT).

`prune_depth` ranks the decoder blocks by ShortGPT's block influence
(`1 - cos(x_in, x_out)` on calibration tokens), or takes the blocks to
remove from the caller, and returns a new backbone of the same class with
`num_layers` lowered and the kept blocks' weights copied in, in order. The
residual stream is kept, so the result is exactly the original with the
removed blocks replaced by the identity, wherever a block's computation does
not depend on its index.

Gemma3 with sliding-window attention is the exception: block `i` is local
(sliding window, RoPE base 10k) when `i % 6 < 5` and global otherwise, from
its index. By default (`pattern="periods"`) whole periods of 6 consecutive
blocks `6k .. 6k+5` are removed (ranked by their summed influence), which
keeps every remaining block's type, so the removal stays exact.
`pattern="any"` removes any blocks and warns with the kept blocks whose
attention type changes (those change their computation: the result is
approximate).
"""

from __future__ import annotations

import warnings

import numpy as np

from kprune.core import checks
from kprune.llm.architectures import family_of, split_model
from kprune.llm.importance import block_influence
from kprune.llm.surgery import rebuild, wrap_like

__all__ = ["pattern_changes", "prune_depth"]


def pattern_changes(family, config, kept):
    """Kept blocks whose Gemma3 attention type changes: `[(old, new, 'local->global'), ...]`."""
    if not family.pattern_active(config):
        return []
    out = []
    for new, old in enumerate(kept):
        was, now = family.is_local(old), family.is_local(new)
        if was != now:
            out.append((old, new, f"{'local' if was else 'global'}->{'local' if now else 'global'}"))
    return out


def _check_remove(remove, n):
    if isinstance(remove, (str, bytes)) or not hasattr(remove, "__iter__"):
        raise TypeError(f"remove must be a list of block indices, got {checks.describe(remove)}.")
    out = sorted({checks.check_int("remove[i]", r, lo=0) for r in remove})
    if out and out[-1] >= n:
        raise ValueError(f"remove lists block {out[-1]}, but the model has blocks 0..{n - 1}.")
    return out


def prune_depth(model, calibration=None, *, num_layers=None, remove=None, pattern="periods",
                batch_size=8, scores=None):
    """Removes whole decoder blocks; the result is the same class with fewer layers.

    Args:
        model: a KerasHub decoder backbone or `*CausalLM` (not modified).
        calibration: token ids for the block influence (see
            `kprune.llm.importance.token_batches`); not needed with `remove`
            or `scores`.
        num_layers: blocks to keep (at least 1).
        remove: explicit block indices to remove, instead of `num_layers`.
        pattern: Gemma3 with sliding-window attention only: `"periods"`
            (default) removes whole 6-block periods, `"any"` removes any
            blocks and warns about the attention types it changes.
        batch_size: calibration examples per forward pass.
        scores: precomputed `block_influence(...)` (one per block).

    Returns:
        A new backbone (or `*CausalLM`) with `num_layers` blocks.

    Raises:
        ValueError: nothing would be left, both or neither of `num_layers`
            and `remove` given, or (Gemma3, `pattern="periods"`) the removal
            is not a whole number of periods (the message gives the nearest
            valid depths).

    Example:
    >>> shallow = kprune.llm.prune_depth(causal_lm, token_ids[:64], num_layers=12)
    """
    backbone, causal_lm = split_model(model)
    family = family_of(backbone)
    config = backbone.get_config()
    n = config["num_layers"]
    checks.check_choice("pattern", pattern, ("periods", "any"))
    if (num_layers is None) == (remove is None):
        raise ValueError("prune_depth needs exactly one of num_layers (blocks to keep) or remove "
                         "(block indices to remove).")
    if remove is not None:
        remove = _check_remove(remove, n)
        keep_n = n - len(remove)
    else:
        keep_n = checks.check_int("num_layers", num_layers, lo=0)
        if keep_n > n:
            raise ValueError(f"num_layers={keep_n} is more than the model's {n}; pass at most {n}.")
    if keep_n < 1:
        raise ValueError(f"Depth pruning to {keep_n} blocks leaves no decoder; keep at least 1 of the "
                         f"{n} blocks (num_layers >= 1).")
    periodic = family.pattern_active(config) and pattern == "periods"
    period = family.pattern_period
    if periodic and (n - keep_n) % period:
        valid = [n - k * period for k in range(1, n // period + 1) if n - k * period >= 1]
        near = sorted(valid, key=lambda v: abs(v - keep_n))[:2]
        raise ValueError(
            f"{family.name} alternates {period - 1} sliding-window blocks and 1 global block by index; "
            f"pattern='periods' removes whole periods of {period} blocks, so {n - keep_n} blocks "
            f"cannot be removed. Nearest valid depths: num_layers={' or '.join(map(str, sorted(near))) or 'none'}; "
            f"or pass pattern='any' (changes the attention type of later blocks)."
        )
    if remove is None:
        if scores is None:
            if calibration is None:
                raise ValueError("prune_depth ranks blocks on calibration token ids: pass "
                                 "calibration=..., or remove=[block indices].")
            scores = block_influence(backbone, calibration, batch_size)
        scores = np.asarray(scores, np.float64)
        if scores.shape != (n,):
            raise ValueError(f"scores must hold one value per block ({n}), got shape {scores.shape}.")
        if periodic:
            full = n // period
            per = scores[:full * period].reshape(full, period).sum(1)
            drop = np.argsort(per, kind="stable")[:(n - keep_n) // period]
            remove = sorted(int(p) * period + j for p in drop for j in range(period))
        else:
            remove = sorted(int(i) for i in np.argsort(scores, kind="stable")[:n - keep_n])
    elif periodic:
        starts = [r for r in remove if r % period == 0]
        whole = all(all(s + j in remove for j in range(period)) for s in starts)
        if not whole or len(starts) * period != len(remove):
            raise ValueError(
                f"remove={remove} is not a set of whole {family.name} periods (blocks 6k..6k+5); "
                f"pass pattern='any' to remove them anyway (changes the attention type of later blocks)."
            )
    kept = [i for i in range(n) if i not in set(remove)]
    changes = pattern_changes(family, config, kept)
    if changes:
        listed = ", ".join(f"block {o} (now {w}) {c}" for o, w, c in changes)
        warnings.warn(
            f"prune_depth(pattern='any') on {family.name}: the attention type follows the block index, "
            f"so these kept blocks change type: {listed}. The result is approximate; distil it.",
            stacklevel=2,
        )
    new_config = dict(config, num_layers=len(kept))
    pruned = rebuild(backbone, family, new_config, {}, kept)
    return wrap_like(model, causal_lm, pruned)
