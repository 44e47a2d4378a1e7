"""Exact top-k selection: how many items a mask keeps, and which.

The selection rule of `kprune.core.masking` (written down in its module
docstring): `round(n * (1 - s))` items kept, higher scores first, ties kept
in C order (`numpy.argsort(-scores, kind="stable")[:k]`), NaN lowest. This
module finds the k-th largest score without a full sort: small inputs are
partitioned directly; large ones bracket it from a strided sample and
partition only the bracket; during training a `ThresholdHint` (kept in a
`SelectionMemo`) starts at the last threshold and partitions only the band
around it. Every bracket is verified by counting, so a hint changes the
time, never the result.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "DIRECT_SELECTION",
    "SelectionMemo",
    "ThresholdHint",
    "clean_scores",
    "kept_count",
    "select_many",
    "select_top_k",
    "select_top_k_many",
]


def kept_count(n, sparsity):
    """Number of items kept out of `n` at `sparsity`: `round(n * (1 - s))`.

    Rounding is half-to-even, like `numpy.round` and `tf.round`.
    """
    return int(np.round(n * (1.0 - float(sparsity))))


def clean_scores(scores):
    scores = np.asarray(scores)
    if scores.dtype.kind != "f":
        scores = scores.astype(np.float64)
    # `max` propagates NaN: one read-only pass finds whether there is any.
    if scores.size and np.isnan(scores.max()):
        scores = np.where(np.isnan(scores), -np.inf, scores)
    return scores


def select_top_k(scores, k, hint=None):
    """Boolean mask of the `k` highest scores, with the documented tie rule.

    Args:
        scores: array of any shape; it is treated in C (row-major) order.
        k: number of items to keep.
        hint: an optional `ThresholdHint` (see `select_top_k_many`).

    Returns:
        A bool array of the same shape with exactly `min(max(k, 0), size)`
        True entries.

    Example:
    >>> select_top_k(np.array([3.0, 1.0, 3.0, 2.0]), 2)
    array([ True, False,  True, False])
    """
    return select_top_k_many([scores], k, hint)[0]


#: Arrays with more entries than this find their threshold from a sample
#: first (see `_kth_largest`); smaller ones are partitioned directly.
DIRECT_SELECTION = 1 << 17


def select_top_k_many(arrays, k, hint=None):
    """`select_top_k` over several arrays at once, as if concatenated.

    The arrays are taken in order, each in C order, so the tie rule is that
    of `select_top_k(np.concatenate([a.ravel() for a in arrays]), k)`; but
    nothing is concatenated: the global threshold of `scope="global"` costs a
    few passes over the scores, in place.

    Args:
        arrays: a list of score arrays (any shapes).
        k: total number of items to keep.
        hint: an optional `ThresholdHint` holding the threshold of the
            previous selection over the same tensors (a training loop's last
            mask update). The search then starts in a narrow band around it:
            count the scores above the band, partition only the scores inside
            it (incremental selection). The hint changes the time, never the
            result: a band that does not hold the k-th score is widened, then
            abandoned for the sample-based search. The hint is updated.

    Returns:
        A list of bool arrays, one per input, with `min(max(k, 0), total)`
        True entries in all.
    """
    return select_many([clean_scores(a) for a in arrays], k, hint)


def select_many(arrays, k, hint=None):
    """`select_top_k_many` of arrays already cleaned (`_clean`: float, no NaN)."""
    flats = [a.reshape(-1) for a in arrays]
    n = sum(f.size for f in flats)
    k = int(k)
    if k >= n:
        return [np.ones(a.shape, dtype=bool) for a in arrays]
    if k <= 0:
        return [np.zeros(a.shape, dtype=bool) for a in arrays]
    threshold = _kth_largest(flats, k, n, hint)
    # Everything at or above the threshold, then the ties beyond the k-th
    # are dropped from the end (C order): for distinct scores there are none,
    # and this is one pass.
    keeps = [f >= threshold for f in flats]
    excess = sum(int(np.count_nonzero(m)) for m in keeps) - k
    for f, keep in zip(reversed(flats), reversed(keeps)):
        if excess <= 0:
            break
        excess -= _drop_last_equal(f, threshold, excess, keep)
    return [keep.reshape(a.shape) for keep, a in zip(keeps, arrays)]


def _drop_last_equal(flat, value, count, keep, chunk=1 << 20):
    """Clears `keep` at the last `count` entries of `flat` equal to `value`
    (C order), scanning backwards in chunks so that a large tie (the zeros of
    pruned weights) is never materialised as an index array. Returns how
    many."""
    dropped = 0
    for stop in range(flat.size, 0, -chunk):
        start = max(0, stop - chunk)
        ties = np.flatnonzero(flat[start:stop] == value)
        ties = ties[max(0, ties.size - (count - dropped)):]
        keep[start + ties] = False
        dropped += ties.size
        if dropped >= count:
            break
    return dropped


class ThresholdHint:
    """The threshold of the previous selection over the same tensors, and
    how far it moved: where an incremental selection looks first.

    A training loop's masks change little between two updates (a few
    optimizer steps), so neither does the k-th largest score. A hint makes
    `select_top_k_many` count the scores above a narrow band around the last
    threshold and partition only the band, instead of searching the whole
    range. Results never depend on it (see `select_top_k_many`).

    Attributes:
        value: the last threshold (None before the first selection).
        width: half the width of the first band tried next time.
    """

    __slots__ = ("value", "width")

    def __init__(self):
        self.value = None
        self.width = 0.0

    def update(self, value):
        value = float(value)
        if self.value is not None and np.isfinite(value) and np.isfinite(self.value):
            # Twice the last move: the next move is usually no larger.
            self.width = 2.0 * abs(value - self.value)
        self.value = value


class SelectionMemo:
    """`ThresholdHint`s by key: what a `Pruner` keeps between mask updates
    (one per tensor in layer scope, one for the global threshold).

    Example:
    >>> memo = SelectionMemo()
    >>> masks = compute_masks(scores, 0.8, memo=memo)  # later calls start near
    """

    def __init__(self):
        self._hints = {}

    def hint(self, key):
        """The hint for `key` (created empty on first use)."""
        hint = self._hints.get(key)
        if hint is None:
            hint = self._hints[key] = ThresholdHint()
        return hint


#: Bands grow this much per retry around a hint; after `_HINT_TRIES` bands
#: the search falls back to the sample-based bracket.
_HINT_GROWTH = 16.0
_HINT_TRIES = 3


def _kth_largest(flats, k, n, hint=None):
    """The k-th largest value (with multiplicity) of the 1-D arrays `flats`.

    Exact, in O(n) and without a sort. With a `hint`, bands around the last
    threshold are tried first (`_kth_near`). Small inputs are partitioned
    directly (introselect). Large ones bracket the value first from a
    strided sample of about `DIRECT_SELECTION` entries (its quantiles, with
    a margin of several binomial standard deviations), count the entries
    above the bracket, and partition only the entries inside it; a bracket
    that turns out not to contain the value (a pathological sample) falls
    back to the direct path, so the result never depends on the sample.

    Entries equal to the minimum (the zeros of already-pruned weights, often
    most of a tensor) are the last ones kept; introselect degrades on such
    heavy duplicates (numpy 2: ~15x slower on 25M floats with 80% zeros),
    so they are never handed to it.
    """
    value = None
    if hint is not None and hint.value is not None and np.isfinite(hint.value):
        value = _kth_near(flats, k, hint)
    if value is None and n > 4 * DIRECT_SELECTION:
        value = _kth_largest_bracketed(flats, k, n)
    if value is None:
        value = _kth_largest_direct(flats, k)
    if hint is not None:
        hint.update(value)
    return value


def _kth_largest_direct(flats, k):
    low = min(f.min() for f in flats if f.size)
    above = [f[f > low] for f in flats]
    n_above = sum(a.size for a in above)
    if k > n_above:
        return low
    candidates = np.concatenate(above) if len(above) > 1 else above[0]
    candidates.partition(n_above - k)
    return candidates[n_above - k]


def _kth_near(flats, k, hint):
    """The k-th largest value from bands around `hint.value`, or None."""
    center = hint.value
    if hint.width == 0.0:
        # It did not move last time (often a tie, e.g. the zeros): the
        # value itself, checked by counting.
        value = _kth_in_bracket(flats, k, center, center)
        if value is not None:
            return value
    low = min(f.min() for f in flats if f.size)
    width = max(hint.width, 1e-3 * abs(center), np.finfo(np.float32).tiny)
    for _ in range(_HINT_TRIES):
        # Never below the minimum: a tie there (the zeros of pruned weights)
        # is counted, not partitioned.
        value = _kth_in_bracket(flats, k, max(center - width, low), center + width)
        if value is not None:
            return value
        width *= _HINT_GROWTH
    return None


def _kth_largest_bracketed(flats, k, n):
    stride = max(1, n // DIRECT_SELECTION)
    sample = np.concatenate([f[::stride] for f in flats])
    m = sample.size
    rank = k * m / n  # expected rank of the value in the sample, from the top
    margin = 6.0 * np.sqrt(max(rank * (1.0 - rank / m), 1.0)) + 8.0
    top = int(min(m - 1, max(0, np.floor(rank - margin))))
    bottom = int(min(m - 1, max(0, np.ceil(rank + margin))))
    sample.partition([m - 1 - bottom, m - 1 - top])
    return _kth_in_bracket(flats, k, sample[m - 1 - bottom], sample[m - 1 - top])


#: Entries per chunk of the bracket scan: its temporaries stay in cache.
_SCAN_CHUNK = 1 << 18


def _scan_bracket(flats, lo, hi):
    """One chunked pass: the number of entries above `hi`, and the entries
    in `(lo, hi]`."""
    above, band = 0, []
    for f in flats:
        for start in range(0, f.size, _SCAN_CHUNK):
            c = f[start:start + _SCAN_CHUNK]
            gt_lo = c > lo
            n_gt_lo = int(np.count_nonzero(gt_lo))
            if not n_gt_lo:
                continue
            inside = gt_lo & (c <= hi)
            values = c[inside]
            above += n_gt_lo - values.size
            if values.size:
                band.append(values)
    return above, band


def _kth_in_bracket(flats, k, lo, hi):
    """The k-th largest value if it lies in `[lo, hi]`, else None.

    Counts the entries above `hi` and partitions only those in `(lo, hi]`;
    entries equal to `lo` are counted, not partitioned (`lo` is often the
    zero of pruned weights, most of the tensor).
    """
    if lo == hi:
        # Is it the value itself? Two counts, nothing to partition.
        above = sum(int(np.count_nonzero(f > hi)) for f in flats)
        at = sum(int(np.count_nonzero(f == hi)) for f in flats) if above < k else 0
        return hi if above < k <= above + at else None
    above_hi, band = _scan_bracket(flats, lo, hi)
    if above_hi >= k:
        return None
    inside = sum(b.size for b in band)
    if above_hi + inside < k:
        at_lo = sum(int(np.count_nonzero(f == lo)) for f in flats)
        return lo if above_hi + inside + at_lo >= k else None
    band = np.concatenate(band) if len(band) > 1 else band[0]
    j = k - above_hi  # the j-th largest inside the bracket
    band.partition(inside - j)
    return band[inside - j]
