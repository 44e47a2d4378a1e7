"""The mask engine: the one place where importance scores become masks.

Every pruning method in kprune (magnitude pruning during `fit`, pruning at
initialisation, channel scoring for filter pruning) produces a *score* per
weight, where a higher score means "more important, keep". This module turns
those scores into binary keep-masks. Nothing else in kprune selects weights.

Two ideas are kept apart:

* **Granularity** says which weights are removed together. `Unstructured()`
  removes single weights, `Block((r, c))` removes whole blocks, `NM(n, m)`
  removes `n` of every `m` consecutive weights along the input axis, and
  `Channel()` removes whole output channels.
* **Scope** says over what the threshold is taken: `"layer"` gives every
  tensor its own threshold, `"global"` takes one threshold over all tensors.

Selection rule (documented, deterministic, exact):

* a tensor (or group set) of `n` items at sparsity `s` keeps exactly
  `round(n * (1 - s))` items, where `round` is round-half-to-even
  (`numpy.round`, the same rule as `tf.round`);
* items with higher scores are kept first;
* among items with *equal* scores, the one that comes first in C order
  (lower flat index) is kept first. This equals
  `numpy.argsort(-scores, kind="stable")[:k]`;
* NaN scores count as the lowest possible score.

The threshold is found by selection, never by a full sort: on large inputs
a sample brackets the k-th largest score, and only the scores inside the
bracket are partitioned (introselect, O(n)); see `select_top_k_many`.
During training, a `SelectionMemo` (kept with the model's `MaskAssigner`)
lets each update start at the last threshold: the scores above a narrow band
around it are counted, only the band is partitioned (incremental selection).
Every bracket is verified by counting, so hints change the time, never the
masks (docs/performance.md).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import inspect

import numpy as np

from kprune.core import checks
from kprune.core.selection import (
    SelectionMemo,
    ThresholdHint,
    clean_scores,
    kept_count,
    select_many,
    select_top_k,
    select_top_k_many,
)

__all__ = [
    "Layout",
    "Granularity",
    "Unstructured",
    "Block",
    "NM",
    "Channel",
    "kept_count",
    "select_top_k",
    "select_top_k_many",
    "ThresholdHint",
    "SelectionMemo",
    "compute_mask",
    "compute_masks",
    "get_granularity",
]


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where the input and output channels live in a weight tensor.

    Args:
        in_axis: axis of input channels (e.g. 0 for a Dense kernel
            `[in, out]`, -2 for a Conv2D kernel `[kh, kw, in, out]`), or None
            when the tensor has no input-channel axis.
        out_axis: axis of output channels/units (e.g. -1 for Dense and
            Conv2D, -2 for Conv2DTranspose), or None.
    """

    in_axis: int | None = 0
    out_axis: int | None = -1


DENSE_LAYOUT = Layout(in_axis=0, out_axis=-1)


# --------------------------------------------------------------------------
# Granularities
# --------------------------------------------------------------------------


class Granularity:
    """Base class: which weights are pruned together.

    A granularity splits a score tensor into *groups*. `group_scores` pools
    each group's scores into one number, and `expand` turns a keep-flag per
    group back into a full-size mask. The engine then selects groups with
    `select_top_k`. `NM` overrides `layer_mask` instead, since its rule is
    local to each group of `m` weights.
    """

    #: Whether `scope="global"` can compare this granularity across tensors.
    supports_global = True

    def validate(self, shape, layout=DENSE_LAYOUT, name="weight"):
        """Raise ValueError if this granularity cannot apply to `shape`."""

    def group_scores(self, scores, layout=DENSE_LAYOUT):
        """Returns `(pooled_scores, group_sizes)`: 1-D arrays, one per group."""
        raise NotImplementedError

    def expand(self, keep_groups, shape, layout=DENSE_LAYOUT):
        """Turns a bool array per group into a bool mask of `shape`."""
        raise NotImplementedError

    def layer_mask(self, scores, sparsity, layout=DENSE_LAYOUT, hint=None):
        """Mask for one tensor with its own threshold (layer scope).

        `hint`: an optional `ThresholdHint` for the selection of groups (it
        changes the time, never the result)."""
        pooled, _ = self.group_scores(scores, layout)
        keep = select_top_k(pooled, kept_count(pooled.size, sparsity), hint)
        return self.expand(keep, np.shape(scores), layout)

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash((type(self).__name__, tuple(sorted(self.get_config().items()))))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class Unstructured(Granularity):
    """Prune individual weights (the default).

    Example:
    >>> Unstructured().layer_mask(np.array([0.1, 0.5, 0.3, 0.2]), 0.5)
    array([False,  True,  True, False])
    """

    def group_scores(self, scores, layout=DENSE_LAYOUT):
        flat = clean_scores(scores).reshape(-1)
        return flat, None

    def expand(self, keep_groups, shape, layout=DENSE_LAYOUT):
        return np.asarray(keep_groups, dtype=bool).reshape(shape)

    def layer_mask(self, scores, sparsity, layout=DENSE_LAYOUT, hint=None):
        scores = np.asarray(scores)
        return select_top_k(scores, kept_count(scores.size, sparsity), hint)


def _as_matrix(shape):
    """Rows/cols of the 2-D view of a kernel: `[prod(shape[:-1]), shape[-1]]`."""
    if len(shape) < 2:
        return None
    return int(np.prod(shape[:-1])), int(shape[-1])


class Block(Granularity):
    """Prune whole `(r, c)` blocks of a kernel.

    The kernel is viewed as the 2-D matrix `[prod(shape[:-1]), shape[-1]]`
    (Dense: `[in, out]`; Conv: `[kh*kw*in, out]`, the im2col view). Each block
    is scored by pooling the scores inside it (`pool="mean"` or `"max"`).
    Edge blocks, when a dimension is not a multiple of the block, are smaller
    and are pooled over the weights they have.

    For a Dense layer, `Block((4, 1))` in the Keras `[in, out]` kernel is
    TFLite's 1x4 block in its `[out, in]` layout: the pattern TFLite's sparse
    FullyConnected kernel runs fast. For int8, use `Block((16, 1))`.

    Args:
        block_shape: `(r, c)`, both positive integers.
        pool: `"mean"` or `"max"`.

    Example:
    >>> kprune.prune_low_magnitude(model, granularity=kprune.Block((4, 1)))
    """

    def __init__(self, block_shape=(4, 1), pool="mean"):
        if not isinstance(block_shape, (tuple, list)):
            raise TypeError(
                f"Block: block_shape must be a pair of positive integers (r, c), "
                f"e.g. Block((4, 1)), got {block_shape!r}."
            )
        block_shape = tuple(block_shape)
        if len(block_shape) != 2 or not all(
            isinstance(b, (int, np.integer)) and not isinstance(b, (bool, np.bool_)) and b >= 1
            for b in block_shape
        ):
            raise ValueError(
                f"Block: block_shape must be two positive integers (r, c), "
                f"got {block_shape!r}."
            )
        if pool not in ("mean", "max"):
            raise ValueError(f"Block: pool must be 'mean' or 'max', got {pool!r}.")
        self.block_shape = tuple(int(b) for b in block_shape)
        self.pool = pool

    def validate(self, shape, layout=DENSE_LAYOUT, name="weight"):
        mat = _as_matrix(shape)
        if mat is None:
            raise ValueError(
                f"Block{self.block_shape} needs a kernel of rank >= 2, but "
                f"{name} has shape {tuple(shape)}."
            )
        r, c = self.block_shape
        if r > mat[0] or c > mat[1]:
            raise ValueError(
                f"Block{self.block_shape} is larger than {name}, whose 2-D "
                f"view [prod(shape[:-1]), shape[-1]] is {mat} (shape "
                f"{tuple(shape)})."
            )

    def _padded(self, scores):
        rows, cols = _as_matrix(scores.shape)
        r, c = self.block_shape
        br, bc = -(-rows // r), -(-cols // c)
        mat = scores.reshape(rows, cols)
        pad = np.full((br * r, bc * c), np.nan, dtype=np.float64)
        pad[:rows, :cols] = mat
        return pad.reshape(br, r, bc, c), (rows, cols, br, bc)

    def group_scores(self, scores, layout=DENSE_LAYOUT):
        scores = clean_scores(scores)
        blocks, (rows, cols, br, bc) = self._padded(scores)
        if self.pool == "mean":
            pooled = np.nanmean(blocks, axis=(1, 3))
        else:
            pooled = np.nanmax(blocks, axis=(1, 3))
        r, c = self.block_shape
        sizes = np.outer(
            np.minimum(r, rows - r * np.arange(br)), np.minimum(c, cols - c * np.arange(bc))
        )
        return pooled.reshape(-1), sizes.reshape(-1)

    def expand(self, keep_groups, shape, layout=DENSE_LAYOUT):
        rows, cols = _as_matrix(shape)
        r, c = self.block_shape
        br, bc = -(-rows // r), -(-cols // c)
        keep = np.asarray(keep_groups, dtype=bool).reshape(br, bc)
        full = np.repeat(np.repeat(keep, r, axis=0), c, axis=1)[:rows, :cols]
        return full.reshape(shape)

    def get_config(self):
        return {"block_shape": self.block_shape, "pool": self.pool}


class NM(Granularity):
    """N:M sparsity: at least `n` zeros in every `m` consecutive weights.

    Groups run along the input-channel axis (`layout.in_axis`), which is the
    contiguous axis of TFLite's `[out, ..., in]` layout (tfmot's
    `sparsity_m_by_n`). Within each group the lowest scores are zeroed.

    The number of zeros per group follows the schedule: at sparsity `s` it is
    `min(n, round(s * m))`, so a schedule that ends at `n / m` ends exactly at
    the N:M pattern. When the input axis is not a multiple of `m`, the last
    (tail) group of `t < m` weights gets `min(t, round(z * t / m))` zeros,
    i.e. the same proportion.

    Args:
        n: zeros per group, `1 <= n < m`.
        m: group length.

    Example:
    >>> kprune.prune_low_magnitude(
    ...     model, kprune.ConstantSparsity(0.5), granularity=kprune.NM(2, 4))
    """

    supports_global = False

    def __init__(self, n=2, m=4):
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in (n, m)):
            raise TypeError(f"NM: n and m must be integers, got n={n!r}, m={m!r}.")
        if not 1 <= n < m:
            raise ValueError(f"NM: need 1 <= n < m, got n={n}, m={m}.")
        self.n, self.m = int(n), int(m)

    def validate(self, shape, layout=DENSE_LAYOUT, name="weight"):
        if layout.in_axis is None:
            raise ValueError(f"NM({self.n}, {self.m}) needs an input-channel axis; {name} has none.")
        length = shape[layout.in_axis]
        if length < self.m:
            raise ValueError(
                f"NM({self.n}, {self.m}) needs at least m={self.m} weights along "
                f"the input axis of {name}, which has {length} (shape {tuple(shape)})."
            )

    def zeros_per_group(self, sparsity):
        return min(self.n, int(np.round(float(sparsity) * self.m)))

    def layer_mask(self, scores, sparsity, layout=DENSE_LAYOUT, hint=None):
        # The rule is local to each group of m: there is no threshold to hint.
        scores = clean_scores(scores)
        z = self.zeros_per_group(sparsity)
        moved = np.moveaxis(scores, layout.in_axis, -1)
        length = moved.shape[-1]
        keep = np.ones(moved.shape, dtype=bool)
        full = (length // self.m) * self.m
        if z > 0 and full:
            groups = moved[..., :full].reshape(moved.shape[:-1] + (full // self.m, self.m))
            keep[..., :full] = _keep_top_along_last(groups, self.m - z).reshape(
                moved.shape[:-1] + (full,)
            )
        tail = length - full
        if tail:
            zt = min(tail, int(np.round(z * tail / self.m)))
            if zt > 0:
                keep[..., full:] = _keep_top_along_last(moved[..., full:], tail - zt)
        return np.moveaxis(keep, -1, layout.in_axis)

    def get_config(self):
        return {"n": self.n, "m": self.m}


#: Groups up to this length are ranked by pairwise comparison (O(m) passes
#: over the tensor, no per-group sort); longer ones by a stable argsort.
_PAIRWISE_RANK = 16


def _keep_top_along_last(values, k):
    """Keep the k highest along the last axis; ties keep the earlier index."""
    m = values.shape[-1]
    if m <= _PAIRWISE_RANK:
        # The rank of entry i is the number of entries j that come before it:
        # v_j > v_i, or v_j == v_i with j < i (the stable order). Keep rank < k.
        rank = np.zeros(values.shape, np.int8 if m < 128 else np.int16)
        for j in range(m):
            vj = values[..., j:j + 1]
            beats = vj > values
            beats[..., j + 1:] |= vj == values[..., j + 1:]
            rank += beats
        return rank < k
    # A stable argsort of the negated values puts the highest first and, among
    # equals, the lower index first. The last axis is short (m), so this is a
    # sort of m items per group, not of the tensor.
    order = np.argsort(-values, axis=-1, kind="stable")
    keep = np.zeros(values.shape, dtype=bool)
    np.put_along_axis(keep, order[..., :k], True, axis=-1)
    return keep


class Channel(Granularity):
    """Prune whole output channels (filters or units) by their norm.

    The score of a channel is the L1 norm (`sum |s|`) or the L2 norm
    (`sqrt(sum s^2)`) of its scores over every axis but `layout.out_axis`.
    With magnitude pruning the scores are `|w|`, so these are the filter
    norms of Li et al. (2017). Filter pruning (`kprune.structured`) reads the
    resulting zero channels.

    Args:
        norm: `"l1"` or `"l2"`.

    Example:
    >>> kprune.prune_low_magnitude(model, granularity=kprune.Channel("l2"))
    """

    def __init__(self, norm="l2"):
        if norm not in ("l1", "l2"):
            raise ValueError(f"Channel: norm must be 'l1' or 'l2', got {norm!r}.")
        self.norm = norm

    def validate(self, shape, layout=DENSE_LAYOUT, name="weight"):
        if layout.out_axis is None:
            raise ValueError(
                f"Channel granularity needs an output-channel axis; {name} "
                f"(shape {tuple(shape)}) has none."
            )

    def group_scores(self, scores, layout=DENSE_LAYOUT):
        scores = clean_scores(scores)
        moved = np.moveaxis(scores, layout.out_axis, -1).reshape(-1, scores.shape[layout.out_axis])
        if self.norm == "l1":
            pooled = np.abs(moved).sum(axis=0)
        else:
            pooled = np.sqrt(np.square(moved).sum(axis=0))
        sizes = np.full(pooled.shape, moved.shape[0])
        return pooled, sizes

    def expand(self, keep_groups, shape, layout=DENSE_LAYOUT):
        keep = np.asarray(keep_groups, dtype=bool)
        view = [1] * len(shape)
        view[layout.out_axis] = shape[layout.out_axis]
        return np.broadcast_to(keep.reshape(view), shape).copy()

    def get_config(self):
        return {"norm": self.norm}


_GRANULARITIES = {
    "unstructured": Unstructured,
    "block": Block,
    "nm": NM,
    "channel": Channel,
}


def get_granularity(identifier):
    """Returns a Granularity from an instance, a name, or a config dict.

    Args:
        identifier: a `Granularity`; `None` or one of the strings
            `"unstructured"` (`Unstructured()`), `"block"` (`Block((4, 1))`),
            `"nm"` (`NM(2, 4)`), `"channel"` (`Channel("l2")`), in any case;
            or `{"class_name": ..., "config": {...}}` as written by
            `serialize_granularity`.

    Returns:
        A `Granularity` instance.

    Raises:
        ValueError: anything else; the message lists every accepted string.

    Example:
    >>> get_granularity("nm")
    NM(n=2, m=4)
    """
    if identifier is None:
        return Unstructured()
    if isinstance(identifier, Granularity):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _GRANULARITIES:
        return _GRANULARITIES[identifier.lower()]()
    if isinstance(identifier, dict) and "class_name" in identifier:
        cls = _GRANULARITIES.get(identifier["class_name"].lower())
        if cls is not None:
            return cls.from_config(identifier.get("config", {}))
    names = ", ".join(repr(n) for n in _GRANULARITIES)
    raise ValueError(
        f"granularity must be a kprune.Granularity (kprune.Unstructured(), "
        f"kprune.Block((r, c)), kprune.NM(n, m), kprune.Channel(norm)), None, or one of "
        f"the strings {names} (meaning Unstructured(), Block((4, 1)), NM(2, 4), "
        f"Channel('l2')); got {identifier!r}."
    )


def serialize_granularity(granularity):
    return {"class_name": type(granularity).__name__, "config": granularity.get_config()}


# --------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------


def compute_mask(scores, sparsity, granularity=None, layout=DENSE_LAYOUT):
    """Keep-mask for one tensor, with its own threshold (layer scope).

    Args:
        scores: importance per weight (higher = keep), any shape.
        sparsity: fraction to remove, in [0, 1).
        granularity: a `Granularity` (default `Unstructured()`).
        layout: the tensor's `Layout`.

    Returns:
        A bool numpy array of `scores.shape`.
    """
    granularity = get_granularity(granularity)
    sparsity = checks.check_sparsity("sparsity", sparsity)
    return granularity.layer_mask(_check_scores("scores", scores), sparsity, layout)


def _check_scores(name, scores):
    """Scores as a numeric numpy array (NaN allowed: it ranks lowest)."""
    arr = np.asarray(scores)
    if arr.dtype.kind not in "fiub":
        raise TypeError(
            f"{name} must be a numeric array (higher = keep), got "
            f"{checks.describe(scores)} of dtype {arr.dtype}."
        )
    return arr


def lamp_scores(scores):
    """LAMP normalisation (Lee et al. 2021) of one tensor's scores.

    Each score `s_u` becomes `s_u^2 / sum_{v: s_v >= s_u} s_v^2`, which makes
    scores comparable across layers for a global threshold. The largest score
    of every tensor maps to 1, so a global threshold below 1 never empties a
    tensor.
    """
    flat = clean_scores(scores).reshape(-1).astype(np.float64)
    sq = np.square(flat)
    order = np.argsort(sq, kind="stable")  # ascending
    sorted_sq = sq[order]
    # suffix sums: sum over v with rank >= rank(u)
    suffix = np.cumsum(sorted_sq[::-1])[::-1]
    out = np.empty_like(sq)
    with np.errstate(divide="ignore", invalid="ignore"):
        out[order] = np.where(suffix > 0, sorted_sq / suffix, 0.0)
    return out.reshape(np.shape(scores))


def compute_masks(
    scores,
    sparsity,
    granularity=None,
    layouts=None,
    scope="layer",
    normalize=None,
    min_keep=1,
    memo=None,
):
    """Keep-masks for many tensors: the engine every pruning method calls.

    Args:
        scores: dict `key -> score array` (higher = keep).
        sparsity: float, or dict `key -> float`. In global scope, a dict entry
            overrides the global threshold for that tensor (it gets its own
            layer-scope mask at that sparsity), and the float applies to the
            rest.
        granularity: one `Granularity` for all, or dict `key -> Granularity`.
        layouts: dict `key -> Layout` (default: Dense layout `[in, out]`).
        scope: `"layer"` (a threshold per tensor) or `"global"` (one threshold
            over every tensor not overridden).
        normalize: global scope only: `None` compares raw scores, `"lamp"`
            applies LAMP per tensor first.
        min_keep: global scope only: every tensor keeps at least this many
            groups, so no layer is emptied (layer collapse).
        memo: an optional `SelectionMemo` kept between calls on the same
            tensors (a training loop's mask updates): each selection starts
            near its last threshold (incremental selection). The masks are
            the same with or without it.

    Returns:
        dict `key -> bool numpy array`, the same shapes as `scores`.
    """
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}.")
    if normalize not in (None, "lamp"):
        raise ValueError(f"normalize must be None or 'lamp', got {normalize!r}.")
    if not isinstance(scores, collections.abc.Mapping):
        raise TypeError(
            f"scores must be a dict {{key: score array}}, got {checks.describe(scores)}; "
            f"for one tensor use kprune.compute_mask(scores, sparsity)."
        )
    min_keep = checks.check_int("min_keep", min_keep, lo=0)
    if isinstance(sparsity, collections.abc.Mapping):
        extra = [k for k in sparsity if k not in scores]
        if extra:
            raise ValueError(
                f"sparsity has key(s) {extra[:10]} that are not in scores "
                f"(keys {list(scores)[:10]}); check the keys."
            )
        sparsity = {k: None if v is None else checks.check_sparsity(f"sparsity[{k!r}]", v)
                    for k, v in sparsity.items()}
    else:
        sparsity = checks.check_sparsity("sparsity", sparsity)
    scores = {k: _check_scores(f"scores[{k!r}]", v) for k, v in scores.items()}
    keys = list(scores)
    layouts = layouts or {}
    gran = {
        k: get_granularity(granularity.get(k) if isinstance(granularity, dict) else granularity)
        for k in keys
    }
    per_key = sparsity if isinstance(sparsity, dict) else {}
    default = None if isinstance(sparsity, dict) else float(sparsity)

    masks = {}
    global_keys = []
    for k in keys:
        s = per_key.get(k, default)
        if s is None:
            raise ValueError(f"No sparsity given for {k!r}.")
        if scope == "layer" or k in per_key or not gran[k].supports_global:
            masks[k] = gran[k].layer_mask(
                np.asarray(scores[k]), s, layouts.get(k, DENSE_LAYOUT),
                **_hint_kwargs(gran[k], memo, k))
        else:
            global_keys.append(k)
    if global_keys:
        masks.update(
            _global_masks(
                {k: scores[k] for k in global_keys},
                default,
                gran,
                layouts,
                normalize,
                min_keep,
                None if memo is None else memo.hint(_GLOBAL_KEY),
            )
        )
    return {k: masks[k] for k in keys}


#: The memo key of the global threshold (no tensor key is this object).
_GLOBAL_KEY = object()


def _hint_kwargs(granularity, memo, key):
    """`{"hint": ...}` for a granularity whose `layer_mask` takes one (the
    built-in ones; a user's subclass may predate the argument)."""
    if memo is None or not _takes_hint(type(granularity)):
        return {}
    return {"hint": memo.hint(key)}


@functools.cache
def _takes_hint(cls):
    return "hint" in inspect.signature(cls.layer_mask).parameters


def _global_masks(scores, sparsity, gran, layouts, normalize, min_keep, hint=None):
    pooled, sizes = {}, {}
    for k, s in scores.items():
        layout = layouts.get(k, DENSE_LAYOUT)
        p, z = gran[k].group_scores(np.asarray(s), layout)
        if normalize == "lamp":
            p = lamp_scores(p)
        pooled[k] = p
        # None means "every group is one weight" (saves a full-size array).
        sizes[k] = None if z is None else np.asarray(z, np.int64)

    total = sum(pooled[k].size if z is None else int(z.sum()) for k, z in sizes.items())
    budget = kept_count(total, sparsity)
    if all(z is None for z in sizes.values()):
        # One threshold over all tensors, without concatenating them. When
        # every tensor keeps at least `min_keep` items this IS the reserved
        # selection below: each tensor's best `min_keep` items are then among
        # the global top `budget` (the tie rule orders them the same way).
        keys = list(pooled)
        if normalize is None and all(type(gran[k]) is Unstructured for k in keys):
            # Unstructured.group_scores cleaned them: no second NaN pass.
            chosen = select_many([pooled[k] for k in keys], budget, hint)
        else:
            chosen = select_top_k_many([pooled[k] for k in keys], budget, hint)
        if all(int(np.count_nonzero(c)) >= min(min_keep, c.size) for c in chosen):
            return {
                k: gran[k].expand(c, np.shape(scores[k]), layouts.get(k, DENSE_LAYOUT))
                for k, c in zip(keys, chosen)
            }
    keep = {k: np.zeros(p.shape, dtype=bool) for k, p in pooled.items()}

    # Layer-collapse guard: reserve each tensor's best `min_keep` groups.
    reserved = 0
    if min_keep > 0:
        for k, p in pooled.items():
            r = select_top_k(p, min(min_keep, p.size))
            keep[k] |= r
            reserved += int(np.count_nonzero(r)) if sizes[k] is None else int(sizes[k][r].sum())

    remaining = budget - reserved
    if remaining > 0:
        cand_keys = list(pooled)
        flat = np.concatenate([pooled[k] for k in cand_keys])
        reserved_flat = np.concatenate([keep[k] for k in cand_keys])
        if all(sizes[k] is None for k in cand_keys):
            # Reserved items score +inf, so they are taken first and the
            # top `budget` are the reserved ones plus the best `remaining`
            # others. (Marking them -inf instead would make a large tie at
            # the minimum next to the zeros of pruned weights, which slows
            # the selection down; see select_top_k.)
            flat[reserved_flat] = np.inf
            chosen = select_top_k(flat, remaining + int(reserved_flat.sum()))
        else:
            flat_sizes = np.concatenate([
                np.ones(pooled[k].shape, np.int64) if sizes[k] is None else sizes[k]
                for k in cand_keys
            ])
            chosen = _select_weighted(flat, flat_sizes, remaining, ~reserved_flat)
        offset = 0
        for k in cand_keys:
            n = pooled[k].size
            keep[k] |= chosen[offset:offset + n]
            offset += n

    return {
        k: gran[k].expand(keep[k], np.shape(scores[k]), layouts.get(k, DENSE_LAYOUT))
        for k in pooled
    }


def _select_weighted(scores, sizes, budget, eligible):
    """Take groups by descending score until their total size is nearest budget.

    Groups (blocks, channels) differ in size, so the budget in weights is met
    to within half a group: after the groups whose running total stays below
    `budget`, the next group is taken if that lands closer to `budget`.
    """
    idx = np.flatnonzero(eligible)
    order = idx[np.argsort(-scores[idx], kind="stable")]
    cum = np.cumsum(sizes[order])
    n = int(np.searchsorted(cum, budget, side="left"))  # first with cum >= budget
    if n >= cum.size:
        take = cum.size
    else:
        below = cum[n - 1] if n > 0 else 0
        take = n + 1 if cum[n] - budget <= budget - below else n
    chosen = np.zeros(scores.shape, dtype=bool)
    chosen[order[:take]] = True
    return chosen
