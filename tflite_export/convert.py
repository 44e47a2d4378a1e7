"""Keras 3 model -> .tflite bytes, with TFLite's sparse weight formats.

What TF 2.21's converter does with zeros (measured with TF 2.21 and
ai-edge-litert 2.3; see `benchmarks/tflite_sparse.py`):

* Without `tf.lite.Optimize.EXPERIMENTAL_SPARSITY` every weight is dense.
* With it, a weight with fewer than 30% zeros stays dense.
* A Dense kernel pruned with `kprune.Block((4, 1))` (TFLite's 1x4 block in its
  `[out, in]` layout) is stored block-sparse and runs TFLite's sparse
  FullyConnected kernel; for full-integer int8 the block is 1x16
  (`kprune.Block((16, 1))`).
* Every other sparse tensor (Conv2D, DepthwiseConv2D, unstructured Dense) is
  stored CSR and expanded back by a DENSIFY op: smaller file, no speed-up.

Combinations that produce broken files in TF 2.21 / LiteRT 2.3, which
`convert` therefore refuses (explicit `sparsity="sparse"`) or avoids
(`sparsity="auto"` falls back to dense weights, with a warning):

* `quantize="float16"` with block-sparse weights: the model outputs NaN.
* `quantize="dynamic"` with sparse weights: the XNNPACK delegate (on by
  default) fails to prepare CSR int8 weights, and computes wrong results with
  1x16 block-sparse int8 weights.
* `quantize="int8"` with CSR weights (anything but 1x16 blocks): the XNNPACK
  delegate fails to prepare. `convert` checks this by building an
  interpreter.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import warnings

import numpy as np

from tflite_export import qat
from tflite_export.recurrent import with_static_batch

SPARSITY_MODES = ("auto", "dense", "sparse")
QUANTIZE_MODES = (None, "dynamic", "float16", "int8")

#: TFLite keeps a tensor with fewer zeros than this dense (measured).
TFLITE_MIN_ZEROS = 0.30
#: `sparsity="auto"` turns sparse encoding on when a kernel of at least
#: `AUTO_MIN_SIZE` weights has at least `AUTO_MIN_ZEROS` zeros.
AUTO_MIN_ZEROS = 0.50
AUTO_MIN_SIZE = 1024
#: Representative samples used for int8 calibration, at most.
MAX_CALIBRATION_SAMPLES = 200


class ConversionError(ValueError):
    """The TFLite converter rejected the model.

    Attributes:
        layers: names of the Keras layers whose ops were rejected.
        ops: names of the TensorFlow ops the converter could not lower.
    """

    def __init__(self, message, layers=(), ops=()):
        super().__init__(message)
        self.layers = list(layers)
        self.ops = list(ops)


def convert(
    model,
    sparsity="auto",
    quantize=None,
    representative_data=None,
    verbose=False,
):
    """Converts a (pruned) Keras 3 model to .tflite bytes.

    Pruning wrappers are stripped first (on a copy: the model passed in is
    never modified). The conversion uses
    `tf.lite.TFLiteConverter.from_keras_model`, which in TF 2.21 exports Keras
    3 models through `keras.export.ExportArchive` with `training=False`, and
    only TFLite builtin ops (no TF Select ops, which phones lack).

    Args:
        model: a built `keras.Model`, optionally wrapped by
            `kprune.prune_low_magnitude`.
        sparsity: `"dense"` stores every weight dense; `"sparse"` turns on
            `tf.lite.Optimize.EXPERIMENTAL_SPARSITY`; `"auto"` turns it on
            when a kernel of >= 1024 weights has >= 50% zeros and the
            quantization mode supports it.
        quantize: `None` (float32), `"dynamic"` (int8 weights, float
            activations), `"float16"` (float16 weights) or `"int8"` (full
            integer with float inputs/outputs; needs `representative_data`;
            pairs with `kprune.Block((16, 1))` for the sparse kernel). A
            quantization-aware model (`kprune.quantization`) needs `"int8"`
            and no `representative_data`: its trained ranges are used.
        representative_data: calibration inputs for `"int8"`: a numpy array
            `[N, ...]`, a list/tuple of arrays (one per model input, in
            `model.inputs` order), a dict `{input name: array}`, or a
            callable returning an iterable of input lists (TFLite's
            `representative_dataset`). Every sample must be finite and match
            the model's input shapes. At most 200 samples are used. Given
            with another `quantize` mode it is ignored, with a warning.
        verbose: if True, the converter's own logs are shown.

    Returns:
        The .tflite model as `bytes`.

    Raises:
        TypeError: `model` is not a Keras model.
        ValueError: unknown `sparsity`/`quantize`, or an unsupported
            sparse/quantize pair.
        CalibrationError: (a ValueError) missing `representative_data`, or
            arrays of the wrong count/shape, or with NaN/inf values.
        ConversionError: the converter rejected an op; the message names the
            Keras layer.

    Example:
    >>> tflite = tflite_export.convert(model, sparsity="auto")
    >>> tflite_export.save(tflite, "model.tflite")
    """
    import keras

    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model, got {type(model).__name__}.")
    if sparsity not in SPARSITY_MODES:
        raise ValueError(
            f"sparsity must be one of {SPARSITY_MODES}, got {sparsity!r}."
        )
    if quantize not in QUANTIZE_MODES:
        raise ValueError(
            f"quantize must be one of {QUANTIZE_MODES}, got {quantize!r}."
        )
    if not model.built or not model.weights:
        raise ValueError(
            f"model {model.name!r} is not built (it has no weights): call it "
            f"on data or build it before converting."
        )
    # Quantization-aware models carry their int8 ranges (tflite_export/qat.py).
    trained_ranges = qat.check_model(model, quantize, representative_data)
    rep = None if trained_ranges else _representative_dataset(representative_data, quantize, model)
    # Recurrent layers need a static batch size for TFLite builtins (recurrent.py).
    model = with_static_batch(_with_list_inputs(strip_if_pruned(model)))
    sparse = _decide_sparsity(model, sparsity, quantize)
    data = _convert(model, quantize, rep, sparse, verbose)
    if sparse and quantize == "int8":
        problem = _xnnpack_prepare_error(data)
        if problem:
            if sparsity == "sparse":
                raise ValueError(
                    "quantize='int8' with sparsity='sparse': the XNNPACK "
                    f"delegate cannot prepare this file ({problem}). TFLite "
                    "stores int8 weights that are not 1x16 block-sparse as CSR "
                    "+ DENSIFY, which XNNPACK rejects. Prune Dense layers with "
                    "kprune.Block((16, 1)) for int8, or use sparsity='dense'."
                )
            warnings.warn(
                "int8 sparse export fails to prepare under XNNPACK "
                f"({problem}); exporting dense weights instead. Prune with "
                "kprune.Block((16, 1)) for the int8 sparse kernel.",
                stacklevel=2,
            )
            data = _convert(model, quantize, rep, False, verbose)
    return data


def save(tflite, path):
    """Writes .tflite bytes to `path` atomically (parent folders are created).

    The bytes go to a temporary file in the same folder, which then replaces
    `path` (`os.replace`): a failed write leaves an existing file unchanged.

    Args:
        tflite: the bytes returned by `convert`.
        path: destination file path.

    Returns:
        The path written, as a string.

    Example:
    >>> tflite_export.save(tflite_export.convert(model), "out/model.tflite")
    """
    if not isinstance(tflite, (bytes, bytearray, memoryview)):
        raise TypeError(f"tflite must be bytes, got {type(tflite).__name__}.")
    from tflite_export.files import atomic_write

    return atomic_write(path, bytes(tflite))


def strip_if_pruned(model):
    """Returns `model` without pruning wrappers (a new model) or `model` itself.

    Uses `kprune.core.wrapping.strip_pruning` when any layer is a `PruneWrapper`.
    """
    if not any(_is_prune_wrapper(layer) for layer in _all_layers(model)):
        return model
    try:
        from kprune.core.wrapping import strip_pruning
    except ImportError as e:
        raise ValueError(
            f"model {model.name!r} contains PruneWrapper layers but "
            f"kprune.core.wrapping.strip_pruning is not importable ({e})."
        ) from None
    return strip_pruning(model)


def _with_list_inputs(model):
    """A model whose inputs are a flat list: TF 2.21's converter fails on dict inputs.

    A functional model built with `keras.Model({"a": x, "b": y}, ...)` is
    called through a new functional model with list inputs of the same names
    (sharing the layers: nothing is copied or changed).
    """
    import keras

    try:
        structure = model.input
    except (AttributeError, ValueError):
        return model
    if not isinstance(structure, dict):
        return model
    inputs = [
        keras.Input(shape=tuple(t.shape[1:]), batch_size=t.shape[0], dtype=t.dtype,
                    name=key)
        for key, t in structure.items()
    ]
    outputs = model(dict(zip(structure.keys(), inputs)), training=False)
    return keras.Model(inputs, outputs, name=f"{model.name}_list_inputs")


def _is_prune_wrapper(layer):
    try:
        from kprune.core.wrapper import PruneWrapper

        if isinstance(layer, PruneWrapper):
            return True
    except ImportError:
        pass
    return type(layer).__name__ == "PruneWrapper"


def _all_layers(model):
    try:
        return list(model._flatten_layers(include_self=False, recursive=True))
    except Exception:  # pragma: no cover - very old Keras
        return list(getattr(model, "layers", []))


def kernel_zero_fractions(model):
    """Zero fraction of every weight tensor of rank >= 2, by weight path."""
    out = {}
    for w in model.weights:
        if len(w.shape) < 2:
            continue
        value = np.asarray(w.numpy() if hasattr(w, "numpy") else w)
        out[getattr(w, "path", w.name)] = (
            float(np.mean(value == 0)) if value.size else 0.0,
            int(value.size),
        )
    return out


def _decide_sparsity(model, sparsity, quantize):
    if sparsity == "dense":
        return False
    if sparsity == "sparse":
        if quantize in ("float16", "dynamic"):
            raise ValueError(_BROKEN[quantize])
        return True
    fractions = kernel_zero_fractions(model)
    worth_it = any(
        z >= AUTO_MIN_ZEROS and n >= AUTO_MIN_SIZE for z, n in fractions.values()
    )
    if worth_it and quantize in ("float16", "dynamic"):
        warnings.warn(
            f"sparsity='auto': exporting dense weights, because {_BROKEN[quantize]}",
            stacklevel=3,
        )
        return False
    return worth_it


_BROKEN = {
    "float16": (
        "quantize='float16' cannot be combined with sparse weights: TF 2.21 "
        "writes block-sparse float16 tensors that LiteRT evaluates to NaN. "
        "Use quantize=None or 'int8' for sparse export, or sparsity='dense'."
    ),
    "dynamic": (
        "quantize='dynamic' cannot be combined with sparse weights: the "
        "XNNPACK delegate fails to prepare CSR int8 weights and computes "
        "wrong results with 1x16 block-sparse ones (LiteRT 2.3). Use "
        "quantize='int8' with kprune.Block((16, 1)), or sparsity='dense'."
    ),
}


class CalibrationError(ValueError):
    """`representative_data` cannot calibrate the model (shape, count, NaN/inf)."""


def _input_specs(model):
    """`[(name, shape)]` of the model inputs, in `model.inputs` order."""
    specs = []
    for t in getattr(model, "inputs", None) or []:
        specs.append(((getattr(t, "name", "") or "").split(":")[0], tuple(t.shape)))
    return specs


def _check_sample(arrays, specs, where):
    """Checks one calibration sample (a list of arrays) against the model inputs."""
    if specs and len(arrays) != len(specs):
        raise CalibrationError(
            f"representative_data{where}: the model has {len(specs)} inputs "
            f"{[n for n, _ in specs]}, got {len(arrays)} arrays."
        )
    for a, (name, shape) in zip(arrays, specs):
        want = tuple(shape[1:])
        got = tuple(a.shape[1:])
        if a.ndim != len(shape) or any(w is not None and w != g for w, g in zip(want, got)):
            pretty = ", ".join("?" if d is None else str(d) for d in want)
            raise CalibrationError(
                f"representative_data{where}: input {name!r} expects samples of shape "
                f"[N, {pretty}], got an array of shape {a.shape}."
            )
    for a, (name, _) in zip(arrays, specs or [("input", ())] * len(arrays)):
        if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
            bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
            what = "all NaN/inf" if bad == a.size else f"{bad} NaN/inf values"
            raise CalibrationError(
                f"representative_data{where}: input {name!r} has {what}; calibration "
                "needs finite typical inputs (replace or drop those samples)."
            )


def _representative_dataset(data, quantize, model=None):
    if quantize != "int8":
        if data is not None:
            warnings.warn(
                f"representative_data is only used with quantize='int8' (got "
                f"quantize={quantize!r}); it is ignored.",
                stacklevel=3,
            )
        return None
    if data is None:
        raise CalibrationError(
            "quantize='int8' needs representative_data: a numpy array of "
            "typical inputs [N, ...] (about 100 samples) to calibrate the "
            "activation ranges."
        )
    specs = _input_specs(model) if model is not None else []
    if callable(data):
        def checked():
            for k, sample in enumerate(data()):
                if isinstance(sample, dict):
                    sample = [sample[n] for n, _ in specs] if all(
                        n in sample for n, _ in specs) else list(sample.values())
                arrays = [np.asarray(a) for a in (
                    sample if isinstance(sample, (list, tuple)) else [sample])]
                _check_sample(arrays, specs, f" (sample {k} of the callable)")
                yield [a.astype(np.float32) if a.dtype.kind in "fc" else a for a in arrays]

        return checked
    if isinstance(data, dict):
        names = [n for n, _ in specs]
        if sorted(data) != sorted(names):
            raise CalibrationError(
                f"representative_data: the model's inputs are {names}, got a dict with "
                f"keys {list(data)}."
            )
        data = [data[n] for n in names]
    try:
        arrays = list(data) if isinstance(data, (list, tuple)) else [data]
        arrays = [np.asarray(a, dtype=np.float32) for a in arrays]
    except (TypeError, ValueError) as e:
        raise CalibrationError(
            f"representative_data must be numeric arrays (one per model input), "
            f"got {type(data).__name__}: {e}"
        ) from None
    n = {a.shape[0] if a.ndim else 0 for a in arrays}
    if len(n) != 1 or 0 in n:
        raise CalibrationError(
            "representative_data must be non-empty arrays with the same "
            f"number of samples on axis 0, got shapes {[a.shape for a in arrays]}."
        )
    _check_sample(arrays, specs, "")
    count = min(n.pop(), MAX_CALIBRATION_SAMPLES)

    def gen():
        for i in range(count):
            yield [a[i : i + 1] for a in arrays]

    return gen


@contextlib.contextmanager
def _quiet(enabled):
    """Silences Python prints and the converter's C++ logs (fd 1 and 2)."""
    if not enabled:
        yield
        return
    import io
    import sys

    saved = []
    sink = tempfile.TemporaryFile()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd in (1, 2):
            saved.append((fd, os.dup(fd)))
            os.dup2(sink.fileno(), fd)
    except (OSError, ValueError, AttributeError):  # no real fds (e.g. IDE)
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)
        saved = []
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)
        sink.close()


def _convert(model, quantize, rep, sparse, verbose):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    optimizations = []
    if quantize is not None:
        optimizations.append(tf.lite.Optimize.DEFAULT)
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        converter.representative_dataset = rep
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    try:
        with _quiet(not verbose):
            return bytes(converter.convert())
    except CalibrationError:
        raise
    except Exception as e:  # ConverterError and friends
        if isinstance(e.__cause__ or e.__context__, CalibrationError):
            raise (e.__cause__ or e.__context__) from None
        raise _rewrite_error(e, model) from e


_OP_RE = re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op")
_LOC_RE = re.compile(r'fused\["(\w+):", "([^"@]+)@')
_LIST_RE = re.compile(r"(?:TF Select ops|Custom ops): ([\w, ]+)")


def _rewrite_error(error, model):
    text = str(error)
    ops = list(dict.fromkeys(_OP_RE.findall(text)))
    for m in _LIST_RE.findall(text):
        ops.extend(o.strip() for o in m.split(",") if o.strip() and o.strip() not in ops)
    names = {layer.name: layer for layer in _all_layers(model)}
    found = {}
    for op, scope in _LOC_RE.findall(text):
        if ops and op not in ops:
            continue
        layer = _layer_from_scope(scope, names, model.name)
        if layer is not None:
            found.setdefault(layer.name, (layer, []))
            if op not in found[layer.name][1]:
                found[layer.name][1].append(op)
    if found:
        parts = [
            f"layer {name!r} ({layer.__class__.__name__}) uses {', '.join(o)}"
            for name, (layer, o) in found.items()
        ]
        message = (
            "TFLite cannot convert the model: "
            + "; ".join(parts)
            + ", a TensorFlow op with no TFLite builtin kernel (LiteRT on phones "
            "has no TF Select ops). Rewrite that layer with supported ops."
        )
        return ConversionError(message, layers=list(found), ops=ops)
    first = next((line for line in text.splitlines() if line.strip()), text)
    what = f" (ops: {', '.join(ops)})" if ops else ""
    return ConversionError(
        f"TFLite conversion of model {model.name!r} failed{what}: {first.strip()[:300]}",
        ops=ops,
    )


def _layer_from_scope(scope, names, model_name):
    """Finds the innermost Keras layer named in an op's name scope."""
    best = None
    for part in scope.split("/")[:-1] or scope.split("/"):
        for candidate in (part, re.sub(r"_\d+$", "", part)):
            if candidate in names and candidate != model_name:
                best = names[candidate]
                break
    return best


def _xnnpack_prepare_error(data):
    """Returns the XNNPACK prepare error of `data`, or None when it prepares."""
    from tflite_export._runtime import InterpreterCrash, random_inputs, session

    try:
        with session() as s:
            model = s.load(data, "converted model")
            # One invoke too: XNNPACK can load a file with int8 CSR weights and
            # still fail to delegate their FULLY_CONNECTED at the first run.
            model.set_batch(1)
            model.run(random_inputs(model, 1))
    except (ValueError, InterpreterCrash) as e:
        return str(e).splitlines()[0][:300]
    return None
