"""`Pruner`: advances the pruning step and updates masks on schedule.

`PruningCallback` drives a `Pruner` during `model.fit`; custom training loops
use one directly:

```python
pruner = kprune.Pruner(model)
pruner.start()
for x, y in dataset:
    train_step(x, y)        # optimizer.apply_gradients(...)
    pruner.step()           # advance one step, update masks if due
pruner.sync()               # store the step in the model before saving
```

A loop that keeps its own step counter can call `kprune.update_masks(model,
step)` before each step instead (it needs no object and catches up on
updates it was not called at). Either way, pruned weights stay exactly zero
after `optimizer.apply_gradients`, because the wrappers' `MaskConstraint`
runs inside it; a loop that assigns variables itself must multiply by the
masks (`wrapper.masks`) on its own.

The step is a Python counter while training; it is written to the wrappers'
`pruning_step` variables at every mask update and on `sync()`. `start()`
resumes from the larger of that stored step and the model optimizer's
`iterations`, which Keras advances inside the train step and saves with the
model: so a checkpoint resumes at the right step whatever order the callbacks
ran in (a `ModelCheckpoint` listed before `PruningCallback` included).
"""

from __future__ import annotations

import keras
import numpy as np

from kprune import backend, checks, masking
from kprune.prune import find_wrappers
from kprune.wrapper import STEP_DTYPE, assign_masks

__all__ = ["Pruner", "update_masks"]


class Pruner:
    """Updates the masks of a pruned model according to its schedules.

    Args:
        model: a model with `PruneWrapper` layers (from
            `kprune.prune_low_magnitude`, or wrapped by hand).
        normalize: for wrappers with `scope="global"`: `None` compares raw
            magnitudes across layers, `"lamp"` normalises them per layer first
            (LAMP, Lee et al. 2021).
        min_keep: for global scope, every weight tensor keeps at least this
            many weights (or groups), so no layer is emptied.
        verbose: 1 prints a line at every mask update.
        scores: where the scores come from: `None` (default) is magnitude
            `|w|`; a callable `scores(wrapper) -> list of arrays`, one per
            `wrapper.prunable_weights` (higher = keep), plugs in another
            criterion (movement pruning, `kprune.movement`, uses this).

    Returns:
        A `Pruner`. Call `start()` once before training and `step()` after
        every optimizer update.

    Example:
    >>> pruner = kprune.Pruner(pruned_model)
    >>> pruner.start()
    >>> pruner.step()
    """

    def __init__(self, model, normalize=None, min_keep=1, verbose=0, scores=None):
        if scores is not None and not callable(scores):
            raise TypeError(f"scores must be None or a callable wrapper -> arrays, got {scores!r}.")
        checks.check_choice("normalize", normalize, (None, "lamp"))
        min_keep = checks.check_int("min_keep", min_keep, lo=0)
        checks.check_choice("verbose", verbose, (0, 1, 2, False, True))
        if not isinstance(model, keras.layers.Layer):
            raise TypeError(
                f"model must be a Keras model with PruneWrapper layers (from "
                f"kprune.prune_low_magnitude), got {checks.describe(model)}."
            )
        wrappers = find_wrappers(model)
        if not wrappers:
            raise ValueError(
                f"Model '{getattr(model, 'name', model)}' has no PruneWrapper "
                f"layers; prune it with kprune.prune_low_magnitude(model) first."
            )
        unbuilt = [w.name for w in wrappers if not w.built]
        if unbuilt:
            raise ValueError(f"PruneWrapper layers {unbuilt} are not built yet; build the model first.")
        self.model = model
        self.normalize = normalize
        self.min_keep = min_keep
        self.verbose = verbose
        self.scores = scores
        self.wrappers = [w for w in wrappers if w.pruning_schedule is not None]
        self.global_wrappers = [w for w in self.wrappers if w.scope == "global"]
        schedules = {repr(w.pruning_schedule) for w in self.global_wrappers}
        if len(schedules) > 1:
            raise ValueError(
                "Global-scope wrappers must share one schedule; got "
                f"{sorted(schedules)}."
            )
        self._step = None

    @property
    def current_step(self):
        """The step of the next training batch (None before `start()`)."""
        return self._step

    def start(self):
        """Resumes from the step stored in the model (0 if fresh).

        The step is the larger of the wrappers' stored `pruning_step` and the
        model optimizer's `iterations` (saved with the model by `model.save`
        and `ModelCheckpoint`, so a checkpoint written before the step was
        stored still resumes right). Applies the masks of that step if it is
        an update step (so a schedule starting at step 0 applies its initial
        sparsity before the first batch).
        """
        for w in self.wrappers:
            w._armed = True
        fn = getattr(self.model, "train_function", None)
        if isinstance(fn, _RequireCallback):
            self.model.train_function = fn.fn
        stored = [w.step for w in self.wrappers]
        self._step = max([0, optimizer_iterations(self.model)] + stored)
        self._update(self._step, self._step)
        self.sync()
        return self

    def stop(self):
        """Disarms the wrappers after training (see `PruningCallback`).

        The model's compiled train function is kept, behind a guard: a later
        `fit` without the callback raises the missing-callback error at its
        first step (before any weight changes) instead of training with a
        frozen schedule, and a later `fit` with the callback runs the same
        compiled function, with no retracing.
        """
        self.sync()
        for w in self.wrappers:
            w._armed = False
        fn = getattr(self.model, "train_function", None)
        if self.wrappers and fn is not None and not isinstance(fn, _RequireCallback):
            self.model.train_function = _RequireCallback(fn, self.model, self.wrappers)

    def is_due(self, n=1):
        """Whether `step(n)` will update any mask."""
        if self._step is None:
            return False
        return bool(self._due(self._step + 1, self._step + int(n)))

    def step(self, n=1):
        """Advances `n` training steps and updates masks if an update is due.

        With `n > 1` (e.g. `steps_per_execution`), an update step passed over
        inside the `n` steps is applied at the new step.
        """
        n = checks.check_int("n", n, lo=0)
        if self._step is None:
            raise RuntimeError("Call Pruner.start() before Pruner.step().")
        old = self._step
        self._step = old + n
        self._update(old + 1, self._step)

    def sync(self):
        """Writes the current step into every wrapper's `pruning_step`."""
        if self._step is None:
            return
        for w in self.wrappers:
            w.set_step(self._step)

    def update_masks(self, step=None):
        """Recomputes the masks at `step` (default: now), due or not."""
        step = self._step if step is None else checks.check_int(
            "step", step, lo=0, hi=int(np.iinfo(STEP_DTYPE).max))
        if step is None:
            step = max([0] + [w.step for w in self.wrappers])
        self._assign(step, self.wrappers)

    # -- internals ----------------------------------------------------------

    def _due(self, first, last):
        due = []
        for w in self.wrappers:
            nxt = w.pruning_schedule.next_update(first)
            if nxt is not None and nxt <= last:
                due.append(w)
        return due

    def _update(self, first, last):
        self._assign(last, self._due(first, last))

    def _assign(self, step, wrappers):
        if not wrappers:
            return
        scores, sparsity, gran, layouts = {}, {}, {}, {}
        global_sparsity = None
        for wi, w in enumerate(wrappers):
            s = float(w.pruning_schedule.sparsity(step))
            if w.scope == "global":
                global_sparsity = s
            custom = None if self.scores is None else list(self.scores(w))
            if custom is not None and (
                len(custom) != len(w.prunable_weights)
                or any(np.shape(c) != tuple(v.shape) for c, v in zip(custom, w.prunable_weights))
            ):
                raise ValueError(
                    f"scores({w.name!r}) must return one array per pruned weight, with "
                    f"shapes {[tuple(v.shape) for v in w.prunable_weights]}; got "
                    f"{[np.shape(c) for c in custom]}."
                )
            for vi, (var, layout) in enumerate(zip(w.prunable_weights, w.layouts)):
                key = (wi, vi)
                if custom is None:
                    scores[key] = np.abs(keras.ops.convert_to_numpy(var))
                else:
                    scores[key] = np.asarray(custom[vi])
                gran[key] = w.granularity
                layouts[key] = layout
                if w.scope == "layer":
                    sparsity[key] = s
        masks = {}
        layer_keys = [k for k in scores if k in sparsity]
        if layer_keys:
            masks.update(masking.compute_masks(
                {k: scores[k] for k in layer_keys},
                {k: sparsity[k] for k in layer_keys},
                granularity=gran,
                layouts=layouts,
                scope="layer",
            ))
        global_keys = [k for k in scores if k not in sparsity]
        if global_keys:
            masks.update(masking.compute_masks(
                {k: scores[k] for k in global_keys},
                global_sparsity,
                granularity=gran,
                layouts=layouts,
                scope="global",
                normalize=self.normalize,
                min_keep=self.min_keep,
            ))
        assign_masks(wrappers, [
            [masks[(wi, vi)] for vi in range(len(w.prunable_weights))]
            for wi, w in enumerate(wrappers)
        ], step)
        if self.verbose:
            kept = sum(int(m.sum()) for m in masks.values())
            total = sum(m.size for m in masks.values())
            print(
                f"kprune: step {step}: updated {len(wrappers)} layer mask(s), "
                f"sparsity {1 - kept / max(total, 1):.4f}"
            )


class _RequireCallback:
    """A compiled train function that refuses to run unless the pruned
    layers are armed (a `PruningCallback` in this `fit`, or `Pruner.start()`).
    """

    def __init__(self, fn, model, wrappers):
        self.fn, self.model, self.wrappers = fn, model, wrappers

    def __call__(self, *args, **kwargs):
        if not any(w._armed for w in self.wrappers):
            from kprune.wrapper import _NO_CALLBACK_MESSAGE  # noqa: PLC0415

            if args:
                backend.restore_train_state(self.model, args[0])
            raise ValueError(_NO_CALLBACK_MESSAGE.format(name=self.wrappers[0].layer.name))
        return self.fn(*args, **kwargs)


def optimizer_iterations(model):
    """`model.optimizer.iterations` as an int, or 0 without an optimizer."""
    optimizer = getattr(model, "optimizer", None)
    iterations = getattr(optimizer, "iterations", None)
    if iterations is None:
        return 0
    try:
        return int(keras.ops.convert_to_numpy(iterations))
    except (TypeError, ValueError):
        return 0


def update_masks(model, step, normalize=None, min_keep=1):
    """Updates the masks that are due at `step`, for loops with their own counter.

    Call it **before** each training step, with the index of the step about
    to run (0, 1, 2, ...; for example `int(optimizer.iterations)`). A wrapper
    is updated when its schedule has an update step after the step stored in
    the model and at most `step`, so a loop that calls it only every few
    steps still applies every update (at the step it is called with). The
    step is then stored in the model (for saving and resuming), and the
    wrappers are armed for training like `Pruner.start()` does.

    Args:
        model: a pruned model.
        step: the index of the training step about to run (int >= 0).
        normalize, min_keep: as in `Pruner`.

    Returns:
        The list of layer names whose masks were updated.

    Example:
    ```python
    for x, y in dataset:
        kprune.update_masks(model, int(optimizer.iterations))
        train_step(x, y)   # GradientTape + optimizer.apply_gradients
    ```
    """
    step = checks.check_int(
        "step", step, lo=0, hi=int(np.iinfo(STEP_DTYPE).max),
        fix="Pass the index of the training step about to run, e.g. int(optimizer.iterations).",
    )
    pruner = Pruner(model, normalize=normalize, min_keep=min_keep)
    for w in pruner.wrappers:
        w._armed = True
    due = []
    for w in pruner.wrappers:
        stored = w.step
        first = stored + 1 if stored < step else step
        nxt = w.pruning_schedule.next_update(first)
        if nxt is not None and nxt <= step:
            due.append(w)
    pruner._step = step
    pruner._assign(step, due)
    pruner.sync()
    return [w.layer.name for w in due]
