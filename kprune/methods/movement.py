"""Movement pruning (Sanh, Wolf & Rush, NeurIPS 2020), hard and soft.

When fine-tuning a pretrained model, what matters is not how large a weight
*is* but where it is *going*: movement pruning keeps the weights that move
away from zero. Both variants score weight `W` by the straight-through
gradient of a score `S` that scales it: `dL/dS = dL/dW' * W`, where `W'` is
the weight the forward pass uses (zero where pruned) and `W` the dense
weight behind it.

* **Hard** (`MovementPruning`, top-k): the score is the accumulated

      S = -sum_t W_t * dL/dW'_t

  and the masks keep the weights with the highest `S`, the fraction removed
  following the cubic schedule of Zhu & Gupta, i.e. `kprune.PolynomialDecay(
  0.0, final_sparsity, begin_step, end_step, power=3)` (Sanh et al.: a
  warm-up before `begin_step` with no pruning, the sparsity rising cubically
  to `end_step`, then a cool-down at the final masks). The masks are selected
  by the mask engine (`kprune.core.masking.compute_masks`) at the schedule's update
  steps, through `kprune.Pruner`'s `scores=` seam, so layer or global scope,
  LAMP normalisation and every granularity work as for magnitude pruning.
* **Soft** (`SoftMovementPruning`, threshold): the scores are *learned*, by
  Adam on their own learning rate, from `dL/dS` plus the derivative of a
  penalty `lambda * mean(sigmoid(S))` that pulls every score down; the masks
  keep `sigmoid(S) > tau`, with the threshold `tau` rising cubically (the
  wrappers' schedule gives `tau`, not a sparsity). A weight survives only
  where the task gradient keeps pushing its score up against the penalty; the
  sparsity is whatever that balance reaches, set by `lambda`.

How the scores are updated inside `model.fit` (and custom loops): Keras
gives callbacks no gradients, so kprune reads them off the optimizer step.
The callbacks chain a `MovementConstraint` (`SoftMovementConstraint`) in
front of each pruned variable's constraint; Keras optimizers call
constraints right after every update, inside the compiled train step. There
the gradient `g = dL/dW'` of that step is recovered exactly from what the
optimizer did: for plain SGD from the update itself, `g = (W_t - W_{t+1}) /
lr`; for SGD with momentum from its velocity; for Adam and AdamW from the
first moment, `g = (m_t - beta_1 m_{t-1}) / (1 - beta_1)`. (Using the
update `W_{t+1} - W_t` itself, as an earlier version did, is the paper's
score only for SGD: under Adam every entry's step is normalised to about
`lr`, so `W * dW` ranks weights by `|W|` times the sign agreement of their
gradients, closer to magnitude than to movement.) For any other optimizer
the update over the learning rate is used, the optimizer's preconditioned
gradient. No custom `train_step`, no second forward pass, no host transfer
per batch; the state lives in the callback only, so plain magnitude pruning
pays nothing for it. Keras' gradient clipping and loss scaling come before,
so `g` is the clipped, unscaled gradient the optimizer saw.

Pruned weights: kprune's forward pass is not masked; pruned weights are
stored as exact zeros (the wrapper's `MaskConstraint` runs after the
optimizer step), so they get a gradient `dL/dW'` at zero like every other
weight, and their scores keep moving, as with the paper's straight-through
estimator. The paper keeps a dense `W` behind the mask which receives no
update while masked, so a pruned entry's `dL/dS` uses the value it had when
it was pruned: the constraint keeps that frozen value (`latent`) itself and
uses `latent * g`. A weight that comes back restarts from zero with hard
movement, and from its frozen value with soft movement (as in the paper).

Backends: TensorFlow and torch. On JAX both callbacks raise a ValueError at
the start of `fit`: Keras' JAX optimizer step runs the constraints in a
stateless scope that keeps only the weights' and the optimizer's variables,
so the scores' updates would be lost.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from kprune.core import checks, masking
from kprune.core.callbacks import PruningCallback
from kprune.core.model_tree import find_wrappers
from kprune.core.pruner import Pruner
from kprune.core.wrapper import assign_masks

__all__ = [
    "MovementPruning",
    "MovementConstraint",
    "SoftMovementPruning",
    "SoftMovementConstraint",
]


class _GradientReader:
    """Recovers `dL/dW'` of the current step from one optimizer's update.

    Called inside the variable's constraint, i.e. after the optimizer has
    updated the variable and its slots (and before `iterations` advances).
    Exact for Adam and AdamW (from the first moment, which weight decay does
    not enter), SGD with momentum (from the velocity) and plain SGD without
    weight decay (from the update); for any other optimizer, the update over
    the learning rate (its preconditioned gradient).
    """

    def __init__(self, optimizer, variable):
        self.optimizer = optimizer
        self.slot = None
        self.kind = "step"
        self.previous_slot = None
        value_shape = tuple(variable.shape)
        try:
            index = optimizer._get_variable_index(variable)
            if isinstance(optimizer, keras.optimizers.Adam):  # AdamW too; amsgrad keeps m
                self.slot = optimizer._momentums[index]
                self.kind = "adam"
            elif isinstance(optimizer, keras.optimizers.SGD):
                if optimizer.momentum:
                    self.slot = optimizer.momentums[index]
                    self.kind = "momentum"
                else:
                    self.kind = "sgd"
        except (AttributeError, KeyError, IndexError, TypeError):
            self.slot, self.kind = None, "step"
        if self.slot is not None:
            self.previous_slot = keras.Variable(
                ops.convert_to_numpy(self.slot).reshape(value_shape), trainable=False,
                name=f"movement_slot_{variable.name}")

    def __call__(self, before, new):
        dtype = new.dtype
        if self.kind == "adam":
            beta_1 = ops.cast(self.optimizer.beta_1, dtype)
            m = ops.cast(self.slot, dtype)
            g = (m - beta_1 * ops.cast(self.previous_slot, dtype)) / (1.0 - beta_1)
            self.previous_slot.assign(m)
            return g
        lr = ops.cast(self.optimizer.learning_rate, dtype)
        if self.kind == "momentum":
            # velocity_t = momentum * velocity_{t-1} - lr * g
            v = ops.cast(self.slot, dtype)
            g = (ops.cast(self.optimizer.momentum, dtype) * ops.cast(self.previous_slot, dtype) - v) / lr
            self.previous_slot.assign(v)
            return g
        return (before - new) / lr


def _optimizer_of(model):
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        raise ValueError(
            f"Movement pruning: model '{model.name}' has no optimizer; compile it "
            f"(model.compile(optimizer, loss)) before fit."
        )
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    return optimizer


def _before_and_latent(mask, previous, latent, w):
    """For a movement constraint: `(keep, before, latent)`, the mask as bools,
    the stored value before this update (weights zeroed by a mask update
    since the last step count as zero) and the dense weight behind the mask
    (the weight where kept, its frozen value where pruned)."""
    keep = ops.cast(mask, "bool")
    before = ops.where(keep, previous, ops.zeros((), w.dtype))
    return keep, before, ops.where(keep, before, latent)


class MovementConstraint(keras.constraints.Constraint):
    """Accumulates the hard movement score after every optimizer update.

    Chained in front of a variable's existing constraint (the wrapper's
    `MaskConstraint`) by `MovementPruning`; not meant to be used alone. With
    `before` the stored value before the update (zero where pruned), `w` the
    updated value and `latent` the weight itself where kept and, where
    pruned, the value the weight had when it was pruned (the paper's dense
    `W` behind the mask, which receives no update while masked), it adds
    `-latent * g` to the score, where `g = gradient(before, w)` is the
    gradient of this step; without `gradient` it adds the movement
    `latent * (w - before)` (for SGD `lr` times the same).

    Args:
        score: the score variable (same shape as the weight).
        previous: a variable holding the stored value after the last update.
        latent: a variable holding the latent dense weight.
        mask: the wrapper's mask variable.
        inner: the constraint to apply after (the wrapper's MaskConstraint).
        gradient: optional callable `(before, w) -> dL/dW'` (how
            `MovementPruning` reads the optimizer's gradient).

    Returns:
        A constraint; calling it returns `inner(w)`.
    """

    def __init__(self, score, previous, latent, mask, inner=None, gradient=None):
        self.score = score
        self.previous = previous
        self.latent = latent
        self.mask = mask
        self.inner = inner
        self.gradient = gradient

    def __call__(self, w):
        keep, before, latent = _before_and_latent(self.mask, self.previous, self.latent, w)
        if self.gradient is None:
            increment = latent * (w - before)
        else:
            increment = -latent * self.gradient(before, w)
        self.score.assign_add(ops.cast(increment, self.score.dtype))
        new = w if self.inner is None else self.inner(w)
        self.previous.assign(new)
        self.latent.assign(ops.where(keep, new, self.latent))
        return new


class _ConstraintInstaller:
    """Chains movement constraints in front of the wrappers' constraints for
    one `fit` and takes them off again, and reads the scores (shared by both
    callbacks)."""

    def _wrapper_scores(self, wrapper):
        return [ops.convert_to_numpy(s) for s in self.movement_scores[wrapper.name]]

    def score_arrays(self):
        """The scores as numpy arrays, `{wrapper name: [arrays]}` (hard: the
        accumulated movement; soft: the learned scores)."""
        return {name: [np.array(ops.convert_to_numpy(s)) for s in ss]
                for name, ss in self.movement_scores.items()}

    def _wrappers(self, name):
        if keras.backend.backend() == "jax":
            raise ValueError(
                f"{name} does not run on the JAX backend yet: the scores are updated by a "
                f"constraint inside the optimizer step, and Keras' JAX optimizer step keeps "
                f"only the weights and the optimizer's own variables of what constraints "
                f"assign. Train with movement pruning on TensorFlow or torch (the .keras file "
                f"loads on JAX afterwards), or use kprune.PruningCallback (magnitude) on JAX."
            )
        wrappers = [w for w in find_wrappers(self.model) if w.pruning_schedule is not None]
        if not wrappers:
            raise ValueError(
                f"{name}: model '{self.model.name}' has no scheduled "
                f"PruneWrapper layers; prune it first with "
                f"kprune.prune_low_magnitude(model, kprune.PolynomialDecay(...))."
            )
        for w in wrappers:
            if not w.built:
                raise ValueError(
                    f"{name}: layer '{w.name}' is not built; build the "
                    f"model before fit (e.g. model(x[:1]))."
                )
        return wrappers

    def _uninstall(self):
        for var, constraint in reversed(self._installed):
            var.constraint = constraint
        self._installed = []

    def _retrace(self):
        # The train step already traced by an earlier fit captured the old
        # constraints; make a new one (it traces on its first call).
        if callable(getattr(self.model, "make_train_function", None)):
            self.model.make_train_function(force=True)

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        self._uninstall()
        self._retrace()


class MovementPruning(_ConstraintInstaller, PruningCallback):
    """Hard movement pruning during `model.fit`: use it instead of `PruningCallback`.

    The model is pruned as usual with `kprune.prune_low_magnitude` and the
    cubic schedule; this callback only changes the scores from `|W|` to the
    accumulated movement `S = -sum_t W_t * dL/dW'_t` (Sanh et al. 2020, eq. 4;
    see the module docstring for how the gradient is read inside the train
    step: exactly for SGD, SGD with momentum, Adam and AdamW).

    Recipe (Sanh et al. 2020, BERT fine-tuning): `PolynomialDecay(0.0,
    final_sparsity, begin_step=warmup, end_step=total - cooldown, power=3)`,
    warm-up and cool-down of about 1 epoch each; the paper updates masks
    every step, `frequency=10`..`100` is a good compromise here. Movement
    pruning beats magnitude pruning at high sparsity when *fine-tuning a
    pretrained* model for many steps; on short runs and small models
    magnitude is usually as good or better (see `benchmarks/methods.py`).

    Args:
        normalize: global scope: `None` only (raw scores compared across
            layers). `"lamp"` raises: LAMP squares the scores, and movement
            scores are signed.
        min_keep: global scope: fewest weights any tensor keeps.
        verbose: 1 prints a line at every mask update.

    Returns:
        A Keras callback.

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
        if normalize == "lamp":
            raise ValueError(
                "MovementPruning: normalize='lamp' is not supported: LAMP squares the "
                "scores, and movement scores are signed (a large negative score, a weight "
                "moving towards zero, would rank as important). Use normalize=None."
            )
        super().__init__(normalize=normalize, min_keep=min_keep, verbose=verbose,
                         scores=self._wrapper_scores)
        self.movement_scores = {}
        self._states = {}  # id(variable) -> (score, previous, latent)
        self._installed = []  # (variable, its constraint before ours)

    def get_config(self):
        return {"normalize": self.normalize, "min_keep": self.min_keep, "verbose": self.verbose}

    def _install(self):
        wrappers = self._wrappers("MovementPruning")
        optimizer = _optimizer_of(self.model)
        for w in wrappers:
            scores = []
            for var, mask in zip(w.prunable_weights, w.masks):
                state = self._states.get(id(var))
                value = ops.convert_to_numpy(var)
                if state is None:
                    score = keras.Variable(np.zeros(tuple(var.shape), "float32"), trainable=False,
                                           name=f"movement_score_{var.name}")
                    previous = keras.Variable(value, trainable=False,
                                              name=f"movement_previous_{var.name}")
                    latent = keras.Variable(value, trainable=False,
                                            name=f"movement_latent_{var.name}")
                    state = self._states[id(var)] = (score, previous, latent)
                else:
                    keep = ops.convert_to_numpy(mask).astype(bool)
                    state[1].assign(value)
                    state[2].assign(np.where(keep, value, ops.convert_to_numpy(state[2])))
                score, previous, latent = state
                scores.append(score)
                self._installed.append((var, var.constraint))
                var.constraint = MovementConstraint(score, previous, latent, mask, var.constraint,
                                                    gradient=_GradientReader(optimizer, var))
            self.movement_scores[w.name] = scores

    def on_train_begin(self, logs=None):
        self._install()
        self._retrace()
        super().on_train_begin(logs)


#: Adam's constants for the scores (the reference implementation trains them
#: with torch's AdamW defaults).
_SCORE_BETA_1, _SCORE_BETA_2, _SCORE_EPSILON = 0.9, 0.999, 1e-8


class SoftMovementConstraint(keras.constraints.Constraint):
    """One Adam step on the soft movement scores after every optimizer update.

    Chained in front of a variable's existing constraint (the wrapper's
    `MaskConstraint`) by `SoftMovementPruning`; not meant to be used alone.
    With `g = gradient(before, w)` the gradient `dL/dW'` of this step and
    `latent` the dense weight (the frozen value where pruned), the score's
    gradient is

        dR/dS = latent * g + penalty * scale * sigmoid(S) * (1 - sigmoid(S))

    (the straight-through `dL/dS = dL/dW' * W` plus the derivative of the
    penalty `penalty * scale * sum(sigmoid(S))`), and `S` takes one Adam step
    with `learning_rate` on it.

    Args:
        score: the score variable.
        moments: `(m, v, t)`: Adam's first and second moment variables and its
            step count (a scalar variable).
        previous: a variable holding the stored value after the last update.
        latent: a variable holding the latent dense weight.
        mask: the wrapper's mask variable.
        gradient: callable `(before, w) -> dL/dW'`.
        penalty: a scalar variable, the current `lambda`.
        scale: the penalty's normalisation for this tensor (a float).
        learning_rate: the scores' learning rate (a float).
        inner: the constraint to apply after (the wrapper's MaskConstraint).

    Returns:
        A constraint; calling it returns `inner(w)`.
    """

    def __init__(self, score, moments, previous, latent, mask, gradient, penalty, scale,
                 learning_rate, inner=None):
        self.score = score
        self.m, self.v, self.t = moments
        self.previous = previous
        self.latent = latent
        self.mask = mask
        self.gradient = gradient
        self.penalty = penalty
        self.scale = float(scale)
        self.learning_rate = float(learning_rate)
        self.inner = inner

    def __call__(self, w):
        keep, before, latent = _before_and_latent(self.mask, self.previous, self.latent, w)
        g = ops.cast(latent * self.gradient(before, w), "float32")
        s = self.score.value if hasattr(self.score, "value") else self.score
        sig = ops.sigmoid(s)
        grad = g + ops.cast(self.penalty, "float32") * self.scale * sig * (1.0 - sig)
        self.t.assign_add(ops.ones((), self.t.dtype))
        t = ops.cast(self.t, "float32")
        m = _SCORE_BETA_1 * self.m + (1.0 - _SCORE_BETA_1) * grad
        v = _SCORE_BETA_2 * self.v + (1.0 - _SCORE_BETA_2) * grad * grad
        self.m.assign(m)
        self.v.assign(v)
        m_hat = m / (1.0 - ops.power(_SCORE_BETA_1, t))
        v_hat = v / (1.0 - ops.power(_SCORE_BETA_2, t))
        self.score.assign(s - self.learning_rate * m_hat / (ops.sqrt(v_hat) + _SCORE_EPSILON))
        new = w if self.inner is None else self.inner(w)
        self.previous.assign(new)
        self.latent.assign(ops.where(keep, new, self.latent))
        return new


def _sigmoid(x):
    x = np.asarray(x, np.float64)
    return np.exp(-np.logaddexp(0.0, -x))


class _ThresholdPruner(Pruner):
    """A `Pruner` whose masks keep `sigmoid(S) > tau`, `tau` the schedule's value.

    The selection goes through the mask engine: the number of scores above
    the threshold gives the sparsity, and `masking.compute_masks` at that
    sparsity keeps exactly those scores (every kept score is strictly greater
    than every removed one, so the top-k is the thresholded set, ties and
    all).
    """

    def __init__(self, model, callback, verbose=0):
        super().__init__(model, verbose=verbose, scores=callback._wrapper_scores)  # noqa: SLF001 - same module
        self.callback = callback

    def _assign(self, step, wrappers):
        if not wrappers:
            return
        cb = self.callback
        all_masks, kept, total = [], 0, 0
        for w in wrappers:
            tau = cb._set_penalty(w, step)  # noqa: SLF001 - same module
            scores = {i: np.asarray(a) for i, a in enumerate(self.scores(w))}
            wanted = {i: _sigmoid(a) > tau for i, a in scores.items()}
            # At least min_keep weights per tensor (its highest scores).
            count = {i: min(max(int(m.sum()), cb.min_keep), m.size) for i, m in wanted.items()}
            masks = {i: np.zeros(wanted[i].shape, bool) for i in wanted if count[i] == 0}
            rest = [i for i in wanted if count[i] > 0]
            if rest:
                masks.update(masking.compute_masks(
                    {i: scores[i] for i in rest},
                    {i: 1.0 - count[i] / wanted[i].size for i in rest},
                    granularity="unstructured", scope="layer"))
            for i in wanted:
                exact = count[i] == int(wanted[i].sum())
                if int(masks[i].sum()) != count[i] or (exact and not np.array_equal(masks[i], wanted[i])):
                    raise RuntimeError(  # pragma: no cover (cannot happen; see the docstring)
                        f"SoftMovementPruning: the mask engine's top-k differs from "
                        f"sigmoid(S) > {tau} for layer '{w.name}'."
                    )
            masks = {i: masks[i] for i in range(len(wanted))}
            all_masks.append([masks[i] for i in range(len(masks))])
            kept += sum(int(m.sum()) for m in masks.values())
            total += sum(m.size for m in masks.values())
        old = [[ops.convert_to_numpy(m).astype(bool) for m in w.masks] for w in wrappers]
        # As Pruner._assign: the wrappers store the number of batches trained.
        assign_masks(wrappers, all_masks, step if self._step is None else self._step)
        for w, before, after in zip(wrappers, old, all_masks):
            for var, was, now in zip(w.prunable_weights, before, after):
                previous, latent = cb._states[id(var)][1:3]  # noqa: SLF001 - same module
                revived = now & ~was
                if revived.any():  # back with the value it had when pruned (the paper's dense W)
                    var.assign(np.where(revived, ops.convert_to_numpy(latent),
                                        ops.convert_to_numpy(var)))
                previous.assign(ops.convert_to_numpy(var))
        if self.verbose:
            print(f"kprune: step {step}: soft movement, threshold "
                  f"{float(wrappers[0].pruning_schedule.sparsity(step)):.4f}, "
                  f"sparsity {1 - kept / max(total, 1):.4f}")


class SoftMovementPruning(_ConstraintInstaller, PruningCallback):
    """Soft movement pruning during `model.fit`: use it instead of `PruningCallback`.

    Sanh, Wolf & Rush (2020), section 3, "soft movement": every pruned weight
    `W` gets a score `S` (initially `initial_score`), learned by Adam with its
    own `score_learning_rate` from the straight-through gradient `dL/dS =
    dL/dW' * W` plus an L1 penalty on the sigmoid of the scores,

        R(S) = lambda_t * mean(sigmoid(S)) over all pruned weights,

    (the paper's `lambda * sum(sigmoid(S))`, divided by the number of pruned
    weights so that `lambda` does not depend on the model's size), which
    lowers every score that the task does not hold up. The paper's reference
    implementation averages per tensor first, which is the same for tensors
    of equal size (BERT's); for tensors of very different sizes (a 784x300
    kernel next to a 100x10 output layer) it would push each entry of the
    small tensor hundreds of times harder, so kprune weighs every weight the
    same. The masks keep exactly the weights with `sigmoid(S) > tau_t`
    (see `min_keep`). The threshold `tau_t` is the value
    of the wrappers' pruning schedule (for soft movement it is a threshold,
    not a sparsity): the paper's `PolynomialDecay(0.0, 0.1, begin_step,
    end_step, power=3)` ("sigmoied_threshold", initial threshold 0, final
    0.1, cubic, with warm-up and cool-down), and the penalty ramps with it,
    `lambda_t = penalty * tau_t / tau_final`. The sparsity is not set: it is
    where the scores end up, controlled by `penalty` (the paper's
    `final_lambda`, 400 in the reference implementation's SQuAD example),
    and is read from the masks (`kprune.sparsity_report(model)`, `wrapper.masks`).

    Masks are recomputed at the schedule's update steps and selected by the
    mask engine (`masking.compute_masks` at the sparsity the threshold
    implies, which keeps exactly the scores above it: every kept score is
    strictly greater than every removed one); between updates the stored pruned
    weights stay exact zeros after every batch, as with every kprune
    schedule. A weight whose score rises above the threshold again comes back
    with the value it had when it was pruned. Scores are per weight
    (`granularity="unstructured"` only); the threshold is the same for every
    tensor, so layer and global scope give the same masks.

    Args:
        penalty: the final `lambda` (>= 0), the paper's `final_lambda`
            (default 400, the value in the reference implementation's SQuAD
            example). Higher gives higher sparsity; the value that reaches a
            given sparsity depends on the model, data and steps (LeNet-300-100
            in `benchmarks/methods.py`: 130 / 240 / 480 for 90 / 95 / 98%).
        score_learning_rate: Adam's learning rate for the scores (paper:
            1e-2, with a weight learning rate of 3e-5 and tens of thousands
            of steps on SQuAD; short runs need a larger one, e.g. 0.1 for
            ~250 steps in `benchmarks/methods.py`).
        initial_score: the scores' start value (paper: 0, so `sigmoid(S) =
            0.5`).
        min_keep: every tensor keeps at least this many weights (its highest
            scores) even when fewer pass the threshold, so no layer is
            emptied (the reference implementation keeps 0.5%); 0 applies the
            threshold exactly everywhere. Otherwise the masks are exactly
            `sigmoid(S) > tau`.
        verbose: 1 prints the threshold and sparsity at every mask update.

    Returns:
        A Keras callback.

    Attributes:
        movement_scores: dict `wrapper name -> list of score variables` once
            training has started (kept across `fit` calls with this callback).

    Example:
    ```python
    threshold = kprune.PolynomialDecay(0.0, 0.1, begin_step=200, end_step=1800,
                                       power=3, frequency=10)
    pruned = kprune.prune_low_magnitude(pretrained, threshold)
    pruned.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy")
    pruned.fit(x, y, epochs=5,
               callbacks=[kprune.SoftMovementPruning(penalty=400, score_learning_rate=0.01)])
    print(kprune.sparsity_report(pruned).sparsity)   # what the penalty reached
    ```
    """

    def __init__(self, penalty=400.0, score_learning_rate=1e-2, initial_score=0.0, min_keep=1,
                 verbose=0):
        self.penalty = checks.check_float(
            "penalty", penalty, lo=0.0,
            fix="Use a non-negative lambda such as 400 (the paper's final_lambda).")
        self.score_learning_rate = checks.check_float(
            "score_learning_rate", score_learning_rate, lo=0.0, lo_inclusive=False,
            fix="Use a positive learning rate such as 1e-2 (the paper's).")
        self.initial_score = checks.check_float(
            "initial_score", initial_score,
            fix="Use a finite start value such as 0.0 (the paper's).")
        super().__init__(min_keep=min_keep, verbose=verbose, scores=self._wrapper_scores)
        self.movement_scores = {}
        self.penalties = {}  # wrapper name -> scalar variable (lambda_t)
        self._states = {}  # id(variable) -> (score, previous, latent, (m, v, t))
        self._installed = []

    def get_config(self):
        return {"penalty": self.penalty, "score_learning_rate": self.score_learning_rate,
                "initial_score": self.initial_score, "min_keep": self.min_keep,
                "verbose": self.verbose}

    def _start(self):
        self.pruner = _ThresholdPruner(self.model, self, verbose=self.verbose).start()
        for w in self.pruner.wrappers:  # lambda_t before the first update, too
            self._set_penalty(w, self.pruner.current_step + 1)  # the next batch's step

    def _set_penalty(self, wrapper, step):
        """Sets `lambda_t = penalty * tau_t / tau_final`; returns `tau_t`."""
        tau = float(wrapper.pruning_schedule.sparsity(step))
        final = float(wrapper.pruning_schedule.final_sparsity)
        self.penalties[wrapper.name].assign(
            np.asarray(self.penalty * (tau / final if final > 0 else 1.0), "float32"))
        return tau

    def _install(self):
        wrappers = self._wrappers("SoftMovementPruning")
        bad = [w.name for w in wrappers if not isinstance(w.granularity, masking.Unstructured)]
        if bad:
            raise ValueError(
                f"SoftMovementPruning: layers {bad} use granularity "
                f"{wrappers[[w.name for w in wrappers].index(bad[0])].granularity!r}; soft "
                f"movement thresholds single weights, so prune with "
                f"granularity='unstructured' (or use kprune.MovementPruning)."
            )
        optimizer = _optimizer_of(self.model)
        entries = sum(math.prod(tuple(v.shape)) for w in wrappers for v in w.prunable_weights)
        for w in wrappers:
            if w.name not in self.penalties:
                self.penalties[w.name] = keras.Variable(np.zeros((), "float32"), trainable=False,
                                                        name=f"soft_movement_lambda_{w.name}")
            scores = []
            for var, mask in zip(w.prunable_weights, w.masks):
                shape, value = tuple(var.shape), ops.convert_to_numpy(var)
                state = self._states.get(id(var))
                if state is None:
                    score = keras.Variable(np.full(shape, self.initial_score, "float32"),
                                           trainable=False, name=f"soft_movement_score_{var.name}")
                    previous = keras.Variable(value, trainable=False,
                                              name=f"soft_movement_previous_{var.name}")
                    latent = keras.Variable(value, trainable=False,
                                            name=f"soft_movement_latent_{var.name}")
                    moments = (keras.Variable(np.zeros(shape, "float32"), trainable=False),
                               keras.Variable(np.zeros(shape, "float32"), trainable=False),
                               keras.Variable(np.zeros((), "float32"), trainable=False))
                    state = self._states[id(var)] = (score, previous, latent, moments)
                else:
                    keep = ops.convert_to_numpy(mask).astype(bool)
                    state[1].assign(value)
                    state[2].assign(np.where(keep, value, ops.convert_to_numpy(state[2])))
                score, previous, latent, moments = state
                scores.append(score)
                self._installed.append((var, var.constraint))
                var.constraint = SoftMovementConstraint(
                    score, moments, previous, latent, mask, _GradientReader(optimizer, var),
                    self.penalties[w.name], 1.0 / entries,
                    self.score_learning_rate, var.constraint)
            self.movement_scores[w.name] = scores

    def on_train_begin(self, logs=None):
        self._install()
        self._retrace()
        super().on_train_begin(logs)
