"""TensorFlow side of the backend seam (see `kprune/backend/__init__.py`)."""

from __future__ import annotations

import contextlib

import numpy as np
import tensorflow as tf


def compile_assign(fn):
    """`fn` traced once with `tf.function` (one graph call for all assigns)."""
    return tf.function(fn, reduce_retracing=True)


#: `compile_assign` traces a `tf.function`.
COMPILES_ASSIGN = True


def read_numpy(variable):
    """The variable's value as numpy; on CPU it shares the read tensor's
    buffer (TensorFlow copies on the next write, so it stays valid)."""
    value = variable.value
    if isinstance(value, tf.Tensor):
        return value.numpy()
    return np.asarray(value)


def _numpy(grads, variables):
    out = []
    for g, v in zip(grads, variables):
        if g is None:
            out.append(np.zeros(tuple(v.shape), np.dtype(v.dtype)))
        else:
            if isinstance(g, tf.IndexedSlices):  # embeddings: sparse gradients
                g = tf.convert_to_tensor(g)
            out.append(np.asarray(g))
    return out


def _watch(tape, variables):
    for v in variables:
        tape.watch(v.value)


def grad_fn(fn, variables, compiled=True):
    """`run(*args) -> (value, grads)` for a scalar `fn(*args)` of `variables`."""
    variables = list(variables)

    def graph(*args):
        values = [v.value for v in variables]
        with tf.GradientTape() as tape:
            _watch(tape, variables)
            out = fn(*args)
        grads = tape.gradient(out, values, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return out, grads

    traced = tf.function(graph, reduce_retracing=True) if compiled else graph

    def run(*args):
        out, grads = traced(*args)
        return np.asarray(out), _numpy(grads, variables)

    return run


def hvp_fn(fn, variables, compiled=True):
    """`run(vector, *args) -> (g, H v)`; `vector=None` uses `g` itself."""
    variables = list(variables)

    def graph(vector, *args):
        values = [v.value for v in variables]
        with tf.GradientTape() as outer:
            _watch(outer, variables)
            with tf.GradientTape() as inner:
                _watch(inner, variables)
                out = fn(*args)
            g = inner.gradient(out, values, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            fixed = g if vector is None else [tf.cast(a, b.dtype) for a, b in zip(vector, g)]
            z = tf.add_n([tf.reduce_sum(tf.stop_gradient(a) * b) for a, b in zip(fixed, g)])
        hv = outer.gradient(z, values, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return g, hv

    traced = tf.function(graph, reduce_retracing=True) if compiled else graph

    def run(vector, *args):
        g, hv = traced(vector, *args)
        return _numpy(g, variables), _numpy(hv, variables)

    return run


def float64_scope():
    return contextlib.nullcontext()


def restore_train_state(model, state):
    """Nothing to restore: `fit` keeps the variables on this backend."""


def masks_visible():
    """Constraints always see the mask variables on this backend."""
    return True


def read_mask(mask):
    return mask.value
