"""At-init scoring: SynFlow (Tanaka et al., NeurIPS 2020), data-free and iterative.

On a float64 copy with absolute weights and linear softmaxes, an all-ones
input, `R = sum(outputs)` and `score = |theta * dR/dtheta|`; round `k` of `n`
prunes to density `rho^(k/n)` through the mask engine (`select_masks`).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from kprune import backend
from kprune.methods.at_init.copies import scoring_copy
from kprune.methods.at_init.plan import numpy_value, select_masks
from kprune.utils import progress


def synflow_input(plan, clone):
    if plan.batches:
        x = plan.batches[0][0]
        return keras.tree.map_structure(lambda a: np.ones((1,) + tuple(np.shape(a))[1:], "float64"), x)
    specs = keras.tree.flatten(plan.model.inputs)
    shapes = [tuple(s.shape)[1:] for s in specs]
    if any(d is None for shape in shapes for d in shape):
        raise ValueError(
            f"SynFlow feeds an all-ones input, but model '{plan.model.name}' "
            f"has input shape(s) {[tuple(s.shape) for s in specs]} with unknown "
            f"dimensions; pass data=(x, y) so the input shape is known."
        )
    ones = [np.ones((1,) + shape, "float64") for shape in shapes]
    return ones[0] if len(ones) == 1 else keras.tree.pack_sequence_as(plan.model._inputs_struct, ones)


def synflow_grad(clone, variables, x):
    """(R, dR/dtheta) with the model in inference mode, in float64."""

    def total(x):
        out = clone(x, training=False)
        return sum(ops.sum(ops.cast(o, "float64")) for o in keras.tree.flatten(out))

    r, grads = backend.grad_fn(total, variables, compiled=False)(x)
    return float(r), grads


def synflow_scores(plan, sparsity, per_key, scope, min_keep, iterations):
    """Iterative SynFlow; returns `(last_round_scores, masks)`.

    With `sparsity=None`, one round on the dense net and `masks=None`.
    Runs in the backend's float64 scope (JAX would silently compute the
    float64 copy in float32 otherwise).
    """
    with backend.float64_scope():
        return synflow_rounds(plan, sparsity, per_key, scope, min_keep, iterations)


def synflow_rounds(plan, sparsity, per_key, scope, min_keep, iterations):
    clone, variables = scoring_copy(plan, float64=True, linear_softmax=True)
    x = synflow_input(plan, clone)
    # "Linearize": every floating weight of the copy becomes |w| (float64).
    for v in clone.weights:
        if keras.backend.is_float_dtype(v.dtype):
            v.assign(np.abs(numpy_value(v)))
    keys = list(variables)
    var_list = list(variables.values())
    absolute = {k: numpy_value(v) for k, v in variables.items()}
    masks = {k: np.ones(a.shape, bool) for k, a in absolute.items()}
    rounds = 1 if sparsity is None else iterations
    bar = progress.Progress(rounds, f"{plan.method} scoring", verbose=plan.verbose, unit="round")
    density = 1.0 - (sparsity or 0.0)
    scores = None
    for k in range(1, rounds + 1):
        for key, v in variables.items():
            v.assign(absolute[key] * masks[key])
        r, grads = synflow_grad(clone, var_list, x)
        if not np.isfinite(r):
            raise ValueError(
                f"SynFlow's R = sum(outputs) overflowed even in float64 for "
                f"model '{plan.model.name}' (R = {r}); the network is too deep "
                f"or its weights too large for data-free path scoring."
            )
        scores = {key: np.abs(g * numpy_value(v)) for key, v, g in zip(keys, var_list, grads)}
        bar.add(1)
        if sparsity is None:
            break
        round_sparsity = 1.0 - density ** (k / rounds)
        round_per_key = {key: 1.0 - (1.0 - s) ** (k / rounds) for key, s in per_key.items()}
        masks = select_masks(scores, round_sparsity, round_per_key, scope, min_keep, keys, masks)
    return scores, (None if sparsity is None else masks)
