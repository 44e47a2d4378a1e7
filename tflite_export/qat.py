"""Export of quantization-aware (QAT) models, and of models Keras quantized.

A model from `kprune.quantization.quantize_model` (or tfmot's
`quantize_apply` through `kprune.tfmot`) holds `tf.quantization.fake_quant_*`
ops. TFLite's converter with `Optimize.DEFAULT` reads its scales and zero
points from them: the trained ranges become the int8 file's quantization
parameters, no calibration data is needed, and a weight that is 0.0 in Keras
is the int8 value 0 in the file (the weight ranges are symmetric). With
`sparsity="auto"`/`"sparse"` the Dense kernels pruned with
`kprune.Block((16, 1))` are stored 1x16 block-sparse and run TFLite's sparse
int8 FULLY_CONNECTED kernel (the rest falls back to dense, as for
post-training int8).

`convert` calls `check_model` first: a model quantized by Keras'
`model.quantize(...)` gets kprune's message (TF's converter fails on it with
"operand must be QI8"), a QAT model must be exported with `quantize="int8"`,
and its layers with weights that QAT left float are named in a warning.
"""

from __future__ import annotations

import warnings

import numpy as np

from tflite_export._runtime import session
from tflite_export._source import load_checked, schema

__all__ = ["check_model", "output_quantization", "predict"]


def check_model(model, quantize, representative_data=None):
    """Checks a model before conversion; returns True for a QAT model.

    Args:
        model: the Keras model given to `convert`.
        quantize: `convert`'s `quantize` argument.
        representative_data: `convert`'s argument (ignored for QAT models, with
            a warning).

    Returns:
        Whether `model` is quantization-aware (its int8 ranges come from
        training, so `convert` needs no calibration data).

    Raises:
        ValueError: a model quantized by Keras' `model.quantize`, or a QAT
            model exported with another `quantize` mode than `"int8"`.
    """
    # kprune.quantization imports Keras: imported here, so that importing
    # tflite_export (e.g. for `kprune export --help`) does not.
    from kprune import quantization  # noqa: PLC0415

    quantization.check_not_keras_quantized(model, "tflite_export.convert")
    if not quantization.is_quantization_aware(model):
        return False
    if quantize != "int8":
        raise ValueError(
            f"model {model.name!r} is quantization-aware (made by quantize_model/quantize_apply): "
            f"export it with quantize='int8' (got quantize={quantize!r}); its trained ranges are the "
            f"int8 file's quantization parameters.")
    for name, kind in quantization.uncovered_layers(model):
        warnings.warn(
            f"layer {name!r} ({kind}) is not quantization-aware; TFLite keeps it float32 inside the "
            f"int8 file (with QUANTIZE/DEQUANTIZE around it). Quantize or replace it for a full-integer "
            f"model.", stacklevel=3)
    if representative_data is not None:
        warnings.warn(
            "representative_data is ignored for a quantization-aware model: its int8 ranges were "
            "trained.", stacklevel=3)
    return True


def output_quantization(tflite, index=0):
    """`(scale, zero_point)` of a model output's int8 tensor, or None if it is float.

    For a file with float outputs (a DEQUANTIZE op before the output), the
    int8 tensor is the DEQUANTIZE's input.

    Args:
        tflite: .tflite bytes or path.
        index: which output of the main subgraph.

    Returns:
        `(float scale, int zero_point)` or None.

    Example:
    >>> scale, zero_point = output_quantization(tflite)
    """
    _, _, model = load_checked(tflite)
    s = schema()
    sg = model.subgraphs[0]
    out = int(sg.outputs[index])
    tensor = sg.tensors[out]
    if _scale(tensor) is None:
        for op in sg.operators or []:
            code = model.operatorCodes[op.opcodeIndex]
            builtin = max(int(code.builtinCode or 0), int(code.deprecatedBuiltinCode or 0))
            if builtin == s.BuiltinOperator.DEQUANTIZE and out in list(op.outputs):
                tensor = sg.tensors[int(op.inputs[0])]
                break
    found = _scale(tensor)
    return found


def _scale(tensor):
    q = tensor.quantization
    if q is None or q.scale is None or len(np.atleast_1d(q.scale)) != 1:
        return None
    zero = int(np.atleast_1d(q.zeroPoint)[0]) if q.zeroPoint is not None else 0
    return float(np.atleast_1d(q.scale)[0]), zero


def predict(tflite, x, batch_size=None):
    """Runs a one-input .tflite file on the samples `x` (in the LiteRT worker).

    Args:
        tflite: .tflite bytes or path.
        x: numpy array `[N, ...]`.
        batch_size: samples per invoke (default: all at once). XNNPACK
            prepares some files at batch 1 only (int8 CSR weights through
            DENSIFY: "failed to delegate FULLY_CONNECTED" at batch 1,000 with
            LiteRT 2.3); `batch_size=1` runs them as a phone does.

    Returns:
        The first output, a numpy array `[N, ...]` (float for float outputs).

    Example:
    >>> accuracy = np.mean(predict(tflite, x_test).argmax(1) == y_test)
    """
    x = np.asarray(x, np.float32)
    size = len(x) if batch_size is None else int(batch_size)
    outputs = []
    with session() as s:
        model = s.load(tflite)
        model.set_batch(size)
        for start in range(0, len(x), size):
            chunk = x[start:start + size]
            if len(chunk) != size:
                model.set_batch(len(chunk))
            outputs.append(np.asarray(model.run([chunk])[0]))
    return np.concatenate(outputs)
