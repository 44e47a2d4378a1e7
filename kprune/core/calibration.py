"""The one calibration-data contract: batches, loss and the gradient loop.

Every kprune method that reads data to decide what to prune (at-init scoring,
Taylor and Hessian criteria, one-shot pruning, language-model pruning) takes
its data through this module, so the same data means the same thing
everywhere and bad data fails with the same messages.

**Batches** (`as_batches`). One set of rules, in this order:

1. A string, bytes or anything that is neither an array nor iterable is a
   `TypeError`.
2. *Inputs only*: an array (numpy, tensor), a dict of arrays, or (for a model
   with `n > 1` inputs) a Python list of `n` arrays. Sliced into batches of
   `batch_size` along axis 0; the targets are `None`.
3. *A pair*: a tuple or list of 2 or 3 items that is not a list of batches,
   i.e. `(x, y)` or `(x, y, sample_weight)` (`x` may itself be a list or dict
   of arrays, `y` may be `None`). `x` and `y` must hold the same number of
   examples; both are sliced into batches of `batch_size`. The sample weights
   are ignored.
4. *Batches*: any other iterable (a list of batches, a `tf.data.Dataset`, a
   generator, a `keras.utils.PyDataset`-like iterator): every item is one
   batch, either `(x, y[, sample_weight])` (a tuple or list of 2 or 3) or
   inputs only. Tensors are converted to numpy arrays.

At most `max_batches` batches are taken. `targets="required"` refuses data
without targets (a single array, a one-item tuple, an inputs-only batch);
`targets="optional"` returns `(x, y)` pairs with `y` possibly `None`;
`targets="drop"` returns the inputs `x` of every batch only.

**Loss** (`resolve_loss`). One rule: the explicit `loss=` (a Keras loss
name, a `keras.losses.Loss`, or `fn(y_true, y_pred)`), else the model's
compiled loss when it is a single loss, else the caller's documented
`fallback` (at-init scoring falls back to cross-entropy, see
`kprune.methods.at_init`), else a `ValueError` asking for `loss=`.

**Gradient loop** (`gradient_sum`, `sum_over_batches`): the sum over batches
of `d objective / d variables`, on the backend seam (`kprune.backend.grad_fn`),
so it runs on TensorFlow, JAX and torch.

Example:
>>> batches = as_batches((x, y), batch_size=32, max_batches=4)
>>> loss_fn = resolve_loss(model, "sparse_categorical_crossentropy")
>>> grads = gradient_sum(lambda xb, yb: keras.ops.mean(loss_fn(yb, model(xb))),
...                      model.trainable_weights, batches)
"""

from __future__ import annotations

import keras
import numpy as np

from kprune import backend
from kprune.core import checks

__all__ = [
    "TARGETS",
    "as_batches",
    "check_inputs",
    "gradient_sum",
    "is_array",
    "label_form",
    "num_examples",
    "num_inputs",
    "resolve_loss",
    "slice_examples",
    "sum_over_batches",
    "to_numpy",
]

#: The values of `as_batches(targets=...)`.
TARGETS = ("required", "optional", "drop")


def is_array(value):
    """True for a numpy array or a backend tensor (anything with shape and dtype)."""
    return hasattr(value, "shape") and hasattr(value, "dtype")


def to_numpy(value):
    """A numpy array of a tensor or array (`None` stays `None`)."""
    if value is None:
        return None
    return np.asarray(keras.ops.convert_to_numpy(value))


def num_examples(x):
    """The number of examples (first axis) of an array or a structure of arrays."""
    first = keras.tree.flatten(x)[0]
    return int(np.shape(first)[0])


def slice_examples(x, start, stop):
    """Examples `start:stop` of every array of a structure (`None` stays `None`)."""
    if x is None:
        return None
    return keras.tree.map_structure(lambda a: a[start:stop], x)


def num_inputs(model):
    """How many input arrays `model` takes (1 when unknown, e.g. subclassed)."""
    try:
        return len(keras.tree.flatten(model.inputs)) if getattr(model, "inputs", None) else 1
    except (AttributeError, ValueError):
        return 1


def _is_inputs(data, model):
    """Rule 2: an array, a dict of arrays, or a list of a multi-input model's arrays."""
    if is_array(data):
        return True
    if isinstance(data, dict):
        return bool(data) and all(is_array(a) for a in keras.tree.flatten(data))
    n = num_inputs(model) if model is not None else 1
    return isinstance(data, list) and n > 1 and len(data) == n and all(is_array(a) for a in data)


def _is_pair(data):
    """Rule 3: `(x, y)` or `(x, y, sample_weight)`, not a list of batches."""
    return (isinstance(data, (tuple, list)) and len(data) in (2, 3)
            and not all(isinstance(item, (tuple, list)) for item in data))


def as_batches(data, *, batch_size=32, max_batches=None, targets="required", model=None,
               name="data", check_model_inputs=False):
    """The calibration data as a list of batches, by the module's rules.

    Args:
        data: arrays, an `(x, y)` pair, or an iterable of batches (see the
            module docstring for the rules).
        batch_size: examples per batch when `data` holds arrays.
        max_batches: take at most this many batches (`None`: all).
        targets: `"required"` (every batch has targets), `"optional"` or
            `"drop"` (inputs only).
        model: the model the data is for (tells a multi-input model's list
            of arrays from an `(x, y)` pair); optional.
        name: the parameter's name in error messages.
        check_model_inputs: check every batch's inputs against `model`'s
            input shapes (`check_inputs`) before anything else.

    Returns:
        A list of `(x, y)` pairs (`targets` "required" or "optional") or of
        inputs `x` (`targets="drop"`).

    Example:
    >>> as_batches((x, y), batch_size=100, max_batches=1)   # [(x[:100], y[:100])]
    >>> as_batches(x, batch_size=64, targets="drop")          # [x[:64], x[64:128], ...]
    """
    if targets not in TARGETS:
        raise ValueError(f"targets must be one of {TARGETS}, got {targets!r}.")
    if isinstance(data, (str, bytes)) or not (is_array(data) or hasattr(data, "__iter__")):
        raise TypeError(
            f"{name} must be (x, y) arrays, input arrays or an iterable of (x, y) "
            f"batches, got {type(data).__name__}."
            if targets != "required" else
            f"{name} must be (x, y) arrays or an iterable of (x, y) batches, got "
            f"{type(data).__name__}."
        )
    if _is_inputs(data, model):
        if targets == "required":
            shape = tuple(data.shape) if is_array(data) else "a structure of arrays"
            raise ValueError(
                f"{name} must be an (x, y) pair (inputs and labels), got a single array "
                f"of shape {shape}; pass {name}=(x, y)."
            )
        if check_model_inputs:
            check_inputs(model, data, name)
        return _sliced(data, None, batch_size, max_batches, targets, name)
    if _is_pair(data):
        if check_model_inputs:
            check_inputs(model, data[0], name)
        return _sliced(data[0], data[1], batch_size, max_batches, targets, name)
    if isinstance(data, (tuple, list)) and len(data) == 1 and not (
        isinstance(data[0], (tuple, list)) and len(data[0]) >= 2
    ):
        if targets == "required":
            raise ValueError(
                f"{name} must be an (x, y) pair or an iterable of (x, y) batches, got a "
                f"{type(data).__name__} of one item; pass {name}=(x, y)."
            )
    out = []
    for item in data:
        if max_batches is not None and len(out) == max_batches:
            break
        if _is_inputs(item, model):
            x, y = item, None
        elif isinstance(item, (tuple, list)) and len(item) in (2, 3):
            x, y = item[0], item[1]
        elif isinstance(item, tuple):
            x, y = item[0], None
        else:
            x, y = item, None
        if y is None and targets == "required" and not (
                isinstance(item, (tuple, list)) and len(item) in (2, 3)):
            raise ValueError(
                f"Every batch of {name} must be an (x, y) pair, got {type(item).__name__}."
            )
        x = keras.tree.map_structure(to_numpy, x)
        if check_model_inputs:
            check_inputs(model, x, name)
        if targets == "drop":
            out.append(x)
        else:
            out.append((x, None if y is None else keras.tree.map_structure(to_numpy, y)))
    if not out:
        raise ValueError(f"{name} yielded no batches.")
    return out


def _sliced(x, y, batch_size, max_batches, targets, name):
    arrays = keras.tree.flatten(x)
    if not arrays:
        raise ValueError(f"{name} holds no examples.")
    n = num_examples(x)
    if any(int(np.shape(a)[0]) != n for a in arrays):
        raise ValueError(
            f"{name} arrays must all hold the same number of examples (first axis); "
            f"got {[tuple(np.shape(a)) for a in arrays]}."
        )
    if y is not None and targets != "drop" and num_examples(y) != n:
        raise ValueError(
            f"{name}'s x has {n} examples but its y has {num_examples(y)}; give one "
            f"label per example (x and y of the same length)."
        )
    if n == 0:
        raise ValueError(f"{name} holds no examples.")
    out = []
    for start in range(0, n, batch_size):
        if max_batches is not None and len(out) == max_batches:
            break
        xb = slice_examples(x, start, start + batch_size)
        out.append(xb if targets == "drop" else (xb, slice_examples(y, start, start + batch_size)))
    return out


def check_inputs(model, x, name="data"):
    """Checks that `x` fits `model`'s symbolic inputs (count and shapes).

    A model without symbolic inputs (subclassed) is not checked: its forward
    pass says what is wrong.

    Raises:
        ValueError: naming the expected and the given shapes.
    """
    try:
        specs = keras.tree.flatten(model.inputs) if getattr(model, "inputs", None) else []
    except (AttributeError, ValueError):  # a subclassed model has no symbolic inputs
        specs = []
    if not specs:
        return
    arrays = keras.tree.flatten(x)
    if len(specs) != len(arrays):
        raise ValueError(
            f"{name}'s x has {len(arrays)} input array(s) but model "
            f"'{model.name}' takes {len(specs)}."
        )
    for spec, array in zip(specs, arrays):
        want, got = tuple(spec.shape)[1:], tuple(np.shape(array))[1:]
        if len(want) != len(got) or any(w is not None and w != g for w, g in zip(want, got)):
            raise ValueError(
                f"{name}'s x has shape {tuple(np.shape(array))}, but model "
                f"'{model.name}' expects inputs of shape {tuple(spec.shape)} "
                f"(batch first)."
            )


def compiled_loss(model):
    """The model's compiled loss if it is a single loss, else `None`."""
    loss = getattr(model, "loss", None)
    if loss is None or isinstance(loss, (dict, list, tuple)):
        return None
    return loss


def resolve_loss(model, loss=None, *, fallback=None, caller=None):
    """The loss `fn(y_true, y_pred)` by kprune's one rule.

    Explicit `loss`, else the model's compiled loss (a single one), else
    `fallback(model)` when the caller documents a fallback, else an error.

    Args:
        model: the Keras model the loss is for.
        loss: a Keras loss name, a `keras.losses.Loss`, a callable
            `fn(y_true, y_pred)`, or `None`.
        fallback: `None`, or `fn(model) -> loss callable` used when neither
            `loss` nor a compiled loss is there.
        caller: the name used in the error message.

    Returns:
        The unreduced loss callable `fn(y_true, y_pred)` (the caller reduces).

    Raises:
        TypeError: `loss` is neither a name nor callable.
        ValueError: no loss can be found and there is no fallback.

    Example:
    >>> fn = resolve_loss(model, "mse")
    >>> value = keras.ops.mean(fn(y, model(x)))
    """
    if loss is None:
        loss = compiled_loss(model)
    if loss is None:
        if fallback is not None:
            return fallback(model)
        who = f"{caller}: " if caller else ""
        raise ValueError(
            f"{who}A loss is needed: pass loss=... (e.g. "
            f"'sparse_categorical_crossentropy'); model '{model.name}' is not compiled "
            f"with a single loss."
        )
    if isinstance(loss, str):
        try:
            return keras.losses.get(loss)
        except ValueError as e:
            raise ValueError(f"loss {loss!r} is not a Keras loss name: {e}") from None
    if not callable(loss):
        raise TypeError(
            f"loss must be a Keras loss or callable (a name such as 'mse', a "
            f"keras.losses.Loss, or fn(y_true, y_pred)), got {checks.describe(loss)}."
        )
    return loss


def label_form(model, loss=None):
    """What label form the loss expects: `"sparse"`, `"one_hot"`, `"auto"` or `None`.

    `"auto"` when neither `loss` nor a compiled loss is there (the caller's
    fallback decides per batch); `None` for a loss whose labels kprune does
    not know (custom callables).
    """
    if loss is None:
        loss = getattr(model, "loss", None)
        if loss is None:
            return "auto"
    if isinstance(loss, str) or isinstance(loss, keras.losses.Loss):
        name = loss if isinstance(loss, str) else type(loss).__name__
        key = name.replace("_", "").lower()
        if key == "sparsecategoricalcrossentropy":
            return "sparse"
        if key == "categoricalcrossentropy":
            return "one_hot"
    return None


def sum_over_batches(fn, batches, on_batch=None):
    """`sum(fn(x, y) for (x, y) in batches)`, elementwise over lists of arrays.

    Args:
        fn: `fn(x, y) -> list of arrays` (e.g. gradients).
        batches: `(x, y)` pairs (`as_batches`).
        on_batch: called with no arguments after each batch (progress).

    Returns:
        The list of summed arrays.
    """
    total = None
    for x, y in batches:
        values = fn(x, y)
        total = list(values) if total is None else [a + b for a, b in zip(total, values)]
        if on_batch is not None:
            on_batch()
    return total


def gradient_sum(objective, variables, batches, *, compiled=False, on_batch=None):
    """The gradients of `objective` summed over batches, on the backend seam.

    Args:
        objective: `objective(x, y) -> scalar` computed from `variables`.
        variables: the Keras variables to differentiate.
        batches: `(x, y)` pairs (`as_batches`).
        compiled: trace the gradient function (`tf.function` on TensorFlow).
        on_batch: called after each batch (progress).

    Returns:
        A list of float64 numpy arrays, one per variable.
    """
    run = backend.grad_fn(objective, list(variables), compiled)
    total = sum_over_batches(lambda x, y: [np.asarray(g, np.float64) for g in run(x, y)[1]],
                             batches, on_batch)
    return total
