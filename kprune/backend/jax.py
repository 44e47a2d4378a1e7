"""JAX side of the backend seam (see `kprune/backend/__init__.py`).

Keras' JAX trainer is stateless: inside the jitted train step, variable
values travel as arrays, and `optimizer.stateless_apply` runs the optimizer
(and the variable constraints) in a `StatelessScope` that maps only the
trainable and optimizer variables. A `MaskConstraint` reading its mask
variable there would get a constant baked in at trace time (or, once Keras
has purged the model's variables during `fit`, the initial all-ones value).

`install_train_step(model)` therefore wraps the model's `train_step`: before
Keras' own step runs, the current values of the model's non-trainable
variables (the masks among them) are made visible to `read_mask`. The masks
are then ordinary state of the jitted step, updated between steps by
assigning the variables (after the callback's `jax_state_sync`).
"""

from __future__ import annotations

import contextlib
import threading

import jax
import jax.numpy as jnp
import keras
import numpy as np

_STATE = threading.local()


def compile_assign(fn):
    """Plain assigns: they run between jitted steps, on synced variables."""
    return fn


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


def install_train_step(model):
    """Wraps `model.train_step` so that constraints see the current masks.

    Idempotent. A train function the model already made is made anew, so
    that a `fit` in progress (this is called from `on_train_begin`) runs the
    wrapped step from its first batch.
    """
    if getattr(model, "_kprune_train_step", None) is not None:
        return model
    step = model.train_step  # bound: the model class's own train_step

    def train_step(state, data):
        non_trainable = state[1]
        previous = getattr(_STATE, "values", None)
        _STATE.values = {
            id(v): value for v, value in zip(model.non_trainable_variables, non_trainable)
        }
        try:
            return step(state, data)
        finally:
            _STATE.values = previous

    object.__setattr__(model, "train_step", train_step)
    object.__setattr__(model, "_kprune_train_step", step)
    if getattr(model, "train_function", None) is not None:
        model.train_function = None
        model.make_train_function()
    return model
