"""Keras callbacks that drive pruning during `model.fit`."""

from __future__ import annotations

import keras

from kprune.prune import find_wrappers
from kprune.pruner import Pruner

__all__ = ["PruningCallback", "UpdatePruningStep"]


class PruningCallback(keras.callbacks.Callback):
    """Advances the pruning step and updates masks during `model.fit`.

    Required whenever a model with scheduled `PruneWrapper`s is trained with
    `fit`; training without it raises an error that names this callback.

    After every training batch the stored weights are exactly zero wherever
    the mask is zero: the wrappers' `MaskConstraint` re-applies the masks
    inside the optimizer step, and mask updates zero newly pruned weights at
    once.

    The step is written into the model at every mask update and before the
    end of each epoch (at the epoch's last batch, before `on_epoch_end` of any
    other callback such as `ModelCheckpoint`), so a model saved at an epoch end
    resumes the schedule at the right step when `fit` is called again with a
    new `PruningCallback`.

    Args:
        normalize: for `scope="global"` models: `None` or `"lamp"`.
        min_keep: for `scope="global"` models: the fewest weights (or groups)
            any tensor keeps.
        verbose: 1 prints a line at every mask update.

    Example:
    ```python
    pruned = kprune.prune_low_magnitude(model, kprune.ConstantSparsity(0.8))
    pruned.compile("adam", "sparse_categorical_crossentropy")
    pruned.fit(x, y, epochs=3, callbacks=[kprune.PruningCallback()])
    ```
    """

    def __init__(self, normalize=None, min_keep=1, verbose=0):
        super().__init__()
        self.normalize = normalize
        self.min_keep = min_keep
        self.verbose = verbose
        self.pruner = None
        self._last_batch = -1

    def on_train_begin(self, logs=None):
        self.pruner = None
        wrappers = find_wrappers(self.model)
        if wrappers and not all(w.built for w in wrappers):
            # A subclassed model that was not built before fit() is built by
            # its first train step: arm the wrappers now and start pruning at
            # the end of that first batch (which then ran with dense weights;
            # build the model first, e.g. model(x[:1]), to prune from batch 0).
            for w in wrappers:
                w._armed = True
            return
        self._start()

    def _start(self):
        self.pruner = Pruner(
            self.model, normalize=self.normalize, min_keep=self.min_keep, verbose=self.verbose
        ).start()

    def on_epoch_begin(self, epoch, logs=None):
        self._last_batch = -1

    def on_train_batch_end(self, batch, logs=None):
        # With steps_per_execution > 1, Keras reports the last batch index of
        # each execution, so the step advances by the difference.
        if self.pruner is None:
            self._start()
        self.pruner.step(batch - self._last_batch)
        self._last_batch = batch
        steps = (self.params or {}).get("steps")
        if steps and batch + 1 >= steps:
            self.pruner.sync()

    def on_epoch_end(self, epoch, logs=None):
        if self.pruner is not None:
            self.pruner.sync()

    def on_train_end(self, logs=None):
        if self.pruner is not None:
            self.pruner.sync()


#: tfmot's name for the same callback.
UpdatePruningStep = PruningCallback
