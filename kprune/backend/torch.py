"""PyTorch side of the backend seam (see `kprune/backend/__init__.py`)."""

from __future__ import annotations


import numpy as np
import torch

from kprune.backend.promotion import keep_float64


def compile_assign(fn):
    """Plain eager assigns (the torch trainer runs eagerly too)."""
    return fn


#: `compile_assign` returns the function unchanged (eager assigns).
COMPILES_ASSIGN = False


def read_numpy(variable):
    """The variable's value as numpy, sharing a CPU tensor's memory (read
    it before the next assign)."""
    value = variable.value.detach().cpu()
    if value.dtype == torch.bfloat16:  # numpy has no bfloat16
        value = value.float()
    return value.numpy()


def _numpy(grads, variables):
    out = []
    for g, v in zip(grads, variables):
        if g is None:
            out.append(np.zeros(tuple(v.shape), np.dtype(v.dtype)))
        else:
            out.append(g.detach().cpu().numpy())
    return out


def _leaves(variables):
    values = []
    for v in variables:
        value = v.value
        if not value.requires_grad:
            value.requires_grad_(True)
        values.append(value)
    return values


def grad_fn(fn, variables, compiled=True):
    """`run(*args) -> (value, grads)` for a scalar `fn(*args)` of `variables`."""
    variables = list(variables)

    def run(*args):
        with torch.enable_grad():
            values = _leaves(variables)
            out = fn(*args)
            grads = torch.autograd.grad(out, values, allow_unused=True)
        return out.detach().cpu().numpy(), _numpy(grads, variables)

    return run


def hvp_fn(fn, variables, compiled=True):
    """`run(vector, *args) -> (g, H v)`; `vector=None` uses `g` itself."""
    variables = list(variables)

    def run(vector, *args):
        with torch.enable_grad():
            values = _leaves(variables)
            out = fn(*args)
            g = torch.autograd.grad(out, values, create_graph=True, allow_unused=True)
            g = [torch.zeros_like(x) if gi is None else gi for gi, x in zip(g, values)]
            if vector is None:
                fixed = [gi.detach() for gi in g]
            else:
                fixed = [torch.as_tensor(np.asarray(a), dtype=gi.dtype, device=gi.device)
                         for a, gi in zip(vector, g)]
            z = sum((a * b).sum() for a, b in zip(fixed, g))
            hv = torch.autograd.grad(z, values, allow_unused=True)
        return _numpy(g, variables), _numpy(hv, variables)

    return run


def float64_scope():
    """float64 stays float64 inside (Keras' promotion would give float32)."""
    return keep_float64()


def restore_train_state(model, state):
    """Nothing to restore: `fit` keeps the variables on this backend."""


def masks_visible():
    """Constraints always see the mask variables on this backend."""
    return True


def read_mask(mask):
    return mask.value
