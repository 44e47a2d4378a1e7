"""`tfmot.sparsity.keras` on Keras 3: tfmot's 11 public names, run by kprune.

Every name keeps tfmot's signature and defaults and forwards to kprune's own
implementation; the differences kprune makes on purpose are listed in
`kprune.tfmot`'s module docstring.

Example:
```python
import kprune.tfmot as tfmot

pruned = tfmot.sparsity.keras.prune_low_magnitude(model, block_size=(1, 16))
```
"""

from __future__ import annotations

import numbers
import os
import warnings

import keras
import numpy as np

from kprune.core import callbacks as _callbacks
from kprune.core import checks as _checks
from kprune.core import masking as _masking
from kprune.core import schedules as _schedules
from kprune.core import wrapper as _wrapper
from kprune.core import wrapping as _prune
from kprune.deploy import policy as _policy

__all__ = [
    "prune_low_magnitude",
    "prune_scope",
    "strip_pruning",
    "UpdatePruningStep",
    "PruningSummaries",
    "PruningSchedule",
    "ConstantSparsity",
    "PolynomialDecay",
    "PrunableLayer",
    "PruningPolicy",
    "PruneForLatencyOnXNNPack",
]


def _int(value):
    """numpy integers (tfmot's guide computes end_step with np.ceil) as int."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return value


def _float(value):
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, numbers.Integral)):
        return float(value)
    return value


# --------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------


class PruningSchedule(_schedules.PruningSchedule):
    """tfmot's schedule base class: subclass it and define `__call__` and `get_config`.

    `__call__(step)` returns `(should_prune, sparsity)` (Python values, numpy
    or TensorFlow scalars). kprune asks it step by step: `step` is a numpy
    int64, so TensorFlow ops on it work as in tfmot. Update steps are looked
    for up to 1000 steps ahead of the current one (answers are cached, so
    this costs about one call per training step).

    Example:
    ```python
    class EveryTenSteps(tfmot.sparsity.keras.PruningSchedule):
        def __call__(self, step):
            return step % 10 == 0, 0.5
        def get_config(self):
            return {}
    ```
    """

    _HORIZON = 1000

    def _custom(self):
        """Whether a subclass defines `__call__` (tfmot style)."""
        return type(self).__call__ not in (
            _schedules.PruningSchedule.__call__, PruningSchedule.__call__
        )

    def __call__(self, step):
        if not self._custom():
            return super().__call__(step)
        raise NotImplementedError("PruningSchedule implementation must override __call__")

    def _ask(self, step):
        cache = self.__dict__.setdefault("_kprune_answers", {})
        if step not in cache:
            if len(cache) > 100_000:
                cache.clear()
            should, sparsity = self(np.int64(step))
            cache[step] = (bool(np.asarray(should)), float(np.asarray(sparsity)))
        return cache[step]

    def should_prune(self, step):
        if not self._custom():
            return super().should_prune(step)
        return self._ask(int(step))[0]

    def sparsity(self, step):
        if not self._custom():
            return super().sparsity(step)
        return self._ask(int(step))[1]

    def next_update(self, step):
        if not self._custom():
            return super().next_update(step)
        step = max(int(step), 0)
        for s in range(step, step + self._HORIZON + 1):
            if self._ask(s)[0]:
                return s
        return None

    @property
    def final_sparsity(self):
        if not self._custom():
            return super().final_sparsity
        return self._ask(2**31 - 1)[1]

    def get_config(self):
        if not self._custom():
            return super().get_config()
        raise NotImplementedError("PruningSchedule implementation override get_config")

    @classmethod
    def from_config(cls, config):
        # tfmot's get_config nests {"class_name": ..., "config": {...}}.
        if set(config) == {"class_name", "config"}:
            config = config["config"]
        return cls(**config)

    # tfmot's protected helpers, used by custom schedules.
    def _should_prune_in_step(self, step, begin_step, end_step, frequency):
        step = int(np.asarray(step))
        return bool(
            step >= begin_step
            and (end_step < 0 or step <= end_step)
            and (step - begin_step) % frequency == 0
        )

    def _validate_step(self, begin_step, end_step, frequency, allow_negative_1):
        if begin_step < 0:
            raise ValueError(f"begin_step should be >= 0, got {begin_step}.")
        if end_step == -1 and not allow_negative_1:
            raise ValueError("end_step cannot be -1.")
        if end_step != -1 and (end_step < 0 or end_step < begin_step):
            raise ValueError(
                f"end_step must be -1 or >= begin_step ({begin_step}), got {end_step}."
            )
        if frequency <= 0:
            raise ValueError(f"frequency should be > 0, got {frequency}.")

    def _validate_sparsity(self, sparsity, variable_name):
        _checks.check_sparsity(variable_name, _float(sparsity))


class _TfmotConfig:
    """tfmot's `get_config()`: `{'class_name': ..., 'config': {...}}`.

    `keras.utils.deserialize_keras_object(s.get_config(), custom_objects=
    {'PolynomialDecay': tfmot.sparsity.keras.PolynomialDecay})` turns it
    back into the schedule, as in tfmot.
    """

    def get_config(self):
        return {"class_name": type(self).__name__, "config": super().get_config()}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in super().get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package="kprune.tfmot")
class ConstantSparsity(_TfmotConfig, _schedules.ConstantSparsity, PruningSchedule):
    """tfmot's `ConstantSparsity(target_sparsity, begin_step, end_step=-1, frequency=100)`.

    `kprune.ConstantSparsity` with tfmot's signature (numpy numbers accepted)
    and tfmot's nested `get_config()`.

    Example:
    >>> tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=0, frequency=100)
    """

    def __init__(self, target_sparsity, begin_step, end_step=-1, frequency=100):
        super().__init__(_float(target_sparsity), _int(begin_step), _int(end_step), _int(frequency))


@keras.saving.register_keras_serializable(package="kprune.tfmot")
class PolynomialDecay(_TfmotConfig, _schedules.PolynomialDecay, PruningSchedule):
    """tfmot's `PolynomialDecay(initial_sparsity, final_sparsity, begin_step, end_step, power=3, frequency=100)`.

    `kprune.PolynomialDecay` with tfmot's signature (numpy numbers accepted)
    and tfmot's nested `get_config()`. As in tfmot, `end_step` may equal
    `begin_step`: then the one update, at that step, applies
    `final_sparsity` (tfmot's formula divides 0 by 0 there).

    Example:
    >>> tfmot.sparsity.keras.PolynomialDecay(0.5, 0.8, begin_step=0, end_step=1000)
    """

    def __init__(self, initial_sparsity, final_sparsity, begin_step, end_step, power=3, frequency=100):
        begin_step, end_step = _int(begin_step), _int(end_step)
        single = isinstance(begin_step, int) and begin_step >= 0 and end_step == begin_step
        super().__init__(
            _float(initial_sparsity), _float(final_sparsity), begin_step,
            end_step + 1 if single else end_step, power=_float(_int(power)),
            frequency=_int(frequency),
        )
        if single:
            self.end_step = end_step

    def sparsity(self, step):
        if self.end_step == self.begin_step:
            step = _checks.check_int("step", step)
            return self.final_sparsity_ if step >= self.begin_step else self.initial_sparsity
        return super().sparsity(step)


# --------------------------------------------------------------------------
# prune_low_magnitude / strip_pruning / prune_scope
# --------------------------------------------------------------------------

PrunableLayer = _wrapper.PrunableLayer
PruningPolicy = _policy.PruningPolicy
PruneForLatencyOnXNNPack = _policy.PruneForLatencyOnXNNPack

_DEFAULT_SCHEDULE = ConstantSparsity(0.5, 0)
_POOLING = {"AVG": "mean", "MAX": "max"}


def _granularity(block_size, block_pooling_type, sparsity_m_by_n):
    if block_pooling_type not in _POOLING:
        raise ValueError(
            f"Unsupported pooling type '{block_pooling_type}'. Should be 'AVG' or 'MAX'."
        )
    try:
        block = tuple(_int(b) for b in block_size)
    except TypeError:
        block = None
    if block is None or len(block) != 2 or not all(isinstance(b, int) and b >= 1 for b in block):
        raise ValueError(f"block_size must be two positive integers (height, width), got {block_size!r}.")
    if sparsity_m_by_n is not None:
        try:
            n, m = (_int(v) for v in sparsity_m_by_n)
        except (TypeError, ValueError):
            raise ValueError(
                f"sparsity_m_by_n must be a tuple of two integers such as (2, 4), "
                f"got {sparsity_m_by_n!r}."
            ) from None
        if block != (1, 1):
            raise ValueError(
                f"Pass either block_size={block_size!r} or "
                f"sparsity_m_by_n={sparsity_m_by_n!r}, not both (tfmot silently "
                f"ignores block_size when sparsity_m_by_n is given)."
            )
        return _masking.NM(n, m)
    if block == (1, 1):
        return None
    return _masking.Block(block, pool=_POOLING[block_pooling_type])


def prune_low_magnitude(
    to_prune,
    pruning_schedule=_DEFAULT_SCHEDULE,
    block_size=(1, 1),
    block_pooling_type="AVG",
    pruning_policy=None,
    sparsity_m_by_n=None,
    **kwargs,
):
    """tfmot's `prune_low_magnitude`, run by `kprune.prune_low_magnitude`.

    Args:
        to_prune: a Keras layer, a list of layers, or a Sequential or
            functional model. It is not modified: the result holds copies.
        pruning_schedule: a schedule (default `ConstantSparsity(0.5, 0)`).
        block_size: `(height, width)` blocks of the 2-D kernel view
            (`(1, 1)`: single weights), i.e. `kprune.Block(block_size)`.
        block_pooling_type: `"AVG"` or `"MAX"`: how a block is scored.
        pruning_policy: e.g. `PruneForLatencyOnXNNPack()`; checks the model
            first, then picks the layers to wrap.
        sparsity_m_by_n: `(n, m)`: `n` zeros in every `m` consecutive
            weights along the input axis (`kprune.NM(n, m)`), applied once
            at the first training step, as in tfmot.
        **kwargs: layer arguments (`name=`, `input_shape=`) for a single
            layer.

    Returns:
        The pruned layer, list of layers or model (new objects).

    Example:
    ```python
    pruned = tfmot.sparsity.keras.prune_low_magnitude(
        model, pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(0.8, 0))
    ```
    """
    granularity = _granularity(block_size, block_pooling_type, sparsity_m_by_n)
    schedule = pruning_schedule
    if isinstance(granularity, _masking.NM):
        if pruning_schedule is not _DEFAULT_SCHEDULE:
            warnings.warn(
                f"sparsity_m_by_n={tuple(sparsity_m_by_n)!r}: as in tfmot, the "
                f"{granularity.n}:{granularity.m} pattern is applied once at "
                f"the first training step and pruning_schedule "
                f"{pruning_schedule!r} is not used. For an N:M pattern reached "
                f"gradually, call kprune.prune_low_magnitude(..., "
                f"granularity=kprune.NM({granularity.n}, {granularity.m})).",
                stacklevel=2,
            )
        schedule = _schedules.ConstantSparsity(
            granularity.n / granularity.m, begin_step=0, end_step=0
        )
    return _prune_any(to_prune, schedule, granularity, pruning_policy, **kwargs)


def _prune_any(to_prune, schedule, granularity, pruning_policy=None, **kwargs):
    """`prune_low_magnitude` once its arguments are kprune's."""
    if isinstance(to_prune, list) and not kwargs:
        return _prune_list(to_prune, schedule, granularity)
    if isinstance(to_prune, keras.layers.Layer) and not isinstance(to_prune, keras.Model):
        return _prune_layer(to_prune, schedule, granularity, **kwargs)
    if isinstance(to_prune, keras.Sequential) and not to_prune.built and pruning_policy is None:
        return _prune_unbuilt_sequential(to_prune, schedule, granularity)
    if not isinstance(to_prune, (keras.Model, list)):
        raise TypeError(
            f"prune_low_magnitude can only prune a keras.Sequential, a "
            f"functional keras.Model, a keras.layers.Layer or a list of "
            f"layers; got an object of type {type(to_prune).__name__}."
        )
    # tfmot passes existing wrappers through, and returns a model with
    # nothing (left) to wrap unchanged: existing_wrappers="keep".
    return _prune.prune_low_magnitude(
        to_prune, schedule, granularity=granularity, pruning_policy=pruning_policy,
        existing_wrappers="keep", **kwargs,
    )


# Layer types tfmot's registry wraps with no weights to prune (the classes
# themselves, not subclasses, as in tfmot's `PruneRegistry`). kprune prunes
# DepthwiseConv2D's kernel, so it is not here.
_NO_MASK_TYPES = frozenset(
    getattr(keras.layers, name) for name in (
        "ELU", "LeakyReLU", "ReLU", "Softmax", "Cropping1D", "Cropping2D",
        "Cropping3D", "UpSampling1D", "UpSampling2D", "UpSampling3D",
        "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Activation",
        "ActivityRegularization", "Dropout", "Flatten", "Lambda", "Masking",
        "Permute", "RepeatVector", "Reshape", "SpatialDropout1D",
        "SpatialDropout2D", "SpatialDropout3D", "Add", "Average",
        "Concatenate", "Dot", "Maximum", "Minimum", "Multiply", "Subtract",
        "AlphaDropout", "GaussianDropout", "GaussianNoise",
        "BatchNormalization", "LayerNormalization", "AveragePooling1D",
        "AveragePooling2D", "AveragePooling3D", "GlobalAveragePooling1D",
        "GlobalAveragePooling2D", "GlobalAveragePooling3D",
        "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
        "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "Rescaling",
    ) if hasattr(keras.layers, name)
)


def _prune_layer(layer, schedule, granularity, **kwargs):
    """One layer: kprune's wrapper, or, for a layer tfmot wraps with nothing
    to prune (Flatten, Dropout, ...), a wrapper with no masks."""
    if not _wrapper.is_prunable(layer) and type(layer) in _NO_MASK_TYPES:
        kwargs["allow_no_masks"] = True
    return _prune.prune_low_magnitude(layer, schedule, granularity=granularity, **kwargs)


def _check_list(layers):
    """tfmot's list rules, checked for every item before any is wrapped."""
    _checks.check_layer_list(layers, "prune_low_magnitude")
    for layer in layers:
        if not (isinstance(layer, (_wrapper.PruneWrapper, keras.layers.InputLayer))
                or _wrapper.is_prunable(layer) or type(layer) in _NO_MASK_TYPES):
            _wrapper.prunable_weights(layer)  # raises the descriptive error


def _prune_list(layers, schedule, granularity):
    """tfmot's list: existing wrappers passed through (the same objects),
    InputLayers copied, every other layer wrapped (with no masks if it has
    nothing to prune)."""
    _check_list(layers)
    return [
        layer if isinstance(layer, _wrapper.PruneWrapper)
        else _prune.prune_low_magnitude([layer], schedule, granularity=granularity)[0]
        if isinstance(layer, keras.layers.InputLayer)
        else _prune_layer(layer, schedule, granularity)
        for layer in layers
    ]


def _prune_unbuilt_sequential(model, schedule, granularity):
    """An unbuilt Sequential (tfmot clones it, Keras 3's `clone_model` too):
    a new unbuilt Sequential whose prunable layers are wrapped; layers kprune
    does not prune are copied unwrapped, as in a built model."""
    layers = []
    for layer in model.layers:
        if isinstance(layer, _wrapper.PruneWrapper):
            layers.append(layer)
        elif isinstance(layer, keras.Model):
            layers.append(_prune_any(layer, schedule, granularity))
        elif _wrapper.is_prunable(layer):
            layers.append(_prune.prune_low_magnitude(layer, schedule, granularity=granularity))
        else:
            layers.append(type(layer).from_config(layer.get_config()))
    return keras.Sequential(layers, trainable=model.trainable, name=model.name)


strip_pruning = _prune.strip_pruning


def prune_scope():
    """tfmot's deserialization scope; not needed with kprune.

    `import kprune.tfmot` registers every class a pruned model refers to
    (kprune's wrapper, and the schedules of this module, which the wrappers
    keep), so `keras.models.load_model` loads a pruned `.keras` (or `.h5`)
    file without it. Models saved by tfmot
    itself (tf_keras, Keras 2) cannot be loaded in Keras 3.

    Returns:
        A `keras.utils.custom_object_scope` holding kprune's classes.

    Example:
    ```python
    with tfmot.sparsity.keras.prune_scope():
        model = keras.models.load_model(path)
    ```
    """
    return keras.utils.custom_object_scope({
        "PruneWrapper": _wrapper.PruneWrapper,
        "ConstantSparsity": ConstantSparsity,
        "PolynomialDecay": PolynomialDecay,
    })


# --------------------------------------------------------------------------
# Callbacks
# --------------------------------------------------------------------------


class UpdatePruningStep(_callbacks.PruningCallback):
    """tfmot's `UpdatePruningStep()`: `kprune.PruningCallback` with tfmot's signature.

    Required in `fit` for a pruned model. Also drives pruning by hand, as in
    tfmot's guide: `set_model(model)`, `on_train_begin()`, then
    `on_train_batch_begin(batch=-1)` before every step and
    `on_epoch_end(batch=-1)` after every epoch.

    Example:
    ```python
    model.fit(x, y, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    ```
    """

    def __init__(self):
        super().__init__()
        self._idle = False

    def _no_wrappers(self):
        """tfmot's callback does nothing for a model with no pruned layers."""
        return not _prune.find_wrappers(self.model)

    def on_train_begin(self, logs=None):
        self._idle = self._no_wrappers()
        if not self._idle:
            super().on_train_begin(logs)

    def on_train_batch_begin(self, batch, logs=None):
        if self.pruner is None and self._no_wrappers():
            self._idle = True  # driven by hand without on_train_begin
        if not self._idle:
            super().on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        if not self._idle:
            super().on_train_batch_end(batch, logs)

    def on_epoch_end(self, batch, logs=None):  # tfmot names the epoch `batch`
        if not self._idle:
            super().on_epoch_end(batch, logs)

    def on_train_end(self, logs=None):
        if not self._idle:
            super().on_train_end(logs)


class PruningSummaries(_callbacks.PruningSummaries):
    """tfmot's `PruningSummaries(log_dir, update_freq='epoch')`, writing kprune's sparsity scalars.

    Writes `sparsity/<layer>`, `target_sparsity/<layer>` and
    `sparsity_total` to `log_dir`. Unlike tfmot's (a TensorBoard callback),
    it does not log losses: add `keras.callbacks.TensorBoard(log_dir)` for
    those.

    Args:
        log_dir: a non-empty path.
        update_freq: `"epoch"`, `"batch"` or an integer.

    Example:
    ```python
    model.fit(x, y, callbacks=[tfmot.sparsity.keras.UpdatePruningStep(),
                               tfmot.sparsity.keras.PruningSummaries(log_dir="logs")])
    ```
    """

    def __init__(self, log_dir, update_freq="epoch", **kwargs):
        if not isinstance(log_dir, (str, os.PathLike)) or not os.fspath(log_dir):
            raise ValueError(
                f"`log_dir` must be a non-empty string. You passed `log_dir`={log_dir!r}."
            )
        if kwargs:
            raise TypeError(
                f"PruningSummaries got TensorBoard argument(s) {sorted(kwargs)}: "
                f"kprune's PruningSummaries writes only the pruning scalars. "
                f"Add keras.callbacks.TensorBoard(log_dir, "
                f"{', '.join(f'{k}=...' for k in sorted(kwargs))}) to the "
                f"callbacks for TensorBoard's own logs."
            )
        super().__init__(os.fspath(log_dir), update_freq)
