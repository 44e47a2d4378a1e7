"""Iterative channel pruning: in steps with fine-tuning, or during `fit`."""

from __future__ import annotations

import collections.abc

import keras

from kprune.core import checks
from kprune.utils import progress
from kprune.structured.graph import check_graph_model
from kprune.structured.handlers import find_weight
from kprune.structured.plan import check_ratio
from kprune.structured.channel_pruner import ChannelPruner, check_ratio_arg

__all__ = ["prune_iteratively", "ChannelPruningCallback"]


def _cumulative(ratio, step, steps):
    if isinstance(ratio, dict):
        return {k: v * step / steps for k, v in ratio.items()}
    return ratio * step / steps


def _step_ratio(ratio, step, steps):
    """Ratio to apply to the current model so that, after `step` of `steps`,
    the cumulative removed fraction is `ratio * step / steps`."""

    def one(r):
        before = 1.0 - r * (step - 1) / steps
        after = 1.0 - r * step / steps
        return 1.0 - after / before

    if isinstance(ratio, dict):
        return {k: one(v) for k, v in ratio.items()}
    return one(ratio)


def prune_iteratively(model, pruning_ratio=0.5, steps=3, fine_tune=None, verbose=0, verify=True,
                      **kwargs):
    """Prunes in `steps` physical steps, fine-tuning after each.

    After step `i` of `k`, about `pruning_ratio * i / k` of every group's
    original channels are gone (each step prunes the current, already thinner
    model by the matching fraction).

    Args:
        model: the model to prune (not modified).
        pruning_ratio: final fraction (float or `{layer: ratio}` dict).
        steps: number of pruning steps.
        fine_tune: `fn(model, step) -> model or None`, called after each step
            with the new thinner model (compile and fit it there). If it
            returns None, the same model object is used for the next step.
        verbose: 1 prints each step's plan.
        verify: check each step's thin model (see `ChannelPruner.prune`).
        **kwargs: other `ChannelPruner` arguments.

    Returns:
        The final thinner model.

    Example:
    >>> def tune(m, step):
    ...     m.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    ...     m.fit(x, y, epochs=1, verbose=0)
    >>> thin = prune_iteratively(model, 0.5, steps=3, fine_tune=tune)
    """
    steps = checks.check_int("steps", steps, lo=1)
    check_graph_model(model)
    check_ratio_arg(model, pruning_ratio, kwargs.get("global_pruning", False))
    checks.check_callable("fine_tune", fine_tune, signature="fn(model, step) -> model or None")
    checks.check_choice("verbose", verbose, (0, 1, 2, False, True))
    current = model
    # Full lines (no in-place bar): each step prints its plan and the user's fine-tuning output.
    bar = progress.Progress(steps, "prune_iteratively", verbose=1 if verbose else 0, unit="step",
                            interactive=False)
    for step in range(1, steps + 1):
        pruner = ChannelPruner(current, pruning_ratio=_step_ratio(pruning_ratio, step, steps),
                               **kwargs)
        plan = pruner.plan()
        if verbose:
            print(plan.report())
        current = pruner.prune(plan, verify=verify)
        if fine_tune is not None:
            tuned = fine_tune(current, step)
            current = tuned if tuned is not None else current
        bar.update(1)
    return current


class ChannelPruningCallback(keras.callbacks.Callback):
    """Prunes channels during `model.fit` at given epochs; the thin model comes at the end.

    `fit` trains one model object and cannot swap it for another, so during
    training the callback *masks*: at each pruning epoch it scores the
    channels of the model being trained, zeroes every weight of the channels
    it removes (filters, biases, normalisation parameters and the next
    layers' input slices), and keeps them at zero after every batch. A masked
    model computes exactly what the thinner model computes, so the
    remaining epochs fine-tune the thinner network. When training ends, the
    physically thinner model is built and stored in `callback.pruned_model`
    (the fitted model itself stays full-size, with zeros).

    Args:
        pruning_ratio: final fraction of channels removed (float or dict).
        prune_epochs: epochs (0-based) at whose start a pruning step happens;
            after the `i`-th of `k` steps, `pruning_ratio * i / k` is removed.
        **kwargs: `ChannelPruner` arguments (`importance`, `round_to`, ...).

    Attributes:
        pruned_model: the thinner model after `fit` (None before).
        plan: the last `PruningPlan`.

    Example:
    >>> cb = ChannelPruningCallback(0.5, prune_epochs=[0, 2, 4])
    >>> model.fit(x, y, epochs=6, callbacks=[cb])
    >>> thin = cb.pruned_model
    """

    def __init__(self, pruning_ratio=0.5, prune_epochs=(0,), **kwargs):
        super().__init__()
        if isinstance(prune_epochs, (str, bytes)) or not isinstance(
            prune_epochs, collections.abc.Iterable
        ):
            raise TypeError(
                f"prune_epochs must be a list of epoch indices, e.g. [0, 2, 4], got "
                f"{checks.describe(prune_epochs)}."
            )
        epochs = [checks.check_int(f"prune_epochs[{i}]", e, lo=0) for i, e in enumerate(prune_epochs)]
        if not epochs:
            raise ValueError("prune_epochs must list at least one epoch.")
        if len(set(epochs)) != len(epochs):
            raise ValueError(f"prune_epochs lists an epoch twice: {epochs}; list each epoch once.")
        self.prune_epochs = sorted(epochs)
        if isinstance(pruning_ratio, dict):
            for k, v in pruning_ratio.items():
                check_ratio(v, f"pruning_ratio[{k!r}]")
        else:
            check_ratio(pruning_ratio, "pruning_ratio")
        self.pruning_ratio = pruning_ratio
        self.kwargs = kwargs
        self.pruned_model = None
        self.plan = None
        self._pruner = None
        self._masks = []

    def on_train_begin(self, logs=None):
        self._pruner = ChannelPruner(self.model, pruning_ratio=self.pruning_ratio, **self.kwargs)
        self.plan = None
        self.pruned_model = None

    def on_epoch_begin(self, epoch, logs=None):
        if epoch not in self.prune_epochs:
            return
        step = self.prune_epochs.index(epoch) + 1
        ratio = _cumulative(self.pruning_ratio, step, len(self.prune_epochs))
        forced = self.plan.removed if self.plan is not None else None
        self.plan = self._pruner.plan(pruning_ratio=ratio, force_removed=forced)
        self._masks = []
        for (path, wname), m in self._pruner.masks(self.plan).items():
            layer = self.model
            for part in path.split("/"):
                layer = layer.get_layer(part)
            self._masks.append((find_weight(layer, wname), m))
        self._apply()

    def _apply(self):
        for var, m in self._masks:
            var.assign(keras.ops.multiply(var, m))

    def on_train_batch_end(self, batch, logs=None):
        if self._masks:
            # `self.model` (not `self._model`): on JAX this syncs the train
            # step's state into the variables, so the zeros assigned here are
            # what the next step starts from (a no-op elsewhere).
            self.model  # noqa: B018
            self._apply()

    def on_train_end(self, logs=None):
        if self.plan is not None:
            self.pruned_model = self._pruner.prune(self.plan)
