"""Weight importance criteria beyond magnitude, for the `scores=` seam.

A weight criterion is a callable `scores(wrapper) -> list of arrays`, one per
`wrapper.prunable_weights` (higher = keep). Pass it to
`kprune.PruningCallback(scores=...)` or `kprune.Pruner(scores=...)`; the masks
are then selected by the mask engine as usual (layer or global scope, any
granularity, any schedule). Magnitude `|w|` is the default when no criterion
is given; movement pruning is `kprune.MovementPruning`.

* `OBD(x, y, loss)`: Optimal Brain Damage (LeCun, Denker & Solla, NIPS 1990):
  the saliency of weight `i` is the second-order estimate of the loss
  increase when it is set to zero, `0.5 * h_ii * w_i**2`, with `h_ii` the
  diagonal of the Hessian of the loss. `hessian_diagonal` computes the
  diagonal exactly (`method="exact"`, one Hessian row per weight, for small
  models and tests) or with Hutchinson's estimator `E[z * Hz]`, `z` Rademacher
  (`method="hutchinson"`, default, `samples=8` Hessian-vector products).
  Torch-Pruning's `GroupHessianImportance` is the channel version
  (`kprune.structured.importance.HessianImportance`).
* `RandomScores(seed)`: i.i.d. uniform scores, the sanity baseline.

The Hessian math (`hessian_diagonal`, `obd_scores`) lives in
`kprune.core.hessian`, shared with the channel criterion
`kprune.structured.importance.HessianImportance`; it is re-exported here.
"""

from __future__ import annotations

import numpy as np

from kprune.core.hessian import DEFAULT_SAMPLES, hessian_diagonal, obd_scores

__all__ = ["OBD", "RandomScores", "hessian_diagonal", "obd_scores"]

class OBD:
    """Optimal Brain Damage scores for `Pruner`/`PruningCallback(scores=...)`.

    Args:
        model: the (pruned) model the wrappers belong to.
        x, y: a few batches of training data (e.g. 256 examples).
        loss: a Keras loss (default: the model's compiled loss).
        method: `"hutchinson"` (default) or `"exact"`, see `hessian_diagonal`.
        samples: Hutchinson samples (default 8).

    Returns (when called with a wrapper):
        `[0.5 * h_ii * w_i**2]`, one array per pruned weight.

    Example:
    ```python
    pruned = kprune.prune_low_magnitude(model, kprune.ConstantSparsity(0.9, 0))
    obd = kprune.methods.criteria.OBD(pruned, x[:256], y[:256], loss="sparse_categorical_crossentropy")
    pruned.fit(x, y, callbacks=[kprune.PruningCallback(scores=obd)])
    ```
    """

    def __init__(self, model, x, y, loss=None, method="hutchinson", samples=DEFAULT_SAMPLES,
                 batch_size=256, seed=0):
        self.model = model
        self.x, self.y = x, y
        self.loss = loss
        self.kwargs = dict(method=method, samples=samples, batch_size=batch_size, seed=seed)

    def __call__(self, wrapper):
        return obd_scores(self.model, wrapper.prunable_weights, self.x, self.y, self.loss,
                          **self.kwargs)

    def get_config(self):
        return {"loss": self.loss, **self.kwargs}


class RandomScores:
    """Uniform random scores: the random-pruning baseline.

    Args:
        seed: seed of the generator. Each weight gets its score once, so
            successive mask updates of a schedule remove nested sets.

    Example:
    >>> callback = kprune.PruningCallback(scores=kprune.methods.criteria.RandomScores(0))
    """

    def __init__(self, seed=None):
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._scores = {}

    def __call__(self, wrapper):
        out = []
        for v in wrapper.prunable_weights:
            if id(v) not in self._scores:
                self._scores[id(v)] = (v, self._rng.random(tuple(v.shape)))
            out.append(self._scores[id(v)][1])
        return out

    def get_config(self):
        return {"seed": self.seed}
