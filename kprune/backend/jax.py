"""JAX side of the backend seam (see `kprune/backend/__init__.py`).

Keras' JAX trainer is stateless: inside the jitted train step, variable
values travel as arrays, and `optimizer.stateless_apply` runs the optimizer
(and the variable constraints) in a `StatelessScope` that maps only the
trainable and optimizer variables. A `MaskConstraint` reading its mask
variable there would get a constant baked in at trace time (or, once Keras
has purged the model's variables during `fit`, the initial all-ones value).

Importing this module therefore wraps Keras' JAX `train_step` (once, at
trace time only: nothing runs per batch): before Keras' own step runs, the
values of the model's non-trainable variables in the step's state (the masks
among them) are made visible to `read_mask`. The masks are then ordinary
state of the jitted step, updated between steps by assigning the variables
(after the callback's `jax_state_sync`).
"""

from __future__ import annotations

import contextlib
import threading

import jax
import jax.numpy as jnp
import keras
import numpy as np

from kprune.backend.promotion import keep_float64

_STATE = threading.local()


def compile_assign(fn):
    """Plain assigns: they run between jitted steps, on synced variables."""
    return fn


#: `compile_assign` returns the function unchanged (eager assigns).
COMPILES_ASSIGN = False


def read_numpy(variable):
    """The variable's value as numpy (a read-only view of a CPU array)."""
    return np.asarray(variable.value)


def _pure(fn, variables):
    def pure(values, *args):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return fn(*args)

    return pure


def _numpy(arrays):
    return [np.asarray(a) for a in arrays]


def grad_fn(fn, variables, compiled=True):
    """`run(*args) -> (value, grads)` for a scalar `fn(*args)` of `variables`."""
    variables = list(variables)
    value_and_grad = jax.value_and_grad(_pure(fn, variables))

    def run(*args):
        out, grads = value_and_grad([v.value for v in variables], *args)
        return np.asarray(out), _numpy(grads)

    return run


def hvp_fn(fn, variables, compiled=True):
    """`run(vector, *args) -> (g, H v)`; `vector=None` uses `g` itself."""
    variables = list(variables)
    grad = jax.grad(_pure(fn, variables))

    def run(vector, *args):
        values = [v.value for v in variables]
        g = grad(values, *args)
        fixed = g if vector is None else [jnp.asarray(a, b.dtype) for a, b in zip(vector, g)]
        fixed = jax.lax.stop_gradient(fixed)

        def inner(vals):
            return sum(jnp.sum(a * b) for a, b in zip(fixed, grad(vals, *args)))

        hv = jax.grad(inner)(values)
        return _numpy(g), _numpy(hv)

    return run


@contextlib.contextmanager
def float64_scope():
    """float64 arrays stay float64 inside (JAX's x64 mode, restored after)."""
    previous = bool(jax.config.jax_enable_x64)
    jax.config.update("jax_enable_x64", True)
    try:
        with keep_float64():  # and Keras' promotion keeps them (see promotion.py)
            yield
    finally:
        jax.config.update("jax_enable_x64", previous)


def read_mask(mask):
    """The mask's value in the running train step, else the variable's."""
    values = getattr(_STATE, "values", None)
    if values is not None:
        value = values.get(id(mask))
        if value is not None:
            return value
    return mask.value


def masks_visible():
    """Whether a train step traced now lets constraints see the masks."""
    return getattr(_STATE, "values", None) is not None


def _show_masks_to_constraints(train_step):
    """Wraps Keras' JAX `train_step` so that constraints see the current masks.

    The wrapper runs when the step is traced (not per batch): it maps each
    non-trainable variable (masks included) to its value in the step's state,
    for `read_mask`. Models of every kind get it, loaded ones included; a
    model class that overrides `train_step` entirely must call `stateless_apply`
    in its own way (`masks_visible()` is then False and the wrapper says so).
    """

    def wrapped(self, state, data):
        previous = getattr(_STATE, "values", None)
        _STATE.values = {
            id(v): value for v, value in zip(self.non_trainable_variables, state[1])
        }
        try:
            _check_pruned_layers(self)
            return train_step(self, state, data)
        finally:
            _STATE.values = previous

    wrapped._kprune_wrapped = train_step  # noqa: SLF001 - same module
    return wrapped


#: `check(model)` functions run once per traced train step (see
#: `add_train_step_check`); the core registers the missing-callback check.
_TRAIN_STEP_CHECKS = []


def add_train_step_check(check):
    """Runs `check(model)` once per traced train step (JAX only).

    On TensorFlow and torch the pruned layers check the missing callback
    themselves when they are called with `training=True`. Keras' JAX train
    step calls the model's `call` directly (`stateless_call`), so a layer that
    a subclassed model's `call` does not hand `training` to sees
    `training=None`; the step itself runs the checks registered here instead.
    The backend imports nothing of kprune above it: the caller (the core)
    passes the check.
    """
    if check not in _TRAIN_STEP_CHECKS:
        _TRAIN_STEP_CHECKS.append(check)


def _check_pruned_layers(model):
    for check in _TRAIN_STEP_CHECKS:
        check(model)


def _restore(model, state):
    """Puts the values of a train function's input state back into the
    variables that Keras purged for the duration of `fit`."""
    groups = [model.trainable_variables, model.non_trainable_variables]
    if getattr(model, "optimizer", None) is not None:
        groups.append(model.optimizer.variables)
    groups.append(model.metrics_variables)
    for variables, values in zip(groups, state):
        for v, value in zip(variables, values):
            if getattr(v, "_value", 0) is None:
                v._direct_assign(value)


def restore_train_state(model, state):
    """Called when a train function refuses to run: `fit` has purged the
    variables into `state`; put them back."""
    if isinstance(state, (tuple, list)) and len(state) >= 2:
        _restore(model, state)


def _keep_weights_on_failure(make_train_function):
    """Wraps Keras' JAX `make_train_function` so that a train step that fails
    (for example the missing-callback error, raised while the step is traced)
    does not lose the model: JAX `fit` purges the variables' values while it
    holds them in its state, and would leave them purged."""

    def wrapped(self, force=False):
        out = make_train_function(self, force)
        fn = self.train_function
        if fn is not None and not getattr(fn, "_kprune_guarded", False):

            def guarded(state, data):
                try:
                    return fn(state, data)
                except Exception:
                    _restore(self, state)
                    raise

            guarded._kprune_guarded = True  # noqa: SLF001 - same module
            self.train_function = guarded
        return out

    wrapped._kprune_wrapped = make_train_function  # noqa: SLF001 - same module
    return wrapped


def _install():
    from keras.src.backend.jax.trainer import JAXTrainer

    if not hasattr(JAXTrainer.train_step, "_kprune_wrapped"):
        JAXTrainer.train_step = _show_masks_to_constraints(JAXTrainer.train_step)
    if not hasattr(JAXTrainer.make_train_function, "_kprune_wrapped"):
        JAXTrainer.make_train_function = _keep_weights_on_failure(
            JAXTrainer.make_train_function)


_install()
