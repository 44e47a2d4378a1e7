"""SparseGPT (Frantar & Alistarh, ICML 2023) on one `[in, out]` matrix: masks
chosen in lazy batches of the inverse-Hessian Cholesky factor, each pruned
weight's error spread over the not yet visited inputs (the OBS update)."""

from __future__ import annotations

import keras
import numpy as np

from kprune.core import masking
from kprune.methods.one_shot.magnitude import select

__all__ = ["sparsegpt", "channel_scales", "VALUE_RANGES"]


#: Keras' symmetric per-channel ranges (`keras.quantizers.AbsMaxQuantizer`).
VALUE_RANGES = {"int8": (-127, 127), "int4": (-8, 7)}


def channel_scales(w_rows, mode):
    """Keras' per-output-channel scales `hi / (max |w| + epsilon)` of `[out, in]` rows."""
    hi = VALUE_RANGES[mode][1]
    return hi / (np.max(np.abs(w_rows), axis=1) + keras.config.epsilon())


def sparsegpt(w, hessian, sparsity, granularity=None, block_size=128, damping=0.01, in_length=None,
              quantize=None, overwrite_hessian=False):
    """SparseGPT (Frantar & Alistarh 2023) on one `[in, out]` matrix.

    Args:
        w: `[in, out]` weights.
        hessian: `[in, in]`, `X^T X` over the calibration rows (any positive
            scale: the damping is relative to its mean diagonal).
        sparsity: fraction to remove.
        granularity: `Unstructured` (default; one threshold per lazy batch of
            `block_size` inputs, the paper's adaptive mask selection),
            `NM(n, m)` (chosen at the start of every group of `m` inputs) or
            `Block((r, c))` (one threshold per lazy batch of whole blocks).
        block_size: inputs per lazy batch (the paper's B = 128).
        damping: added to the diagonal as `damping * mean(diag H)`.
        in_length: as for `select` (N:M groups).
        quantize: None, `"int8"` or `"int4"`: SparseGPT's joint mode. Every
            kept weight is also rounded, in the same column sweep, to Keras'
            symmetric per-output-channel grid (`scale = hi / max |w|` of the
            channel before the sweep, `q = clip(round(w * scale), lo, hi)`,
            `[-127, 127]` or `[-8, 7]`), and its rounding error is spread
            like a pruning error. The returned weights are the dequantized
            values `q / scale`.
        overwrite_hessian: damp `hessian` in place instead of a copy (the
            driver's own float64 statistics: one `[in, in]` array less).

    Returns:
        `(mask, w_new)`: bool `[in, out]` and the reconstructed weights,
        zero where the mask is False.

    Example:
    >>> x = np.random.randn(256, 16); w = np.random.randn(16, 8)
    >>> mask, w_new = sparsegpt(w, x.T @ x, 0.5)
    >>> float(np.linalg.norm(x @ w - x @ w_new)) < float(np.linalg.norm(x @ (w * mask) - x @ w))
    True
    """
    granularity = masking.get_granularity(granularity)
    # The reference's [out, in] orientation: rows are output units.
    weights = np.array(np.asarray(w, dtype=np.float64).T)
    rows, cols = weights.shape
    h = np.asarray(hessian, dtype=np.float64)
    if not overwrite_hessian or h is not hessian or not h.flags.writeable:
        h = np.array(h)
    if h.shape != (cols, cols):
        raise ValueError(f"hessian must be [{cols}, {cols}] for w of shape {np.shape(w)}, got {h.shape}.")
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    weights[:, dead] = 0.0
    h[np.diag_indices(cols)] += damping * np.mean(np.diag(h))
    # U: upper Cholesky factor of H^-1 (H^-1 = U^T U).
    h_inv = np.linalg.inv(h)
    del h
    u = np.linalg.cholesky(h_inv).T
    del h_inv
    if quantize is not None:
        lo, hi = VALUE_RANGES[quantize]
        scales = channel_scales(weights, quantize)

        def rounded(v):
            return np.clip(np.round(v * scales), lo, hi) / scales
    else:
        def rounded(v):
            return v
    length = cols if in_length is None else int(in_length)
    mask = np.ones((rows, cols), dtype=bool)
    nm = isinstance(granularity, masking.NM)
    starts = _batch_starts(cols, block_size, granularity, length)
    for i1, i2 in zip(starts[:-1], starts[1:]):
        w1 = weights[:, i1:i2].copy()
        u1 = u[i1:i2, i1:i2]
        err1 = np.zeros_like(w1)
        diag = np.diag(u1)
        if not nm:
            scores = w1 ** 2 / diag[None, :] ** 2
            mask[:, i1:i2] = select(scores.T, sparsity, granularity).T
        for i in range(i2 - i1):
            col = i1 + i
            if nm and (col % length) % granularity.m == 0:
                g = min(granularity.m, length - col % length)
                scores = w1[:, i:i + g] ** 2 / diag[None, i:i + g] ** 2
                mask[:, col:col + g] = masking.compute_mask(
                    scores, sparsity, granularity, masking.Layout(in_axis=-1, out_axis=0))
            q = np.where(mask[:, col], rounded(w1[:, i]), 0.0)
            e = (w1[:, i] - q) / diag[i]
            w1[:, i:] -= np.outer(e, u1[i, i:])
            w1[:, i] = q
            err1[:, i] = e
        weights[:, i1:i2] = w1
        weights[:, i2:] -= err1 @ u[i1:i2, i2:]
    weights[~mask] = 0.0
    return mask.T.copy(), weights.T.copy()


def _batch_starts(cols, block_size, granularity, length):
    """Lazy-batch boundaries that never split an N:M group or a Block row."""
    if isinstance(granularity, masking.NM):
        # group starts: every m within each segment of `length` inputs
        group = np.array([c for c in range(cols) if (c % length) % granularity.m == 0] + [cols])
    elif isinstance(granularity, masking.Block):
        r = granularity.block_shape[0]
        group = np.array(list(range(0, cols, r)) + [cols])
    else:
        group = np.arange(cols + 1)
    starts = [0]
    while starts[-1] < cols:
        target = starts[-1] + block_size
        nxt = group[group >= target]
        starts.append(int(nxt[0]) if nxt.size else cols)
    return starts
