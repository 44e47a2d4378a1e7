"""Capture: what the layers of a model (or of one block) receive.

* `intercept` / `capture_inputs`: temporarily replace the `call` of some
  layer instances to see their arguments (any model kind, nested layers
  included), optionally ending the forward pass right after.
* `layer_inputs` / `statistics`: a layer's inputs batch by batch, reduced at
  once to the statistics the methods need (`sum x^2` per input for Wanda,
  `X^T X` for SparseGPT), so memory stays bounded by one batch.
* `BlockInputs`: the cached calibration inputs of the current block (the
  block-by-block driver's one activation cache).
"""

from __future__ import annotations

import contextlib
import inspect

import keras
import numpy as np

from kprune.core import model_tree
from kprune.methods.one_shot.kernel_views import to_numpy

__all__ = ["StopForward", "intercept", "capture_inputs", "layer_inputs", "sub_model",
           "statistics", "calibration_batches", "BlockInputs", "run_model"]


class StopForward(Exception):
    """Raised by a recorder to end a forward pass once it has what it needs."""

    # Keras adds argument info to exceptions raised in call(), re-creating
    # them; this marks the exception as already annotated.
    _keras_call_info_injected = True


@contextlib.contextmanager
def intercept(layers, before=None, after=None, stop_after=None):
    """Calls `before(layer, args, kwargs)` / `after(layer, output)` around the
    `call` of `layers` while the block runs; ends the forward pass (quietly)
    right after `stop_after`'s arguments are seen.

    The original `call` is restored on exit, also on errors.

    Example:
    ```python
    seen = []
    with intercept([block], before=lambda l, a, k: seen.append((a, k)), stop_after=block):
        model(x)
    ```
    """
    layers = list(layers)
    saved = []
    try:
        for layer in layers:
            original = layer.call
            saved.append((layer, "call" in layer.__dict__, layer.__dict__.get("call")))
            object.__setattr__(layer, "call", _recorder(layer, original, before, after,
                                                         layer is stop_after))
        try:
            yield
        except StopForward:
            pass
    finally:
        for layer, had, previous in saved:
            if had:
                object.__setattr__(layer, "call", previous)
            else:
                object.__delattr__(layer, "call")


def _recorder(layer, original, before, after, stop):
    def call(*args, **kwargs):
        if before is not None:
            before(layer, args, kwargs)
        if stop:
            raise StopForward()
        output = original(*args, **kwargs)
        if after is not None:
            after(layer, output)
        return output

    return call


def first_argument(fn, args, kwargs):
    """The first positional argument of a call of `fn`, also when passed by name."""
    if args:
        return args[0]
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            return kwargs.get(p.name)
    return None


@contextlib.contextmanager
def capture_inputs(layers, callback, stop_after=None):
    """Records the first call argument of `layers` while the block runs.

    The layers' `call` is temporarily replaced (on the instances) by a
    function that hands the input to `callback(layer, input)` and then calls
    the original. It works for any model kind, also for layers nested inside
    composite layers or subclassed models. The original `call` is restored on
    exit, also on errors.

    Args:
        layers: the Keras layers to watch.
        callback: `callback(layer, inputs)`, called on every call of a
            watched layer with the tensor it received.
        stop_after: optional layer; the forward pass is ended (quietly, the
            context manager swallows it) right after its input is recorded,
            which saves running the rest of the model.

    Example:
    ```python
    seen = []
    with kprune.post_training.capture_inputs([dense], lambda l, x: seen.append(x)):
        model(x_batch)
    ```
    """
    layers = list(layers)
    originals = {id(layer): layer.call for layer in layers}

    def before(layer, args, kwargs):
        callback(layer, first_argument(originals[id(layer)], args, kwargs))

    with intercept(layers, before=before, stop_after=stop_after):
        yield


def run_model(model, x):
    """`model(x, training=False)`, a failure re-raised as a ValueError naming the model."""
    try:
        return model(x, training=False)
    except StopForward:
        raise
    except Exception as e:  # noqa: BLE001 - re-raised with the model's name
        raise ValueError(f"Model '{model.name}' could not run on the calibration data: {e}") from e


class BlockInputs:
    """The cached calibration inputs of one block: per batch, the block's
    first argument and the rest of its call (`padding_mask=...` and the like).

    `run(i)` runs the block on entry `i`; `advance()` replaces every entry's
    first argument by the block's output, in place (the next block's inputs),
    so one cache is held at a time.
    """

    def __init__(self, entries):
        self.entries = entries  # list of [x, args, kwargs]

    @classmethod
    def capture(cls, model, block, batches):
        """The inputs `block` receives when `model` runs on `batches` (each
        forward pass ends at the block)."""
        entries = []
        original = block.call

        def before(_, args, kwargs):
            x = first_argument(original, args, kwargs)
            rest = args[1:] if args else ()
            kw = dict(kwargs)
            if not args:
                kw = {k: v for k, v in kw.items() if v is not x}
            entries.append([x, rest, kw])

        for batch in batches:
            n = len(entries)
            with intercept([block], before=before, stop_after=block):
                run_model(model, batch)
            if len(entries) != n + 1:
                raise ValueError(f"Block '{block.path}' was not called on the calibration data.")
        return cls(entries)

    def __len__(self):
        return len(self.entries)

    def run(self, block, entry):
        x, args, kwargs = entry
        return block(x, *args, **kwargs)

    def advance(self, block):
        for entry in self.entries:
            out = self.run(block, entry)
            entry[0] = out[0] if isinstance(out, (tuple, list)) else out

    def nbytes(self):
        return sum(int(np.prod(e[0].shape)) * np.dtype(keras.backend.standardize_dtype(
            e[0].dtype)).itemsize for e in self.entries)


def layer_inputs(model, layer, batches, stop_early=True):
    """Yields, batch by batch, the inputs that `layer` receives in `model`.

    For a layer of the model's own functional graph, a sub-model from the
    model's inputs to the layer's input is run. For any other layer (nested
    in a composite layer or a nested model, or a layer called several times)
    the model runs with `capture_inputs` and stops right after the layer's
    input is seen (for a layer called several times, e.g. a shared layer,
    the whole forward pass runs and every call is yielded).

    Args:
        model: the model, in its current state (e.g. partly pruned).
        layer: a layer called by `model`.
        batches: iterable of model inputs.
        stop_early: end each forward pass once the layer's input is seen
            (pass False for a layer called several times per forward pass).

    Yields:
        numpy arrays, the layer's first call argument.
    """
    sub = sub_model(model, layer)
    for x in batches:
        if sub is not None:
            yield to_numpy(sub(x, training=False))
            continue
        seen = []
        with capture_inputs([layer], lambda _, t: seen.append(to_numpy(t)),
                            stop_after=layer if stop_early else None):
            model(x, training=False)
        yield from seen


def sub_model(model, layer):
    """`keras.Model(model.inputs, layer.input)`, for a layer of its graph."""
    if not model_tree.is_graph_model(model) and not isinstance(model, keras.Sequential):
        return None
    if layer not in model.layers or len(layer._inbound_nodes) != 1:
        return None
    try:
        # Sequential: one input; functional: the input structure (a dict for
        # KerasHub backbones), so the sub-model takes the same batches.
        inputs = model.inputs[0] if isinstance(model, keras.Sequential) else model.input
        return keras.Model(inputs, layer.input)
    except (ValueError, AttributeError, TypeError):
        return None


def statistics(model, layers, views, batches, full, stop_early=True, run=None):
    """Per layer: `X^T X` (`full`) or `sum_rows x^2` per input, in float64.

    One layer: `layer_inputs`. Several layers reading the same tensor: one
    intercepted forward pass per batch serves them all.

    Args:
        model: the model (or block) to run, in its current state.
        layers: one group of layers (see `kprune.methods.one_shot.blocks.groups`).
        views: `{id(layer): KernelView}`.
        batches: the inputs of `model`; with `run`, any cached entries.
        full: collect `X^T X` (SparseGPT) instead of the squared norms (Wanda).
        stop_early: end each pass once the group's last layer has its input.
        run: `run(entry)` runs the model (or block) on one entry (default
            `model(entry, training=False)`).

    Returns:
        A list, one float64 array per layer.
    """
    acc = {id(l): None for l in layers}

    def add(layer, x):
        x2 = views[id(layer)].inputs_2d(x)
        part = x2.T @ x2 if full else np.einsum("ri,ri->i", x2, x2)
        key = id(layer)
        if acc[key] is None:
            acc[key] = part
        else:
            acc[key] += part  # in place: no third [in, in] array

    if run is None and len(layers) == 1:
        for x in layer_inputs(model, layers[0], batches, stop_early):
            add(layers[0], x)
    else:
        run = run or (lambda x: model(x, training=False))
        for entry in batches:
            with capture_inputs(layers, add, stop_after=layers[-1] if stop_early else None):
                run(entry)
    for layer in layers:
        if acc[id(layer)] is None:
            raise ValueError(f"Layer '{layer.path}' received no input from the calibration data.")
    return [acc[id(l)] for l in layers]


def calibration_batches(model, data, batch_size, num_batches):
    """The calibration inputs as a list of model-input batches.

    Args:
        model: the model the batches are for (its number of inputs).
        data: see `prune_post_training`'s `calibration_data`.
        batch_size: batch size when `data` is arrays.
        num_batches: at most this many batches (None: all).

    Returns:
        A non-empty list of model inputs.
    """
    if isinstance(data, (str, bytes)):
        raise TypeError(
            f"calibration_data must be arrays or an iterable of batches, got "
            f"{type(data).__name__}."
        )
    n_inputs = len(keras.tree.flatten(model.inputs)) if getattr(model, "inputs", None) else 1

    def array_like(a):
        return hasattr(a, "shape") and hasattr(a, "dtype")

    is_arrays = array_like(data) or (
        isinstance(data, dict) and data and all(array_like(a) for a in keras.tree.flatten(data))
    ) or (
        isinstance(data, list) and n_inputs > 1 and len(data) == n_inputs
        and all(array_like(a) for a in data)
    )
    out = []
    if is_arrays:
        arrays = keras.tree.flatten(data)
        n = int(np.shape(arrays[0])[0])
        if any(int(np.shape(a)[0]) != n for a in arrays):
            raise ValueError(
                f"calibration_data arrays must all hold the same number of "
                f"examples (first axis); got {[tuple(np.shape(a)) for a in arrays]}."
            )
        for start in range(0, n, batch_size):
            out.append(keras.tree.map_structure(
                lambda a, start=start: a[start:start + batch_size], data))
            if num_batches is not None and len(out) == num_batches:
                break
    elif hasattr(data, "__iter__"):
        for item in data:
            if num_batches is not None and len(out) == num_batches:
                break
            if isinstance(item, tuple):  # (x, y) or (x, y, sample_weight)
                item = item[0]
            out.append(keras.tree.map_structure(to_numpy, item))
    else:
        raise TypeError(
            f"calibration_data must be an array, a dict/list of arrays, or an "
            f"iterable of batches, got {type(data).__name__}."
        )
    if not out:
        raise ValueError("calibration_data holds no examples.")
    return out
