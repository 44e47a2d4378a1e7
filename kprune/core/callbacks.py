"""Keras callbacks that drive pruning during `model.fit`."""

from __future__ import annotations

import keras
import numpy as np

from kprune.core import checks
from kprune.core.model_tree import find_wrappers
from kprune.core.pruner import Pruner, optimizer_iterations
from kprune.utils.event_file import EventFileWriter

__all__ = ["PruningCallback", "PruningSummaries", "UpdatePruningStep"]


class PruningCallback(keras.callbacks.Callback):
    """Advances the pruning step and updates masks during `model.fit`.

    Required whenever a model with scheduled `PruneWrapper`s is trained with
    `fit`; training without it raises an error that names this callback.

    After every training batch the stored weights are exactly zero wherever
    the mask is zero: the wrappers' `MaskConstraint` re-applies the masks
    inside the optimizer step, and mask updates zero newly pruned weights at
    once.

    Schedule steps count training batches from 1, as tfmot's do: the `k`-th
    batch of training trains with the masks of schedule step `k` (step 0,
    e.g. `begin_step=0`, is applied before the first batch). Each update is
    computed at the beginning of the batch that needs it, from the weights
    the previous batch left, so a `fit` never ends with an update that it
    did not train with.

    The step is written into the model at every mask update and before the
    end of each epoch (at the epoch's last batch, before `on_epoch_end` of any
    other callback such as `ModelCheckpoint`), so a model saved at an epoch end
    resumes the schedule at the right step when `fit` is called again with a
    new `PruningCallback`.

    **Driven by hand** (tfmot's custom-loop protocol): call `set_model(model)`
    and `on_train_begin()` once, then `on_train_batch_begin(batch)` before
    every training step; the batch index is not read (tfmot's guide passes
    -1). Each call after the first advances the step by one and applies the
    masks due at it *before* the step runs, and `on_epoch_end(epoch)` stores
    the step in the model. A loop that also calls `on_train_batch_end` after
    each step (as `fit` does) advances there instead, never twice.

    Args:
        normalize: for `scope="global"` models: `None` or `"lamp"`.
        min_keep: for `scope="global"` models: the fewest weights (or groups)
            any tensor keeps.
        verbose: 1 prints a line at every mask update.
        scores: `None` (magnitude) or a callable `wrapper -> list of score
            arrays`, passed to `kprune.Pruner`.

    Example:
    ```python
    pruned = kprune.prune_low_magnitude(model, kprune.ConstantSparsity(0.8))
    pruned.compile("adam", "sparse_categorical_crossentropy")
    pruned.fit(x, y, epochs=3, callbacks=[kprune.PruningCallback()])
    ```
    """

    def __init__(self, normalize=None, min_keep=1, verbose=0, scores=None):
        super().__init__()
        checks.check_choice("normalize", normalize, (None, "lamp"))
        min_keep = checks.check_int("min_keep", min_keep, lo=0)
        checks.check_choice("verbose", verbose, (0, 1, 2, False, True))
        self.scores = scores
        self.normalize = normalize
        self.min_keep = min_keep
        self.verbose = verbose
        self.pruner = None
        self._last_batch = -1
        # True between on_train_batch_begin and on_train_batch_end: a batch
        # whose end was never reported (a hand-driven loop) is counted at the
        # next on_train_batch_begin or on_epoch_end.
        self._batch_open = False

    def on_train_begin(self, logs=None):
        self.pruner = None
        self._batch_open = False
        wrappers = find_wrappers(self.model)
        if wrappers and not all(w.built for w in wrappers):
            # A subclassed model that was not built before fit() is built by
            # its first train step: arm the wrappers now and start pruning at
            # the end of that first batch (which then ran with dense weights;
            # build the model first, e.g. model(x[:1]), to prune from batch 0).
            for w in wrappers:
                w.armed = True
            return
        self._start()

    def _start(self, catch_up=False):
        self.pruner = Pruner(
            self.model, normalize=self.normalize, min_keep=self.min_keep, verbose=self.verbose,
            scores=self.scores,
        ).start(catch_up=catch_up)

    def on_epoch_begin(self, epoch, logs=None):
        self._last_batch = -1

    def on_train_batch_begin(self, batch, logs=None):
        # The batch about to run trains with the masks of schedule step
        # `current_step + 1`: an update it needs is applied here, right before
        # it (so no fit ends with an update it never trained with).
        if self.pruner is None:
            wrappers = find_wrappers(self.model)
            if wrappers and not all(w.built for w in wrappers):
                return  # an unbuilt subclassed model starts at batch end
            self._start()
        else:
            # `fit` reports every batch's end; a loop that calls only
            # on_train_batch_begin (tfmot's custom loop) has one open batch.
            n = 1 if self._batch_open else 0
            if self.pruner.is_due(n):
                # `self.model` (not `self._model`): on JAX this syncs the
                # train state into the variables before they are read and
                # written, and fit then continues from the assigned values.
                # Only when variables are touched: other batches cost nothing.
                self.model  # noqa: B018
            self.pruner.step(n)
        self._batch_open = True

    def on_train_batch_end(self, batch, logs=None):
        self._batch_open = False
        # With steps_per_execution > 1, Keras reports the last batch index of
        # each execution, so the step advances by the difference.
        if self.pruner is None:
            # The model was built by this first batch: updates due at step 0
            # (a schedule's first) are applied now rather than skipped.
            self._start(catch_up=True)
        # A hand-driven loop may pass batch=-1 (as tfmot's guide does): one step.
        n = batch - self._last_batch if batch >= 0 else 1
        self._last_batch = max(batch, self._last_batch)
        steps = (self.params or {}).get("steps")
        last = bool(steps and batch + 1 >= steps)
        # Count the batch; the update the next batch needs waits for its
        # on_train_batch_begin (see there). With steps_per_execution > 1,
        # updates due inside the execution are applied now.
        if last or self.pruner.is_due(n, look_ahead=False):
            self.model  # noqa: B018  (JAX state sync, as in on_train_batch_begin)
        self.pruner.step(n, look_ahead=False)
        if last:
            self.pruner.sync()

    def on_epoch_end(self, epoch, logs=None):
        if self.pruner is not None:
            self.model  # noqa: B018  (JAX state sync, as above)
            if self._batch_open:  # driven by hand: the last batch has ended
                self._batch_open = False
                self.pruner.step(1, look_ahead=False)
            self.pruner.sync()

    def on_train_end(self, logs=None):
        if self.pruner is not None:
            self.model  # noqa: B018
            self.pruner.stop()


#: tfmot's name for the same callback.
UpdatePruningStep = PruningCallback


class PruningSummaries(keras.callbacks.Callback):
    """Writes per-layer sparsity to TensorBoard during `model.fit`.

    Scalars, all at the pruning step (the number of training batches run so
    far, the step the schedules use):

    * `sparsity/<layer>`: the fraction of zeros in the layer's masks;
    * `target_sparsity/<layer>`: what the layer's schedule asks for at that
      step (masks follow it at the schedule's update steps);
    * `sparsity_total`: the fraction of zeros over all pruned weights.

    Put it after `kprune.PruningCallback` in `callbacks=[...]`, so a batch's
    mask update is written at that batch. The event files are written by
    `kprune.utils.event_file` (no TensorFlow needed), on every Keras backend.

    **Driven by hand** (tfmot's custom-loop protocol: `set_model(model)`, then
    `on_epoch_begin(epoch)` / `on_epoch_end(epoch)` around a loop, without
    `on_train_begin`): each of these two calls writes the scalars at the
    model's current step (the larger of the step stored in its wrappers and
    its optimizer's `iterations`).

    Args:
        log_dir: directory of the event files (created if needed); point
            TensorBoard at it, or at a parent shared with
            `keras.callbacks.TensorBoard`.
        update_freq: `"epoch"` (at each epoch end), `"batch"` (after every
            batch) or an integer `N` (every `N` batches).

    Example:
    ```python
    pruned.fit(x, y, epochs=3, callbacks=[
        kprune.PruningCallback(),
        kprune.PruningSummaries("logs/pruning", update_freq=100),
    ])
    # tensorboard --logdir logs
    ```
    """

    def __init__(self, log_dir, update_freq="epoch"):
        super().__init__()
        if not (isinstance(update_freq, str) and update_freq in ("epoch", "batch")):
            if isinstance(update_freq, (bool, np.bool_)) or not isinstance(update_freq, (int, np.integer)):
                raise ValueError(
                    f"update_freq must be 'epoch', 'batch' or a positive integer, "
                    f"got {checks.describe(update_freq)}."
                )
            update_freq = checks.check_int(
                "update_freq", update_freq, lo=1,
                fix="Use 'epoch', 'batch' or a positive number of batches.",
            )
        self.log_dir = checks.check_path(
            "log_dir", log_dir,
            fix="Pass the directory for the TensorBoard event files, e.g. "
            "PruningSummaries('logs/pruning').",
        )
        self.update_freq = 1 if update_freq == "batch" else update_freq
        self._writer = None
        self._step = 0
        self._last_batch = -1
        self._in_fit = False  # on_train_begin was called (fit, or by hand)

    def on_train_begin(self, logs=None):
        self._in_fit = True

        if not find_wrappers(self.model):
            raise ValueError(
                f"PruningSummaries: model '{self.model.name}' has no "
                f"PruneWrapper layers to report on."
            )
        self._step = max([0] + [w.step for w in find_wrappers(self.model) if w.built])
        self._writer = EventFileWriter(self.log_dir)

    def on_epoch_begin(self, epoch, logs=None):
        self._last_batch = -1
        if not self._in_fit:
            self.write(self.model_step())

    def on_train_batch_end(self, batch, logs=None):
        self._step += batch - self._last_batch if batch >= 0 else 1
        self._last_batch = max(batch, self._last_batch)
        if self.update_freq != "epoch" and self._step % self.update_freq == 0:
            self.write(self._step)

    def on_epoch_end(self, epoch, logs=None):
        if not self._in_fit:
            self.write(self.model_step())
        elif self.update_freq == "epoch":
            # A loop that called on_train_begin but reports no batch ends
            # still writes at the model's step.
            self.write(self._step if self._last_batch >= 0 else max(self._step, self.model_step()))

    def model_step(self):
        """The model's current step: the larger of the step stored in its
        wrappers and its optimizer's `iterations` (0 before training)."""
        return max(
            [0, optimizer_iterations(self.model)]
            + [w.step for w in find_wrappers(self.model) if w.built]
        )

    def on_train_end(self, logs=None):
        self._in_fit = False
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def write(self, step):
        """Writes the scalars for `step` now (`fit` calls it on schedule)."""
        if self._writer is None:
            self._writer = EventFileWriter(self.log_dir)
        zeros_total = size_total = 0
        values = []
        for w in find_wrappers(self.model):
            if not w.built:
                continue
            zeros = size = 0
            for mask in w.masks:
                m = keras.ops.convert_to_numpy(mask)
                zeros += int(m.size - np.count_nonzero(m))
                size += int(m.size)
            zeros_total += zeros
            size_total += size
            name = w.layer.name
            values.append((f"sparsity/{name}", zeros / max(size, 1)))
            if w.pruning_schedule is not None:
                values.append((f"target_sparsity/{name}",
                               float(w.pruning_schedule.sparsity(int(step)))))
        values.append(("sparsity_total", zeros_total / max(size_total, 1)))
        self._writer.scalars(values, int(step))
        self._writer.flush()
