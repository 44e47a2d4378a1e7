"""Does the .tflite file compute what the Keras model computes?"""

from __future__ import annotations

import numpy as np

from tflite_export._runtime import random_inputs, session
from tflite_export.recurrent import recurrent_layers

#: Documented tolerances for `verify`'s max abs diff, relative to `scale`,
#: the largest absolute Keras output over the samples.
#: float32: `1e-5 * max(1, scale)`: absolute (1e-5) while the outputs stay
#: within 1, relative above (float32 rounding grows with the magnitude: logits
#: of 44 differ by ~1e-5 after a correct conversion).
#: Quantized modes: `tol * max(scale, 1e-6)`.
#: Measured on 90%-sparse MLPs with real-range inputs: float32 <= 3e-8,
#: float16 ~ 5e-4 x scale, dynamic ~ 1e-2 x scale, int8 ~ 1.5e-2 x scale.
TOLERANCES = {None: 1e-5, "float16": 1e-2, "dynamic": 5e-2, "int8": 1e-1}


def tolerance(quantize=None, scale=1.0):
    """The max abs diff `verify` accepts for a quantization mode.

    Args:
        quantize: `None`, `"float16"`, `"dynamic"` or `"int8"`.
        scale: largest absolute Keras output over the verified samples (the
            first value `compare_outputs` returns).

    Returns:
        A float: `1e-5 * max(1, scale)` for float32 (`1e-5` while the
        outputs stay within 1), `TOLERANCES[quantize] * scale` otherwise.

    Example:
    >>> tolerance("int8", scale=2.0)
    0.2
    >>> tolerance(None, scale=44.0)   # logits up to 44
    0.00044
    """
    if quantize not in TOLERANCES:
        raise ValueError(
            f"quantize must be one of {tuple(TOLERANCES)}, got {quantize!r}."
        )
    if quantize is None:
        return TOLERANCES[None] * max(1.0, float(scale))
    return TOLERANCES[quantize] * max(float(scale), 1e-6)


def verify(keras_model, tflite, samples=None, num_samples=8, xnnpack=True, seed=0):
    """Max absolute difference between a Keras model and its .tflite export.

    The file is validated first (`inspect`'s checks) and run in the LiteRT
    worker process: a LiteRT crash raises `InterpreterCrash`, naming the
    file, instead of killing the caller.

    Args:
        keras_model: the Keras model (pruned, stripped or plain).
        tflite: .tflite bytes or path.
        samples: inputs: a numpy array `[N, ...]` (one-input models), a list
            or tuple of arrays (one per model input, in `keras_model.inputs`
            order), or a dict `{input name: array}`. None draws
            `num_samples` standard-normal inputs. Pass real samples for
            quantized models, whose ranges were calibrated on real data.
        num_samples: number of random samples when `samples` is None.
        xnnpack: run the .tflite file with the XNNPACK delegate (default, as
            on phones) or with TFLite's builtin kernels only.
        seed: seed for random samples.

    Returns:
        A float: the max abs diff over all outputs and samples. Compare it to
        `tolerance(quantize, scale)` where `scale` is the largest absolute
        Keras output: `compare_outputs` returns both.

    Raises:
        TypeError: `keras_model` is not a Keras model, or `samples` is of an
            unsupported type.
        ValueError: inputs that do not match the model (count, names,
            shapes, sample counts), a corrupt file, or one LiteRT cannot load.
        InterpreterCrash: LiteRT crashed on the file.

    Example:
    >>> scale, diff = tflite_export.compare_outputs(model, tflite, samples=x_test[:32])
    >>> assert diff <= tflite_export.tolerance(None, scale)
    >>> tflite_export.verify(small_model, tflite_small) <= 1e-5   # outputs within 1
    True
    >>> tflite_export.verify(two_input_model, tflite2,
    ...                      samples={"image": x, "meta": m})
    """
    _, diff = compare_outputs(keras_model, tflite, samples, num_samples, xnnpack, seed)
    return diff


def _keras_input_names(keras_model):
    names = []
    for t in getattr(keras_model, "inputs", None) or []:
        name = getattr(t, "name", "") or ""
        names.append(name.split(":")[0])
    return names


def _as_list(samples, names, count):
    """Samples (array, list/tuple or dict) -> list in Keras input order."""
    if isinstance(samples, dict):
        missing = [n for n in names if n not in samples]
        extra = [k for k in samples if k not in names]
        if missing or extra or len(names) != count:
            raise ValueError(
                f"samples: the model's inputs are {names}, got a dict with keys "
                f"{list(samples)}"
                + (f" (missing {missing})" if missing else "")
                + (f" (unknown {extra})" if extra else "") + "."
            )
        return [np.asarray(samples[n]) for n in names]
    if isinstance(samples, (list, tuple)):
        return [np.asarray(x) for x in samples]
    if not isinstance(samples, (str, bytes)) and (
            isinstance(samples, np.ndarray) or hasattr(samples, "__array__")):
        return [np.asarray(samples)]
    raise TypeError(
        "samples must be a numpy array, a list/tuple of arrays (one per input) or a "
        f"dict {{input name: array}}, got {type(samples).__name__}."
    )


def _feed(keras_model, inputs, names):
    """Inputs in the structure the Keras model was built with."""
    structure = None
    try:
        structure = keras_model.input
    except (AttributeError, ValueError):
        structure = None
    if isinstance(structure, dict):
        by_name = dict(zip(names, inputs))
        return {k: by_name.get(getattr(v, "name", k), by_name.get(k)) for k, v in structure.items()}
    return inputs[0] if len(inputs) == 1 else list(inputs)


def compare_outputs(keras_model, tflite, samples=None, num_samples=8, xnnpack=True, seed=0):
    """Max |Keras output| and max |Keras - TFLite| over the samples.

    Args:
        keras_model, tflite, samples, num_samples, xnnpack, seed: as in
            `verify`. Real samples (e.g. test or calibration inputs) give
            the outputs' real range; random normal ones may not.

    Returns:
        `(scale, max_abs_diff)`; pass `scale` to `tolerance(quantize, scale)`.

    Example:
    >>> scale, diff = compare_outputs(model, tflite, samples=x[:32])
    >>> passed = diff <= tolerance(None, scale)
    """
    import keras

    if not isinstance(keras_model, keras.Model):
        raise TypeError(
            f"keras_model must be a keras.Model, got {type(keras_model).__name__}."
        )
    names = _keras_input_names(keras_model)
    with session() as s:
        m = s.load(tflite, xnnpack=xnnpack)
        count = len(m.inputs)
        # TFLite input i -> Keras input position, by signature name.
        sig = [n for _, _, n in m.inputs]
        order = list(range(count))
        if len(names) == count and sorted(sig) == sorted(names):
            order = [names.index(n) for n in sig]
        if samples is None:
            if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
                raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}.")
            drawn = random_inputs(m, int(num_samples), seed)
            inputs = [None] * count
            for i, k in enumerate(order):
                inputs[k] = drawn[i]
        else:
            inputs = _as_list(samples, names, count)
            if len(inputs) != count:
                raise ValueError(
                    f"samples: the model has {count} inputs, got {len(inputs)} arrays."
                )
        for i, k in enumerate(order):
            shape = m.inputs[i][0]
            x = inputs[k]
            label = f"input {names[k]!r}" if k < len(names) else f"input {k}"
            if x.ndim != len(shape) or tuple(x.shape[1:]) != tuple(shape[1:]):
                raise ValueError(
                    f"samples: {label}: expected shape [N, "
                    f"{', '.join(str(int(v)) for v in shape[1:])}], got {x.shape}."
                )
        sizes = {x.shape[0] for x in inputs}
        if len(sizes) != 1 or 0 in sizes:
            raise ValueError(
                f"samples: every input needs the same number (>= 1) of samples on "
                f"axis 0, got {[x.shape[0] for x in inputs]}."
            )
        n = sizes.pop()
        if recurrent_layers(keras_model) and all(s[0] == 1 for s, _, _ in m.inputs):
            # Exported with a static batch of 1 (recurrent.py): one sample per call.
            runs = [m.run([inputs[k][j:j + 1] for k in order]) for j in range(n)]
            got = [np.concatenate(parts, axis=0) for parts in zip(*runs)]
        else:
            m.set_batch(n)
            got = m.run([inputs[k] for k in order])
    want = keras_model(_feed(keras_model, inputs, names), training=False)
    if isinstance(want, dict):
        want = list(want.values())
    want = [np.asarray(w) for w in (want if isinstance(want, (list, tuple)) else [want])]
    if len(want) != len(got):
        raise ValueError(
            f"the Keras model has {len(want)} outputs but the .tflite file has {len(got)}."
        )
    diff = 0.0
    scale = 0.0
    for w, g in zip(want, got):
        w = w.astype(np.float64)
        g = np.asarray(g, dtype=np.float64)
        if w.shape != g.shape:
            raise ValueError(
                f"output shape mismatch: Keras {w.shape}, TFLite {g.shape}."
            )
        if not np.all(np.isfinite(g)):
            return float(np.max(np.abs(w))), float("inf")
        diff = max(diff, float(np.max(np.abs(w - g))) if w.size else 0.0)
        scale = max(scale, float(np.max(np.abs(w))) if w.size else 0.0)
    return scale, diff
