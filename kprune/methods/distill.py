"""Recovering accuracy after pruning: distillation and adaptive BN.

* **Distillation** (Hinton, Vinyals & Dean 2015): fine-tune the pruned
  student on the dense teacher's softened outputs. kprune does not ship a
  distiller: `distill` and `make_distiller` set up Keras' own
  `keras.distillation.Distiller` with `LogitsDistillation(temperature)`
  (the loss is `T**2 * KL(softmax(teacher / T) || softmax(student / T))`,
  mixed with the labels' loss by `student_loss_weight`), and restore the
  teacher's `trainable` flag afterwards. They pass the KL loss as a
  `keras.losses.KLDivergence()` instance: with its default string
  `"kl_divergence"`, Keras 3.15.1's `LogitsDistillation` resolves a plain
  function, skips its softmax branch and computes the KL of the raw scaled
  logits (`tests/test_distill.py` checks the loss against the formula). The student may be a pruned model
  (fixed masks, a scheduled `PruneWrapper` model trained with
  `kprune.PruningCallback()` in `callbacks`, or a thinner model from
  `kprune.structured`).
* **Adaptive batch normalisation** (Li et al., "EagleEye: Fast Sub-net
  Evaluation for Efficient Neural Network Pruning", ECCV 2020): a pruned
  candidate's BatchNormalization moving statistics still describe the dense
  network, so its accuracy before fine-tuning says little. `adaptive_bn`
  recomputes them (the exact mean of the per-batch statistics) on a few
  training batches, with no weight update; `eagleeye_select` prunes each
  candidate per-layer ratio, re-calibrates it and keeps the one that
  evaluates best.
"""

from __future__ import annotations

import os

import keras
import numpy as np

from kprune.core import checks
from kprune.structured import ChannelPruner, DependencyGraph
from kprune.utils.progress import Progress

__all__ = [
    "DistillProgress",
    "adaptive_bn",
    "distill",
    "eagleeye_select",
    "make_distiller",
    "sample_ratios",
]

#: Hinton et al.'s usual softening temperature.
DEFAULT_TEMPERATURE = 3.0


def _ends_in_softmax(model):
    layer = model.layers[-1] if getattr(model, "layers", None) else None
    if isinstance(layer, keras.layers.Softmax):
        return True
    act = getattr(layer, "activation", None)
    return getattr(act, "__name__", "") == "softmax"


def make_distiller(student, teacher, temperature=DEFAULT_TEMPERATURE, student_loss_weight=0.5,
                   optimizer="adam", loss="sparse_categorical_crossentropy", metrics=("accuracy",)):
    """A compiled `keras.distillation.Distiller` (student learns from teacher).

    Args:
        student: the (pruned) model to train; it must output logits.
        teacher: the dense model; it must output logits. It is frozen while
            the distiller trains (`distill` restores its `trainable` flag).
        temperature: softening temperature `T` (default 3).
        student_loss_weight: weight of the labels' loss, in [0, 1]; the
            distillation loss gets `1 - student_loss_weight` (default 0.5).
        optimizer, loss, metrics: as `Model.compile` (the loss is the
            student's loss on the labels; use `from_logits=True` losses for
            logit outputs).

    Returns:
        The compiled `Distiller`; `distiller.student` is the student.

    Raises:
        ValueError: a model ends in a softmax (distillation needs logits).
    """
    for name, model in (("student", student), ("teacher", teacher)):
        if not isinstance(model, keras.Model):
            raise TypeError(f"{name} must be a Keras model, got {type(model).__name__}.")
        if _ends_in_softmax(model):
            raise ValueError(
                f"{name} model '{model.name}' ends in a softmax; LogitsDistillation "
                f"divides logits by the temperature. Build it with a linear last "
                f"layer (and from_logits=True losses)."
            )
    if loss == "sparse_categorical_crossentropy":
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    distiller = keras.distillation.Distiller(
        teacher=teacher, student=student,
        # A KLDivergence *instance*: with the default loss="kl_divergence"
        # (a string), Keras 3.15's LogitsDistillation gets the plain function,
        # misses its softmax branch and takes the KL of the raw logits / T.
        distillation_losses=keras.distillation.LogitsDistillation(
            temperature=float(temperature), loss=keras.losses.KLDivergence()),
        student_loss_weight=float(student_loss_weight),
    )
    distiller.compile(optimizer=optimizer, loss=loss, metrics=list(metrics or []))
    return distiller


class DistillProgress(keras.callbacks.Callback):
    """Training progress through `kprune.utils.progress.Progress` (one bar for all epochs).

    Args:
        total: batches in the whole run (epochs x steps per epoch).
        description: the label (default `"Distillation"`).
        verbose: 0, 1 or 2, as `Progress`.
        **kwargs: other `Progress` arguments (`stream`, `interactive`).
    """

    def __init__(self, total, description="Distillation", verbose=1, **kwargs):
        super().__init__()
        self.progress_args = (total, description, verbose, kwargs)
        self.bar = None

    def on_train_begin(self, logs=None):
        total, description, verbose, kwargs = self.progress_args
        self.bar = Progress(total, description, verbose=verbose, unit="batch", **kwargs)

    def on_epoch_begin(self, epoch, logs=None):
        # A run resumed from a backup starts past epoch 0: count what is done.
        if self.bar is not None and self.bar.current == 0 and epoch and self.params.get("steps"):
            self.bar.current = epoch * self.params["steps"]

    def on_train_batch_end(self, batch, logs=None):
        values = {k: float(v) for k, v in (logs or {}).items() if k.endswith("loss")}
        self.bar.update(1, **values)

    def on_train_end(self, logs=None):
        if self.bar is not None and not self.bar.closed:
            self.bar.close()


def distill(student, teacher, x, y=None, epochs=1, batch_size=32, callbacks=None,
            temperature=DEFAULT_TEMPERATURE, student_loss_weight=0.5, optimizer="adam",
            loss="sparse_categorical_crossentropy", verbose=0, backup_dir=None, **fit_kwargs):
    """Fine-tunes `student` with `teacher` through `keras.distillation`.

    Args:
        student: the pruned model (trained in place).
        teacher: the dense model (not changed; its `trainable` flag is
            restored).
        x, y: training data, as `Model.fit`.
        epochs, batch_size, callbacks, **fit_kwargs: as `fit`. Pass
            `kprune.PruningCallback()` when the student has scheduled
            `PruneWrapper`s.
        verbose: 0 silent; 1 or 2 progress through `kprune.utils.progress`
            (`DistillProgress`, one bar over all epochs, with the losses).
        backup_dir: a directory to make the run resumable: the student, the
            optimizer state and the epoch are saved there at the end of every
            epoch (`keras.callbacks.BackupAndRestore`); calling `distill`
            again with the same arguments after an interruption continues
            from the last finished epoch. The backup is deleted when the run
            completes.
        temperature, student_loss_weight, optimizer, loss: see
            `make_distiller` (defaults `T = 3`, weight 0.5, Adam).

    Returns:
        `(student, history)`.

    Example:
    ```python
    thin = kprune.structured.prune_channels(dense, pruning_ratio=0.5)
    thin, _ = kprune.methods.distill.distill(thin, dense, x, y, epochs=3)
    ```
    """
    epochs = checks.check_int("epochs", epochs, lo=1)
    callbacks = list(callbacks or [])
    if backup_dir is not None:
        backup_dir = os.fspath(backup_dir)
        callbacks.append(keras.callbacks.BackupAndRestore(backup_dir, save_freq="epoch"))
    if verbose:
        steps = fit_kwargs.get("steps_per_epoch")
        if steps is None and y is not None and hasattr(y, "__len__"):
            steps = -(-len(y) // batch_size)
        callbacks.append(DistillProgress(None if steps is None else int(steps) * epochs,
                                         verbose=verbose))
    trainable = teacher.trainable
    try:
        distiller = make_distiller(student, teacher, temperature, student_loss_weight,
                                   optimizer, loss)
        if backup_dir is not None and not distiller.built:
            distiller(_first_example(x))  # BackupAndRestore needs a built model
        history = distiller.fit(x, y, epochs=epochs, batch_size=batch_size,
                                callbacks=callbacks, verbose=0, **fit_kwargs)
    finally:
        teacher.trainable = trainable
    return distiller.student, history


def _first_example(x):
    if isinstance(x, dict):
        return {k: np.asarray(v)[:1] for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [np.asarray(v)[:1] for v in x]
    if hasattr(x, "__len__") and hasattr(x, "shape"):
        return np.asarray(x)[:1]
    first = next(iter(x))
    return first[0] if isinstance(first, tuple) else first


def _bn_layers(model):
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.extend(_bn_layers(layer))
        elif isinstance(layer, keras.layers.BatchNormalization):
            out.append(layer)
    return out


def adaptive_bn(model, x, batches=10, batch_size=64):
    """EagleEye's adaptive BN: recompute BN moving statistics, in place.

    Runs `batches` forward passes in training mode (no weight update) and
    sets every BatchNormalization layer's moving mean and variance to the
    mean of the per-batch statistics (momentum `t / (t + 1)` at batch `t`).
    Nothing but those statistics changes (dropout runs, but has no state).

    Args:
        model: the candidate (e.g. from `kprune.structured.prune_channels`,
            or a stripped/fixed-mask pruned model).
        x: input array (at least one batch of training inputs).
        batches: number of batches (default 10).
        batch_size: examples per batch (default 64).

    Returns:
        `model` (its BN statistics re-calibrated); a model without
        BatchNormalization is returned unchanged.

    Example:
    >>> kprune.methods.distill.adaptive_bn(thin, x_train[:640])
    """
    if isinstance(batches, bool) or not isinstance(batches, int) or batches < 1:
        raise ValueError(f"batches must be a positive integer, got {batches!r}.")
    layers = _bn_layers(model)
    if not layers:
        return model
    x = np.asarray(x)
    if len(x) == 0:
        raise ValueError("x holds no examples.")
    momenta = [layer.momentum for layer in layers]
    try:
        for t in range(batches):
            start = (t * batch_size) % len(x)
            xb = x[start:start + batch_size]
            if len(xb) == 0:
                break
            for layer in layers:
                layer.momentum = t / (t + 1.0)
            model(xb, training=True)
    finally:
        for layer, m in zip(layers, momenta):
            layer.momentum = m
    return model


def sample_ratios(model, n, max_ratio=0.7, mean_ratio=None, seed=0):
    """EagleEye-style random per-layer pruning ratios.

    Args:
        model: the dense model.
        n: number of candidates.
        max_ratio: each layer's ratio is drawn uniformly in `[0, max_ratio]`.
        mean_ratio: if given, every candidate is rescaled so that its mean
            ratio over the layers is this value (clipped to `max_ratio`).
        seed: seed.

    Returns:
        A list of `{producer layer name: ratio}` dicts for `ChannelPruner`.
    """
    names = sorted({p for g in DependencyGraph(model).prunable_groups for p in g.producers})
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(int(n)):
        r = rng.uniform(0.0, max_ratio, len(names))
        if mean_ratio is not None and r.mean() > 0:
            r = np.clip(r * (mean_ratio / r.mean()), 0.0, max_ratio)
        out.append({k: float(v) for k, v in zip(names, r)})
    return out


def eagleeye_select(model, candidates, calibration_x, evaluate, importance="l1", batches=10,
                    batch_size=64, verbose=0, **pruner_kwargs):
    """Picks the best of several pruning ratios after adaptive BN (EagleEye).

    For each candidate, prunes `model` with
    `ChannelPruner(model, importance, pruning_ratio=candidate)`,
    re-calibrates its BN statistics with `adaptive_bn` and scores it with
    `evaluate(thin_model)` (higher is better, e.g. accuracy on a held-out
    batch). `model` is not modified.

    Args:
        model: the dense model.
        candidates: a list of ratios (floats or `{layer name: ratio}` dicts,
            e.g. from `sample_ratios`).
        calibration_x: training inputs for `adaptive_bn`.
        evaluate: `thin_model -> float`.
        importance: channel criterion (default `"l1"`).
        batches, batch_size: for `adaptive_bn`.
        verbose: 1 prints one line per candidate.
        **pruner_kwargs: other `ChannelPruner` arguments.

    Returns:
        `(best_model, best_candidate, scores)`, with `scores` the list of
        every candidate's evaluation, in order.
    """
    if not candidates:
        raise ValueError("candidates must be a non-empty list of pruning ratios.")
    best, best_score, best_candidate, scores = None, -np.inf, None, []
    for i, candidate in enumerate(candidates):
        thin = ChannelPruner(model, importance=importance, pruning_ratio=candidate,
                             **pruner_kwargs).prune()
        adaptive_bn(thin, calibration_x, batches=batches, batch_size=batch_size)
        score = float(evaluate(thin))
        scores.append(score)
        if verbose:
            print(f"kprune EagleEye: candidate {i}: {score:.4f}")
        if score > best_score:
            best, best_score, best_candidate = thin, score, candidate
    return best, best_candidate, scores
