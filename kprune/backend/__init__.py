"""The backend seam: the few things kprune does differently per Keras backend.

Everything else in kprune is written with `keras.ops`, `keras.random` and
numpy, and runs unchanged on TensorFlow, JAX and PyTorch. What truly differs
per backend lives in one small module each (`tensorflow.py`, `jax.py`,
`torch.py`), in the style of `keras/src/backend/`, behind this interface:

* `compile_assign(fn)`: a function that assigns many variables at once
  (mask updates), compiled where that is faster (`tf.function` on
  TensorFlow) and plain elsewhere; `compiles_assign` says which.
* `read_numpy(variable)`: the variable's value as a numpy array, without a
  copy where the backend allows (CPU tensors share their buffer). Read
  only: never write into it.
* `grad_fn(fn, variables)`: for a scalar `fn(*args)` computed from the
  variables' values, returns `run(*args) -> (value, [d value / d variable])`
  as numpy arrays (traced once with `tf.function` on TensorFlow). Used by
  SNIP, SynFlow and Taylor channel importance.
* `hvp_fn(fn, variables)`: `run(vector, *args) -> (g, H vector)` for the same
  kind of `fn`, by double backpropagation; `vector=None` uses `g` itself.
  Used by GraSP.
* `float64_scope()`: a context in which float64 arrays stay float64 (JAX
  needs `jax_enable_x64`; the others always do; JAX and torch also keep Keras' type
  promotion at 64 bits, `promotion.py`), for SynFlow.
* `read_mask(mask_variable)`: the mask value a constraint must use now. On
  JAX, optimizer constraints run in a stateless scope that does not map the
  model's non-trainable variables; `kprune.backend.jax` wraps Keras' JAX
  train step (at trace time) so that they see the masks of the step's state.
  `masks_visible()` says whether a step being traced now does (False on JAX
  in a model class whose own `train_step` replaces Keras').
* `add_train_step_check(check)`: `check(model)` runs once per traced train
  step where the layers cannot check themselves (JAX); a no-op elsewhere.
  The core passes its missing-callback check: the backend imports nothing
  of kprune above it.
* `restore_train_state(model, state)`: puts back the variables that JAX's
  `fit` purged into the train function's `state`, when kprune stops a step
  from running (a no-op elsewhere).

The module is chosen by `keras.backend.backend()` when kprune is imported.
TensorFlow is imported only by `tensorflow.py`, so `import kprune` works with
only keras and one backend installed.
"""

from __future__ import annotations

import importlib

import keras

__all__ = [
    "name",
    "compile_assign",
    "compiles_assign",
    "read_numpy",
    "grad_fn",
    "hvp_fn",
    "float64_scope",
    "read_mask",
    "masks_visible",
    "restore_train_state",
    "add_train_step_check",
]

name = keras.backend.backend()
if name not in ("tensorflow", "jax", "torch"):
    raise ImportError(
        f"kprune runs on the Keras backends 'tensorflow', 'jax' and 'torch'; "
        f"KERAS_BACKEND is {name!r}."
    )

_impl = importlib.import_module(f"kprune.backend.{name}")

compile_assign = _impl.compile_assign
compiles_assign = _impl.COMPILES_ASSIGN
read_numpy = _impl.read_numpy
grad_fn = _impl.grad_fn
hvp_fn = _impl.hvp_fn
float64_scope = _impl.float64_scope
read_mask = _impl.read_mask
masks_visible = _impl.masks_visible
restore_train_state = _impl.restore_train_state
# Only JAX's train step needs the core's checks (see backend/jax.py).
add_train_step_check = getattr(_impl, "add_train_step_check", lambda check: None)
