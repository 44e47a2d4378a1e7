"""Magnitude pruning of one `[in, out]` matrix, and `select`: every one-shot
method's mask choice through the mask engine (`kprune.core.masking.compute_mask`),
with its tie and rounding rules."""

from __future__ import annotations

import numpy as np

from kprune.core import masking

__all__ = ["select", "magnitude"]


def select(scores, sparsity, granularity=None, in_length=None, per_output=False):
    """Keep-mask of a `[in, out]` score matrix, through the mask engine.

    Args:
        scores: `[in, out]` scores, higher = keep.
        sparsity: fraction to remove.
        granularity: `Unstructured` (default), `NM` or `Block`.
        in_length: length of the kernel's input axis (default `in`): N:M
            groups are `m` consecutive rows within each run of `in_length`
            rows (for a Conv kernel `[kh, kw, c_in, c_out]`, `c_in`).
        per_output: unstructured only: every output column keeps its own
            `round(in * (1 - sparsity))` weights (Wanda's comparison group)
            instead of one threshold over the matrix.

    Returns:
        A bool `[in, out]` mask.
    """
    scores = np.asarray(scores)
    granularity = masking.get_granularity(granularity)
    n_in, n_out = scores.shape
    if isinstance(granularity, masking.NM):
        length = n_in if in_length is None else int(in_length)
        grouped = scores.reshape(n_in // length, length, n_out)
        mask = masking.compute_mask(grouped, sparsity, granularity, masking.Layout(in_axis=1, out_axis=2))
        return mask.reshape(n_in, n_out)
    if isinstance(granularity, masking.Unstructured) and per_output:
        mask = np.empty(scores.shape, dtype=bool)
        for j in range(n_out):
            mask[:, j] = masking.compute_mask(scores[:, j], sparsity)
        return mask
    return masking.compute_mask(scores, sparsity, granularity, masking.DENSE_LAYOUT)


def magnitude(w, sparsity, granularity=None, in_length=None):
    """Magnitude pruning of one `[in, out]` matrix (one threshold per tensor).

    Returns:
        `(mask, w * mask)`.

    Example:
    >>> mask, w_new = magnitude(np.array([[1.0, -3.0], [2.0, 0.5]]), 0.5)
    >>> mask
    array([[False,  True],
           [ True, False]])
    """
    w = np.asarray(w, dtype=np.float64)
    mask = select(np.abs(w), sparsity, granularity, in_length)
    return mask, w * mask
