"""Does the .tflite file compute what the Keras model computes?"""

from __future__ import annotations

import numpy as np

from tflite_export._runtime import make_interpreter, random_inputs, run, set_batch

#: Documented tolerances for `verify`'s max abs diff.
#: float32: absolute. Quantized modes: relative to the largest absolute Keras
#: output over the samples (`scale`), i.e. `tol * max(scale, 1e-6)`.
#: Measured on 90%-sparse MLPs with real-range inputs: float32 <= 3e-8,
#: float16 ~ 5e-4 x scale, dynamic ~ 1e-2 x scale, int8 ~ 1.5e-2 x scale.
TOLERANCES = {None: 1e-5, "float16": 1e-2, "dynamic": 5e-2, "int8": 1e-1}


def tolerance(quantize=None, scale=1.0):
    """The max abs diff `verify` accepts for a quantization mode.

    Args:
        quantize: `None`, `"float16"`, `"dynamic"` or `"int8"`.
        scale: largest absolute Keras output (ignored for float32).

    Returns:
        A float: `1e-5` for float32, `TOLERANCES[quantize] * scale` otherwise.

    Example:
    >>> tolerance("int8", scale=2.0)
    0.2
    """
    if quantize not in TOLERANCES:
        raise ValueError(
            f"quantize must be one of {tuple(TOLERANCES)}, got {quantize!r}."
        )
    if quantize is None:
        return TOLERANCES[None]
    return TOLERANCES[quantize] * max(float(scale), 1e-6)


def verify(keras_model, tflite, samples=None, num_samples=8, xnnpack=True, seed=0):
    """Max absolute difference between a Keras model and its .tflite export.

    Args:
        keras_model: the Keras model (pruned, stripped or plain).
        tflite: .tflite bytes or path.
        samples: inputs: a numpy array `[N, ...]` (one input) or a list of
            arrays (one per input). None draws `num_samples` standard-normal
            inputs. Pass real samples for quantized models, whose ranges were
            calibrated on real data.
        num_samples: number of random samples when `samples` is None.
        xnnpack: run the .tflite file with the XNNPACK delegate (default, as
            on phones) or with TFLite's builtin kernels only.
        seed: seed for random samples.

    Returns:
        A float: the max abs diff over all outputs and samples. Compare it to
        `tolerance(quantize, scale)`: 1e-5 for float32 exports.

    Raises:
        ValueError: inputs that do not match the model, or a file LiteRT
            cannot load.

    Example:
    >>> diff = tflite_export.verify(model, tflite)
    >>> assert diff <= tflite_export.tolerance(None)
    """
    _, diff = compare_outputs(keras_model, tflite, samples, num_samples, xnnpack, seed)
    return diff


def compare_outputs(keras_model, tflite, samples=None, num_samples=8, xnnpack=True, seed=0):
    """Returns `(scale, max_abs_diff)`: `scale` is max |Keras output|."""
    import keras

    if not isinstance(keras_model, keras.Model):
        raise TypeError(
            f"keras_model must be a keras.Model, got {type(keras_model).__name__}."
        )
    interp = make_interpreter(tflite, xnnpack=xnnpack)
    details = interp.get_input_details()
    if samples is None:
        inputs = random_inputs(interp, num_samples, seed)
    else:
        inputs = list(samples) if isinstance(samples, (list, tuple)) else [samples]
        inputs = [np.asarray(x) for x in inputs]
        if len(inputs) != len(details):
            raise ValueError(
                f"samples: the model has {len(details)} inputs, got {len(inputs)} arrays."
            )
        for d, x in zip(details, inputs):
            if tuple(x.shape[1:]) != tuple(int(s) for s in d["shape"][1:]):
                raise ValueError(
                    f"samples: expected inputs of shape [N, "
                    f"{', '.join(str(int(s)) for s in d['shape'][1:])}], got {x.shape}."
                )
    n = inputs[0].shape[0]
    set_batch(interp, n)
    got = run(interp, inputs)
    feed = inputs[0] if len(inputs) == 1 else inputs
    want = keras_model(feed, training=False)
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
