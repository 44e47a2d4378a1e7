"""Movement pruning (Sanh, Wolf & Rush, NeurIPS 2020).

When fine-tuning a pretrained model, what matters is not how large a weight
*is* but where it is *going*: movement pruning keeps the weights that move
away from zero. The score of weight `W` is the accumulated

    S = -sum_t W_t * dL/dW_t

and the hard ("top-k") variant keeps the weights with the highest `S`, with
the fraction removed following the cubic schedule of Zhu & Gupta, i.e.
`kprune.PolynomialDecay(0.0, final_sparsity, begin_step, end_step, power=3)`
(Sanh et al.: a warm-up before `begin_step` with no pruning, the sparsity
rising cubically to `end_step`, then a cool-down at the final masks). The
masks are selected by the mask engine (`kprune.masking.compute_masks`) at the
schedule's update steps, through `kprune.Pruner`'s `scores=` seam, so layer
or global scope, LAMP normalisation and every granularity work as for
magnitude pruning.

How the score is accumulated inside `model.fit` (and custom loops): Keras
gives callbacks no gradients, so kprune measures what the optimizer *did*.
`MovementPruning` chains a `MovementConstraint` in front of each pruned
variable's constraint; Keras optimizers call constraints right after every
update, inside the compiled train step, where it adds `W_t * (W_{t+1} - W_t)`
to `S`. For plain SGD (no momentum) with learning rate `lr`,
`W_{t+1} - W_t = -lr * dL/dW_t`, so `S` is exactly `lr * sum_t -W_t * dL/dW_t`,
the paper's score times the positive constant `lr` (the ranking, and so the
masks, are the same). With momentum or Adam, `S` accumulates the weight's
actual movement `W * dW` under that optimizer (the paper, too, trains its
scores with Adam). This needs no custom `train_step`, no second forward pass
and no host transfer per batch; the state lives in the callback only, so
plain magnitude pruning pays nothing for it.

Pruned weights: the paper keeps a dense `W` behind the mask; a masked entry
gets no update, so it stays at its value from when it was pruned, and its
score keeps accumulating `-W_frozen * dL/dW'` (straight-through). kprune
stores pruned weights as exact zeros, so the constraint keeps that frozen
value (`latent`) itself and adds `latent * dW`, where `dW` is the update the
optimizer applied to the zero (for SGD `-lr * dL/dW'`). This needs a
gradient for the pruned entries: while `PruneWrapper` computes with `w *
mask`, that gradient is zero and a pruned weight's score stays where it was
when it was pruned. A weight that comes back restarts from zero (the
paper's from its frozen value).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from kprune.callbacks import PruningCallback
from kprune.prune import find_wrappers

__all__ = ["MovementPruning", "MovementConstraint"]


class MovementConstraint(keras.constraints.Constraint):
    """Accumulates the movement score after every optimizer update.

    Chained in front of a variable's existing constraint (the wrapper's
    `MaskConstraint`) by `MovementPruning`; not meant to be used alone. With
    `before` the stored value before the update (zero where pruned) and `w`
    the updated value, it adds `latent * (w - before)` to the score, where
    `latent` is the weight itself where kept and, where pruned, the value the
    weight had when it was pruned (the paper's dense `W` behind the mask,
    which receives no update while masked).

    Args:
        score: the score variable (same shape as the weight).
        previous: a variable holding the stored value after the last update.
        latent: a variable holding the latent dense weight.
        mask: the wrapper's mask variable.
        inner: the constraint to apply after (the wrapper's MaskConstraint).
    """

    def __init__(self, score, previous, latent, mask, inner=None):
        self.score = score
        self.previous = previous
        self.latent = latent
        self.mask = mask
        self.inner = inner

    def __call__(self, w):
        keep = ops.cast(self.mask, "bool")
        zero = ops.zeros((), w.dtype)
        # Weights zeroed by a mask update since the last step count as zero.
        before = ops.where(keep, self.previous, zero)
        latent = ops.where(keep, before, self.latent)
        self.score.assign_add(ops.cast(latent * (w - before), self.score.dtype))
        new = w if self.inner is None else self.inner(w)
        self.previous.assign(new)
        self.latent.assign(ops.where(keep, new, self.latent))
        return new


class MovementPruning(PruningCallback):
    """Hard movement pruning during `model.fit`: use it instead of `PruningCallback`.

    The model is pruned as usual with `kprune.prune_low_magnitude` and the
    cubic schedule; this callback only changes the scores from `|W|` to the
    accumulated movement `-sum W * dL/dW` (see the module docstring for how
    it is measured, and for SGD's exact equality).

    Recipe (Sanh et al. 2020, BERT fine-tuning): `PolynomialDecay(0.0,
    final_sparsity, begin_step=warmup, end_step=total - cooldown, power=3)`,
    warm-up and cool-down of about 1 epoch each; the paper updates masks
    every step, `frequency=10`..`100` is a good compromise here. Movement
    pruning beats magnitude pruning at high sparsity when *fine-tuning a
    pretrained* model; when training from scratch magnitude is usually as
    good or better (see `benchmarks/methods.py`).

    Args:
        normalize: global scope: `None` or `"lamp"`, as `PruningCallback`.
        min_keep: global scope: fewest weights any tensor keeps.
        verbose: 1 prints a line at every mask update.

    Attributes:
        movement_scores: dict `wrapper name -> list of score variables` once training
            has started (they are kept across `fit` calls with this callback).

    Example:
    ```python
    schedule = kprune.PolynomialDecay(0.0, 0.95, begin_step=200, end_step=2000,
                                      power=3, frequency=20)
    pruned = kprune.prune_low_magnitude(pretrained, schedule)
    pruned.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
    pruned.fit(x, y, epochs=5, callbacks=[kprune.MovementPruning()])
    ```
    """

    def __init__(self, normalize=None, min_keep=1, verbose=0):
        super().__init__(normalize=normalize, min_keep=min_keep, verbose=verbose,
                         scores=self._wrapper_scores)
        self.movement_scores = {}
        self._states = {}  # id(variable) -> (score, previous)
        self._installed = []  # (variable, its constraint before ours)

    def _wrapper_scores(self, wrapper):
        return [ops.convert_to_numpy(s) for s in self.movement_scores[wrapper.name]]

    def score_arrays(self):
        """The accumulated scores as numpy arrays, `{wrapper name: [arrays]}`."""
        return {name: [np.array(ops.convert_to_numpy(s)) for s in ss]
                for name, ss in self.movement_scores.items()}

    def _install(self):
        wrappers = [w for w in find_wrappers(self.model) if w.pruning_schedule is not None]
        if not wrappers:
            raise ValueError(
                f"MovementPruning: model '{self.model.name}' has no scheduled "
                f"PruneWrapper layers; prune it first with "
                f"kprune.prune_low_magnitude(model, kprune.PolynomialDecay(...))."
            )
        for w in wrappers:
            if not w.built:
                raise ValueError(
                    f"MovementPruning: layer '{w.name}' is not built; build the "
                    f"model before fit (e.g. model(x[:1]))."
                )
            scores = []
            for var, mask in zip(w.prunable_weights, w.masks):
                state = self._states.get(id(var))
                if state is None:
                    score = keras.Variable(np.zeros(tuple(var.shape), "float32"), trainable=False,
                                           name=f"movement_score_{var.name}")
                    value = ops.convert_to_numpy(var)
                    previous = keras.Variable(value, trainable=False,
                                              name=f"movement_previous_{var.name}")
                    latent = keras.Variable(value, trainable=False,
                                            name=f"movement_latent_{var.name}")
                    state = self._states[id(var)] = (score, previous, latent)
                else:
                    value = ops.convert_to_numpy(var)
                    keep = ops.convert_to_numpy(mask).astype(bool)
                    state[1].assign(value)
                    state[2].assign(np.where(keep, value, ops.convert_to_numpy(state[2])))
                score, previous, latent = state
                scores.append(score)
                self._installed.append((var, var.constraint))
                var.constraint = MovementConstraint(score, previous, latent, mask, var.constraint)
            self.movement_scores[w.name] = scores

    def _uninstall(self):
        for var, constraint in reversed(self._installed):
            var.constraint = constraint
        self._installed = []

    def _retrace(self):
        # The train step already traced by an earlier fit captured the old
        # constraints; make a new one (it traces on its first call).
        if callable(getattr(self.model, "make_train_function", None)):
            self.model.make_train_function(force=True)

    def on_train_begin(self, logs=None):
        self._install()
        self._retrace()
        super().on_train_begin(logs)

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        self._uninstall()
        self._retrace()
