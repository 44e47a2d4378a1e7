"""Wanda (Sun et al., ICLR 2024) on one `[in, out]` matrix: score
`|W_ij| * ||X_i||_2`, compared within each output unit (the paper's default),
over the whole kernel, or within N:M groups / blocks; kept weights unchanged."""

from __future__ import annotations

import numpy as np

from kprune.methods.one_shot.magnitude import select

__all__ = ["wanda_scores", "wanda"]


def wanda_scores(w, sq_norms):
    """Wanda's scores `|W_ij| * ||X_i||_2` for an `[in, out]` matrix.

    Args:
        w: `[in, out]` weights.
        sq_norms: `[in]`, `sum over rows of x_i^2` (the squared L2 norm of
            every input feature over the calibration data).
    """
    norms = np.sqrt(np.asarray(sq_norms, dtype=np.float64))
    return np.abs(np.asarray(w, dtype=np.float64)) * norms[:, None]


def wanda(w, sq_norms, sparsity, granularity=None, in_length=None, per_output=True):
    """Wanda (Sun et al. 2024) on one `[in, out]` matrix.

    Unstructured: each output column keeps its `round(in * (1 - s))` best
    scores. N:M and Block: the engine's groups. Kept weights are unchanged.

    Args:
        w: `[in, out]` weights.
        sq_norms: `[in]` sums of squared inputs (or the diagonal of `X^T X`).
        sparsity, granularity, in_length: as for `select`.
        per_output: unstructured only: compare within each output unit (the
            paper's default) or, if False, over the whole matrix.

    Returns:
        `(mask, w * mask)`.

    Example:
    >>> x = np.random.randn(64, 8); w = np.random.randn(8, 4)
    >>> mask, w_new = wanda(w, (x ** 2).sum(0), 0.5)
    >>> mask.sum(axis=0)
    array([4, 4, 4, 4])
    """
    w = np.asarray(w, dtype=np.float64)
    sq = np.asarray(sq_norms, dtype=np.float64)
    if sq.ndim == 2:
        sq = np.diag(sq)
    mask = select(wanda_scores(w, sq), sparsity, granularity, in_length, per_output=per_output)
    return mask, w * mask
