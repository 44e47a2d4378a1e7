"""The loss Hessian's diagonal on calibration data, and OBD saliencies.

Second-order importance (Optimal Brain Damage, LeCun, Denker & Solla, NIPS
1990): the saliency of weight `i` is `0.5 * h_ii * w_i**2`, with `h_ii` the
diagonal of the Hessian of the loss. `hessian_diagonal` computes the diagonal
exactly (`method="exact"`, one Hessian-vector product per weight, for small
models and tests) or with Hutchinson's estimator `E[z * Hz]`, `z` Rademacher
(`method="hutchinson"`, default). Data and loss follow `kprune.core.calibration`;
Hessian-vector products come from the backend seam (`kprune.backend.hvp_fn`).

Used by the weight criterion `kprune.methods.criteria.OBD` and the channel
criterion `kprune.structured.importance.HessianImportance` (both above the
core, so the math lives here once).

Example:
>>> h = hessian_diagonal(model, [layer.kernel], x, y, loss="mse", method="exact")
"""

from __future__ import annotations

import keras
import numpy as np

from kprune import backend
from kprune.core import calibration

__all__ = ["DEFAULT_SAMPLES", "hessian_diagonal", "obd_scores"]


#: Hutchinson samples (Hessian-vector products) per estimate.
DEFAULT_SAMPLES = 8


def _hessian_terms(model, variables, x, y, loss_fn, vectors):
    """`[H v for v in vectors]` (per variable), or the exact diagonal if None.

    H is the Hessian of `mean(loss_fn(y, model(x)))` with respect to
    `variables`, the model in inference mode. Hessian-vector products come
    from the backend seam (`kprune.backend.hvp_fn`), so this runs on every
    backend; the exact diagonal takes one product per entry (small variables).
    """
    def objective(xb, yb):
        return keras.ops.mean(loss_fn(yb, model(xb, training=False)))

    hvp = backend.hvp_fn(objective, variables, compiled=False)
    shapes = [tuple(v.shape) for v in variables]
    if vectors is None:
        diagonals = []
        for i, shape in enumerate(shapes):
            n = int(np.prod(shape))
            diag = np.zeros(n, np.float64)
            for j in range(n):
                unit = [np.zeros(s, np.float32) for s in shapes]
                unit[i].reshape(-1)[j] = 1.0
                diag[j] = np.asarray(hvp(unit, x, y)[1][i]).reshape(-1)[j]
            diagonals.append(diag.reshape(shape))
        return diagonals
    return [[np.asarray(h) for h in hvp(vec, x, y)[1]] for vec in vectors]


def hessian_diagonal(model, variables, x, y, loss=None, method="hutchinson",
                     samples=DEFAULT_SAMPLES, batch_size=256, seed=0):
    """The diagonal of the loss Hessian for some variables of `model`.

    Args:
        model: a Keras model (run in inference mode; not modified).
        variables: the variables (e.g. `wrapper.prunable_weights`).
        x, y: data arrays; the loss is the mean over them (in batches of
            `batch_size`, averaged).
        loss: a Keras loss (default: the model's compiled loss).
        method: `"hutchinson"` (`mean_s z_s * H z_s`, `z_s` Rademacher;
            unbiased) or `"exact"` (the full Hessian block of each variable:
            `n**2` memory, small variables only).
        samples: Hutchinson samples.
        batch_size: batch size of the passes over `x`.
        seed: seed of the Rademacher vectors.

    Returns:
        A list of numpy arrays, the diagonals in the shapes of `variables`.

    Example:
    >>> h = kprune.methods.criteria.hessian_diagonal(model, [layer.kernel], x, y,
    ...                                      loss="mse", method="exact")
    """
    if method not in ("hutchinson", "exact"):
        raise ValueError(f"method must be 'hutchinson' or 'exact', got {method!r}.")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a positive integer, got {samples!r}.")
    loss_fn = calibration.resolve_loss(model, loss, caller="hessian_diagonal")
    variables = list(variables)
    batches = [(np.asarray(xb), np.asarray(yb)) for xb, yb in calibration.as_batches(
        (np.asarray(x), np.asarray(y)), batch_size=batch_size, name="x, y")]
    n = sum(len(xb) for xb, _ in batches)
    total = [np.zeros(tuple(v.shape), np.float64) for v in variables]
    if method == "exact":
        for xb, yb in batches:
            for t, d in zip(total, _hessian_terms(model, variables, xb, yb, loss_fn, None)):
                t += d * len(xb) / n
        return total
    rng = np.random.default_rng(seed)
    vectors = [[rng.choice([-1.0, 1.0], size=tuple(v.shape)).astype("float32") for v in variables]
               for _ in range(samples)]
    for xb, yb in batches:
        for vec, hv in zip(vectors, _hessian_terms(model, variables, xb, yb, loss_fn, vectors)):
            for t, z, h in zip(total, vec, hv):
                t += z * h * (len(xb) / n) / samples
    return total


def obd_scores(model, variables, x, y, loss=None, **kwargs):
    """OBD saliencies `0.5 * h_ii * w_i**2` of `variables` (list of arrays).

    `kwargs` go to `hessian_diagonal` (`method`, `samples`, ...).
    """
    diag = hessian_diagonal(model, variables, x, y, loss, **kwargs)
    return [0.5 * h * np.square(np.asarray(keras.ops.convert_to_numpy(v), np.float64))
            for h, v in zip(diag, variables)]
