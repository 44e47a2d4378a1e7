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

**Which schedule step a batch sees.** Schedule steps count training batches
from 1, as tfmot does: the masks of step `k` are in place when the `k`-th
batch's gradient is applied (0-based batch index `k - 1`), and step 0 is
before training, so a schedule's `begin_step=0` sparsity (e.g.
`ConstantSparsity(0.5)`) is applied before the first batch. The update of
step `k` is computed right after the batch before it finished, from the
weights that batch left. This is tfmot's timing (tfmot increments
`pruning_step` before its mask update): the same schedule, weights and
batches give tfmot's masks and accuracy (measured by
`benchmarks/quality.py`, see `docs/quality.md`).

The counter `current_step` is the number of batches trained so far (the
0-based index of the next batch); it is written to the wrappers'
`pruning_step` variables at every mask update and on `sync()`. `start()`
resumes from the larger of that stored step and the model optimizer's
`iterations`, which Keras advances inside the train step and saves with the
model: so a checkpoint resumes at the right step whatever order the callbacks
ran in (a `ModelCheckpoint` listed before `PruningCallback` included).
"""

from __future__ import annotations

import keras
import numpy as np

from kprune import backend
from kprune.core import checks, masking
from kprune.core.model_tree import find_wrappers
from kprune.core.wrapper import NO_CALLBACK_MESSAGE, STEP_DTYPE, model_assigner

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
            criterion (movement pruning, `kprune.methods.movement`, uses this).

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
        self._applied = None  # the last schedule step whose update is applied
        self._buffers = {}  # (wrapper index, weight index) -> |w| buffer

    @property
    def current_step(self):
        """The number of batches trained so far, i.e. the 0-based index of
        the next batch (None before `start()`). That batch trains with the
        masks of schedule step `current_step + 1`."""
        return self._step

    def start(self, catch_up=False):
        """Resumes from the step stored in the model (0 if fresh).

        The step is the larger of the wrappers' stored `pruning_step` and the
        model optimizer's `iterations` (saved with the model by `model.save`
        and `ModelCheckpoint`, so a checkpoint written before the step was
        stored still resumes right). With `n` that step, applies the update of
        schedule step `n` if it is one (so a schedule starting at step 0
        applies its initial sparsity before the first batch; on resume this
        re-applies the last update, which changes nothing for magnitude
        scores), then the update of step `n + 1`, whose masks the next batch
        trains with.

        Args:
            catch_up: also apply, at step `n`'s sparsity, an update due
                before step `n` that no batch applied (`PruningCallback`
                passes True when an unbuilt model was built by its first
                batch, so a schedule starting at step 0 is not skipped).
        """
        for w in self.wrappers:
            w.armed = True
        fn = getattr(self.model, "train_function", None)
        if isinstance(fn, _RequireCallback):
            self.model.train_function = fn.fn
        stored = [w.step for w in self.wrappers]
        self._step = max([0, optimizer_iterations(self.model)] + stored)
        self._applied = -1 if catch_up else self._step - 1
        self._apply_through(self._step)
        self._apply_through(self._step + 1)
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
        self._buffers = {}
        for w in self.wrappers:
            w.armed = False
        fn = getattr(self.model, "train_function", None)
        if self.wrappers and fn is not None and not isinstance(fn, _RequireCallback):
            self.model.train_function = _RequireCallback(fn, self.model, self.wrappers)

    def is_due(self, n=1, look_ahead=True):
        """Whether `step(n, look_ahead)` will update any mask."""
        if self._step is None:
            return False
        return bool(self._due(self._applied + 1, self._step + int(n) + int(bool(look_ahead))))

    def step(self, n=1, look_ahead=True):
        """Counts `n` trained batches and applies the update the next batch needs.

        After it, the next batch trains with the masks of schedule step
        `current_step + 1`. With `n > 1` (e.g. `steps_per_execution`), an
        update step passed over inside the `n` batches is applied now, with
        the sparsity of step `current_step + 1`.

        Args:
            n: the number of batches trained since the last call.
            look_ahead: `False` leaves the update the next batch needs
                pending (it is applied by the next `step()`, `step(0)`
                applies only what is pending, or by `start()`); updates that
                the `n` batches themselves should have had (`n > 1`) are
                still applied. `PruningCallback` counts at each batch's end
                and applies the next batch's update at its beginning, so a
                `fit` never ends with an update that it did not train with
                (as in tfmot). A custom loop may call
                `step(look_ahead=False)` after its last batch for the same
                end state.
        """
        n = checks.check_int("n", n, lo=0)
        if self._step is None:
            raise RuntimeError("Call Pruner.start() before Pruner.step().")
        self._step += n
        self._apply_through(self._step + int(bool(look_ahead)))

    def sync(self):
        """Writes the current step into every wrapper's `pruning_step`."""
        if self._step is None:
            return
        for w in self.wrappers:
            w.set_step(self._step)

    def update_masks(self, step=None):
        """Recomputes the masks at schedule step `step`, due or not (default:
        the step the next batch trains with, `current_step + 1`)."""
        if step is None and self._step is not None:
            step = self._step + 1
        step = step if step is None else checks.check_int(
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

    def _apply_through(self, last):
        """Applies the updates due after the last applied step, up to `last`
        (at `last`'s sparsity)."""
        if last > self._applied:
            self._assign(last, self._due(self._applied + 1, last))
            self._applied = last

    def _assign(self, step, wrappers):
        """Computes the masks of `wrappers` at schedule `step` and assigns
        them with the model's one `MaskAssigner`.

        Each pruned weight is read once (without a copy where the backend
        allows) into a score buffer that this `Pruner` reuses; each selection
        starts near its last threshold (the assigner's `SelectionMemo`); each
        mask is written once, in one call for all of them."""
        if not wrappers:
            return
        assigner = model_assigner(self.wrappers)
        due = {id(w) for w in wrappers}
        scores, sparsity, gran, layouts = {}, {}, {}, {}
        global_sparsity = None
        for wi, w in enumerate(self.wrappers):
            if id(w) not in due:
                continue
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
                    scores[key] = self._magnitude(key, var)
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
                memo=assigner.memo,
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
                memo=assigner.memo,
            ))
        # The wrappers store the number of batches trained, not the schedule
        # step of this update (one more; see the module docstring).
        assigner([
            [masks[(wi, vi)] for vi in range(len(w.prunable_weights))] if id(w) in due else None
            for wi, w in enumerate(self.wrappers)
        ], step if self._step is None else self._step)
        if self.verbose:
            kept = sum(int(m.sum()) for m in masks.values())
            total = sum(m.size for m in masks.values())
            print(
                f"kprune: step {step}: updated {len(wrappers)} layer mask(s), "
                f"sparsity {1 - kept / max(total, 1):.4f}"
            )

    def _magnitude(self, key, variable):
        """`|w|` of a pruned variable, in a buffer reused across updates
        (a fresh 100 MB array costs more in page faults than `abs` itself)."""
        value = backend.read_numpy(variable)
        buffer = self._buffers.get(key)
        if buffer is None or buffer.shape != value.shape or buffer.dtype != value.dtype:
            buffer = self._buffers[key] = np.empty_like(value)
        return np.abs(value, out=buffer)


class _RequireCallback:
    """A compiled train function that refuses to run unless the pruned
    layers are armed (a `PruningCallback` in this `fit`, or `Pruner.start()`).
    """

    def __init__(self, fn, model, wrappers):
        self.fn, self.model, self.wrappers = fn, model, wrappers

    def __call__(self, *args, **kwargs):
        if not any(w.armed for w in self.wrappers):
            if args:
                backend.restore_train_state(self.model, args[0])
            raise ValueError(NO_CALLBACK_MESSAGE.format(name=self.wrappers[0].layer.name))
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
    to run (0, 1, 2, ...; for example `int(optimizer.iterations)`); that
    step trains with the masks of schedule step `step + 1` (schedule steps
    count batches from 1, as tfmot's do; see `kprune.core.pruner`). A wrapper is
    updated when its schedule has an update step after the last one applied
    and at most `step + 1`, so a loop that calls it only every few steps
    still applies every update (when it is called). The
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
        w.armed = True
    # The batch about to run trains with the masks of schedule step
    # `step + 1` (see the module docstring); a first call (or a repeated one)
    # also applies the update of `step` itself, as `Pruner.start()` does.
    # The stored step is the number of batches trained (-1: never started);
    # an earlier call with it applied the updates through `stored + 1`.
    phases = {}  # (first, last) -> wrappers with an update in [first, last]
    for w in pruner.wrappers:
        stored = w.step
        if stored < 0:
            ranges = [(0, step), (step + 1, step + 1)]
        elif stored >= step:
            ranges = [(step, step), (step + 1, step + 1)]
        else:
            ranges = [(stored + 2, step + 1)]
        for first, last in ranges:
            if _has_update(w, first, last):
                phases.setdefault((first, last), []).append(w)
    pruner._step = step  # noqa: SLF001 - same module
    updated = set()
    for (first, last), wrappers in sorted(phases.items(), key=lambda kv: kv[0][1]):
        pruner._assign(last, wrappers)  # noqa: SLF001 - same module
        updated.update(id(w) for w in wrappers)
    pruner.sync()
    return [w.layer.name for w in pruner.wrappers if id(w) in updated]


def _has_update(wrapper, first, last):
    nxt = wrapper.pruning_schedule.next_update(first)
    return nxt is not None and nxt <= last
