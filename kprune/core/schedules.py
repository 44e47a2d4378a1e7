"""Pruning schedules: how sparse a layer should be at a training step.

A schedule is called with an integer step and answers two things:
`should_prune(step)` (is this a mask-update step?) and `sparsity(step)` (the
target fraction of zeros at that step). `PruningCallback` asks it once per
training batch.

Two differences from tfmot's schedules, both deliberate:

* the update at `begin_step` applies `initial_sparsity` (tfmot never evaluates
  step 0, so its `initial_sparsity` is never applied);
* `end_step` is always an update step, so the final sparsity is reached even
  when `end_step - begin_step` is not a multiple of `frequency`.
"""

from __future__ import annotations

import keras
import numpy as np

from kprune.core import checks

__all__ = ["PruningSchedule", "ConstantSparsity", "PolynomialDecay", "get_schedule"]


def _check_sparsity(name, value):
    return checks.check_sparsity(name, value)


def _check_int(name, value, minimum):
    return checks.check_int(name, value, lo=minimum)


def _check_step(step):
    """The step argument of `should_prune`/`sparsity`/`next_update`."""
    return checks.check_int("step", step)


class PruningSchedule:
    """Base class of pruning schedules.

    Subclasses define `sparsity(step)` and `get_config()`. The update steps
    are `begin_step, begin_step + frequency, ...` up to `end_step` inclusive,
    plus `end_step` itself (`end_step=-1` means "never stop").

    Args:
        begin_step: first step at which masks are updated.
        end_step: last update step, or -1 for no end.
        frequency: number of steps between mask updates, >= 1.
    """

    def __init__(self, begin_step=0, end_step=-1, frequency=100):
        self.begin_step = _check_int("begin_step", begin_step, 0)
        self.end_step = _check_int("end_step", end_step, -1)
        self.frequency = _check_int("frequency", frequency, 1)
        if self.end_step != -1 and self.end_step < self.begin_step:
            raise ValueError(
                f"end_step ({end_step}) must be >= begin_step ({begin_step}), "
                f"or -1 for no end."
            )

    def should_prune(self, step):
        """Whether masks are updated at `step`."""
        step = _check_step(step)
        if step < self.begin_step:
            return False
        if self.end_step != -1 and step > self.end_step:
            return False
        return step == self.end_step or (step - self.begin_step) % self.frequency == 0

    def next_update(self, step):
        """The first update step >= `step`, or None if there is none left."""
        step = max(_check_step(step), self.begin_step)
        offset = (step - self.begin_step) % self.frequency
        nxt = step if offset == 0 else step + self.frequency - offset
        if self.end_step != -1:
            if step > self.end_step:
                return None
            nxt = min(nxt, self.end_step)
        return nxt

    def sparsity(self, step):
        """Target sparsity (fraction of zeros) at `step`."""
        raise NotImplementedError

    @property
    def final_sparsity(self):
        """The sparsity the schedule ends at."""
        raise NotImplementedError

    def __call__(self, step):
        """Returns `(should_prune, sparsity)` at `step`, like tfmot."""
        return self.should_prune(step), self.sparsity(step)

    def get_config(self):
        return {
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package="kprune")
class ConstantSparsity(PruningSchedule):
    """The same target sparsity at every update step.

    Args:
        target_sparsity: fraction of weights to remove, in [0, 1).
        begin_step: first update step.
        end_step: last update step, or -1 for no end.
        frequency: steps between updates.

    Returns:
        A schedule whose `sparsity(step)` is `target_sparsity`.

    Example:
    >>> s = kprune.ConstantSparsity(0.8, begin_step=0, frequency=100)
    >>> s(0), s(50), s(100)
    ((True, 0.8), (False, 0.8), (True, 0.8))
    """

    def __init__(self, target_sparsity, begin_step=0, end_step=-1, frequency=100):
        self.target_sparsity = _check_sparsity("target_sparsity", target_sparsity)
        super().__init__(begin_step, end_step, frequency)

    def sparsity(self, step):
        return self.target_sparsity

    @property
    def final_sparsity(self):
        return self.target_sparsity

    def get_config(self):
        return {"target_sparsity": self.target_sparsity, **super().get_config()}


@keras.saving.register_keras_serializable(package="kprune")
class PolynomialDecay(PruningSchedule):
    """Sparsity that rises from `initial_sparsity` to `final_sparsity`.

    The gradual schedule of Zhu & Gupta (2017):

        s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (t_end - t0)) ** power

    clipped to `[t0, t_end]`. The update at `begin_step` applies
    `initial_sparsity`; the update at `end_step` applies `final_sparsity`.

    Args:
        initial_sparsity: sparsity at `begin_step`, in [0, 1).
        final_sparsity: sparsity at and after `end_step`, in [0, 1).
        begin_step: first update step.
        end_step: last update step; must be > begin_step.
        power: exponent of the decay (3 in the paper).
        frequency: steps between updates.

    Returns:
        A schedule.

    Example:
    >>> s = kprune.PolynomialDecay(0.2, 0.8, begin_step=100, end_step=110, frequency=2)
    >>> round(s.sparsity(102), 4), s.should_prune(102), s.should_prune(105)
    (0.4928, True, False)
    """

    def __init__(
        self,
        initial_sparsity,
        final_sparsity,
        begin_step,
        end_step,
        power=3,
        frequency=100,
    ):
        self.initial_sparsity = _check_sparsity("initial_sparsity", initial_sparsity)
        self.final_sparsity_ = _check_sparsity("final_sparsity", final_sparsity)
        checked = checks.check_float(
            "power", power, lo=0, lo_inclusive=False,
            fix="Use a finite exponent such as 3 (Zhu & Gupta's cubic schedule).",
        )
        # Integers stay integers, so get_config() shows what the user passed.
        self.power = int(power) if isinstance(power, (int, np.integer)) else checked
        super().__init__(begin_step, end_step, frequency)
        if self.end_step <= self.begin_step:
            raise ValueError(
                f"PolynomialDecay needs end_step > begin_step, got "
                f"begin_step={begin_step}, end_step={end_step}."
            )

    @property
    def final_sparsity(self):
        return self.final_sparsity_

    def sparsity(self, step):
        step = _check_step(step)
        span = self.end_step - self.begin_step
        progress = min(1.0, max(0.0, (step - self.begin_step) / span))
        delta = self.initial_sparsity - self.final_sparsity_
        return self.final_sparsity_ + delta * (1.0 - progress) ** self.power

    def get_config(self):
        return {
            "initial_sparsity": self.initial_sparsity,
            "final_sparsity": self.final_sparsity_,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "power": self.power,
            "frequency": self.frequency,
        }


def get_schedule(identifier):
    """Returns a schedule from an instance or a serialized config."""
    if identifier is None or isinstance(identifier, PruningSchedule):
        return identifier
    if isinstance(identifier, dict):
        obj = keras.saving.deserialize_keras_object(identifier)
        if isinstance(obj, PruningSchedule):
            return obj
    raise TypeError(
        "pruning_schedule must be a kprune schedule such as "
        f"kprune.ConstantSparsity(0.8) or kprune.PolynomialDecay(...), got {identifier!r}."
    )
