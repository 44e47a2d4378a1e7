"""Sparse-training regularisers for channel pruning.

* **Network Slimming** (Liu et al., "Learning Efficient Convolutional
  Networks through Network Slimming", ICCV 2017): train with an L1 penalty
  `lambda * sum |gamma|` on the BatchNormalization scales (`lambda = 1e-4`
  for VGG on CIFAR, `1e-5` for ResNet/DenseNet in the paper), then prune the
  channels with the smallest `|gamma|` (`kprune.structured` importance
  `"bn_scale"`) and fine-tune. `network_slimming(model)` returns a copy of the
  model whose BN layers carry `keras.regularizers.L1(lambda)` on gamma: the
  paper's sub-gradient `lambda * sign(gamma)` is exactly that regulariser's
  gradient, so no custom training code is needed.
* **Growing regularisation** (Wang, Qin, Zhang & Fu, "Neural Pruning via
  Growing Regularization", ICLR 2021, GReg-1; Torch-Pruning's
  `GrowingRegPruner`): choose the channels to remove first (by L1 norm at
  the target ratio), then push them to zero with an L2 penalty
  `lambda_t * ||w_c||^2` whose `lambda` grows by `delta = 1e-4` every
  `interval = 10` steps up to `max_penalty = 1.0`; the kept channels are not
  penalised. `GrowingRegularization` is a callback that does this during
  `fit`; prune afterwards with `callback.prune()` (the penalised channels
  then have the smallest norms).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from kprune.core import model_tree
from kprune.structured import ChannelPruner

__all__ = ["network_slimming", "GrowingRegularization", "MaskedL2"]

#: Network Slimming's default L1 strength on BN scales (VGG, CIFAR).
SLIMMING_PENALTY = 1e-4


def network_slimming(model, penalty=SLIMMING_PENALTY, layers=None):
    """A copy of `model` that trains with Network Slimming's L1 on BN scales.

    Args:
        model: a built Sequential or functional model (not modified).
        penalty: the L1 strength `lambda` (default 1e-4, Liu et al. 2017).
        layers: names of the BatchNormalization layers to penalise (default:
            all of them).

    Returns:
        A new model with the same weights, whose BatchNormalization layers
        have `gamma_regularizer=keras.regularizers.L1(penalty)` (saved in its
        config like any Keras regulariser).

    Raises:
        ValueError: `penalty` is not positive, the model has no
            BatchNormalization layer with a scale, or `layers` names unknown
            ones.

    Example:
    ```python
    slim = kprune.network_slimming(model, penalty=1e-4)
    slim.compile("sgd", "sparse_categorical_crossentropy")
    slim.fit(x, y, epochs=10)
    thin = kprune.structured.prune_channels(slim, importance="bn_scale",
                                            pruning_ratio=0.5)
    ```
    """
    if isinstance(penalty, bool) or not isinstance(penalty, (int, float)) or not penalty > 0:
        raise ValueError(f"penalty must be a positive number (e.g. 1e-4), got {penalty!r}.")
    if not isinstance(model, keras.Model):
        raise TypeError(f"network_slimming expects a Keras model, got {type(model).__name__}.")
    bns = [l for l in _leaves(model) if isinstance(l, keras.layers.BatchNormalization) and l.scale]
    names = {l.name for l in bns}
    if layers is not None:
        unknown = sorted(set(layers) - names)
        if unknown:
            raise ValueError(
                f"network_slimming: {unknown} are not BatchNormalization layers "
                f"with a scale in model '{model.name}'; those are {sorted(names)}."
            )
        names = set(layers)
    if not names:
        raise ValueError(
            f"network_slimming: model '{model.name}' has no BatchNormalization "
            f"layer with scale=True, so there are no scales to penalise."
        )

    def clone_layer(layer):
        config = layer.get_config()
        if layer.name in names:
            config["gamma_regularizer"] = keras.regularizers.L1(float(penalty))
        return model_tree.rebuild_layer(layer, config)

    return model_tree.clone_layers(model, clone_layer)


def _leaves(model):
    out = []
    for layer in model.layers:
        out.extend(_leaves(layer) if isinstance(layer, keras.Model) else [layer])
    return out


@keras.saving.register_keras_serializable(package="kprune")
class MaskedL2(keras.regularizers.Regularizer):
    """`penalty * sum(mask * w**2)`: an L2 penalty on selected entries only.

    The penalty is a (non-trainable) variable so that a callback can grow it
    without retracing the train step (`GrowingRegularization` does).

    Args:
        mask: 0/1 array of the weight's shape (1 = penalised).
        penalty: initial strength.
    """

    def __init__(self, mask, penalty=0.0):
        self.mask = np.asarray(mask, "float32")
        self.penalty = keras.Variable(float(penalty), trainable=False, dtype="float32",
                                      name="growing_penalty")

    def __call__(self, x):
        mask = ops.cast(ops.convert_to_tensor(self.mask), x.dtype)
        return ops.cast(self.penalty, x.dtype) * ops.sum(mask * ops.square(x))

    def get_config(self):
        return {"mask": self.mask.tolist(), "penalty": float(ops.convert_to_numpy(self.penalty))}


class GrowingRegularization(keras.callbacks.Callback):
    """Growing L2 regularisation on the channels to be pruned (GReg-1).

    At the start of training the channels to remove are chosen with
    `kprune.structured.ChannelPruner(model, importance, pruning_ratio)`;
    every weight slice of those channels (the filters, their biases and
    normalisation parameters: the group's `"out"` and `"gamma"` members) gets
    a `MaskedL2` regulariser whose strength starts at `delta` and grows by
    `delta` every `interval` training steps, up to `max_penalty` (Wang et al.
    2021: `delta = 1e-4`, `interval = 10` for CIFAR, `max_penalty = 1`). The
    regularisers are removed at the end of `fit`. Then prune with
    `prune()`, which removes exactly the chosen channels.

    Args:
        pruning_ratio: fraction of each group's channels to remove (or a
            `{layer name: ratio}` dict, as `ChannelPruner`).
        importance: how the channels are chosen (default `"l1"`, as the
            paper).
        delta: increment of the penalty (default 1e-4).
        interval: training steps between increments (default 10).
        max_penalty: the penalty stops growing here (default 1.0).
        **pruner_kwargs: other `ChannelPruner` arguments (`ignored_layers`,
            `round_to`, ...).

    Attributes:
        penalty: the current strength (float).
        plan: the `PruningPlan` of the chosen channels.

    Example:
    ```python
    greg = kprune.GrowingRegularization(pruning_ratio=0.5)
    model.fit(x, y, epochs=5, callbacks=[greg])
    thin = greg.prune()          # physically thinner model
    ```
    """

    def __init__(self, pruning_ratio=0.5, importance="l1", delta=1e-4, interval=10,
                 max_penalty=1.0, **pruner_kwargs):
        super().__init__()
        for name, value in (("delta", delta), ("max_penalty", max_penalty)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}.")
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"interval must be a positive integer, got {interval!r}.")
        self.pruning_ratio = pruning_ratio
        self.importance = importance
        self.delta = float(delta)
        self.interval = interval
        self.max_penalty = float(max_penalty)
        self.pruner_kwargs = pruner_kwargs
        self.plan = None
        self.pruner = None
        self._regularizers = []
        self._installed = []
        self._steps = 0
        self._last_batch = -1

    @property
    def penalty(self):
        """The current penalty strength."""
        return min(self.max_penalty, self.delta * (1 + self._steps // self.interval))

    def _target_model(self):
        # Inside keras.distillation.Distiller, penalise the student.
        return getattr(self.model, "student", None) or self.model

    def on_train_begin(self, logs=None):
        model = self._target_model()
        if self.pruner is None or self.pruner.model is not model:
            self.pruner = ChannelPruner(model, importance=self.importance,
                                        pruning_ratio=self.pruning_ratio, **self.pruner_kwargs)
            self.plan = self.pruner.plan()
        masks = {}
        for group in self.pruner.graph.groups:
            removed = self.plan.removed.get(group.index)
            if removed is None or not removed.any():
                continue
            for m in group.members:
                if m.role not in ("out", "gamma"):
                    continue
                var = m.variable
                if not var.trainable:
                    continue
                sel = np.zeros(tuple(var.shape), "float32")
                hit = np.zeros(len(m.channel), bool)
                inside = m.channel >= 0
                hit[inside] = removed[m.channel[inside]]
                view = np.moveaxis(sel, m.axis, 0)
                view[hit] = 1.0
                key = id(var)
                masks[key] = (var, np.maximum(masks[key][1], sel) if key in masks else sel)
        self._regularizers = []
        for var, mask in masks.values():
            reg = MaskedL2(mask, self.penalty)
            self._installed.append((var, var.regularizer))
            var.regularizer = reg
            self._regularizers.append(reg)
        if callable(getattr(self.model, "make_train_function", None)):
            self.model.make_train_function(force=True)

    def on_epoch_begin(self, epoch, logs=None):
        self._last_batch = -1

    def on_train_batch_end(self, batch, logs=None):
        before = self.penalty
        self._steps += batch - self._last_batch
        self._last_batch = batch
        if self.penalty != before:
            for reg in self._regularizers:
                reg.penalty.assign(self.penalty)

    def on_train_end(self, logs=None):
        for var, reg in reversed(self._installed):
            var.regularizer = reg
        self._installed = []
        if callable(getattr(self.model, "make_train_function", None)):
            self.model.make_train_function(force=True)

    def prune(self):
        """The thinner model without the chosen channels (after training)."""
        if self.plan is None:
            raise ValueError("GrowingRegularization.prune(): train with this callback first.")
        return self.pruner.prune(self.plan)
