"""Building LiteRT interpreters (ai-edge-litert) and feeding them inputs."""

from __future__ import annotations

import numpy as np

from tflite_export._source import parse_model, read_tflite


def make_interpreter(tflite, threads=1, xnnpack=True, name="tflite"):
    """Returns an allocated `ai_edge_litert.interpreter.Interpreter`.

    Args:
        tflite: .tflite bytes or path.
        threads: number of CPU threads (positive int).
        xnnpack: True runs with the default XNNPACK delegate (what phones
            run); False uses TFLite's builtin kernels only.
        name: parameter name for error messages.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    if not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}.")
    data = read_tflite(tflite, name)
    parse_model(data, name)  # clear errors for truncated/corrupt files
    resolver = (
        OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    try:
        interp = Interpreter(
            model_content=data,
            num_threads=int(threads),
            experimental_op_resolver_type=resolver,
        )
        interp.allocate_tensors()
    except (RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        where = "with XNNPACK" if xnnpack else "without XNNPACK"
        raise ValueError(f"LiteRT cannot load {name} {where}: {first}") from None
    return interp


def set_batch(interp, batch):
    """Resizes every input's first axis to `batch` and re-allocates."""
    if not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}.")
    changed = False
    for d in interp.get_input_details():
        shape = list(d["shape"])
        if shape and shape[0] != batch:
            shape[0] = int(batch)
            interp.resize_tensor_input(d["index"], shape, strict=False)
            changed = True
    if changed:
        interp.allocate_tensors()


def random_inputs(interp, batch, seed=0):
    """Random inputs for every interpreter input, batch `batch`."""
    rng = np.random.default_rng(seed)
    out = []
    for d in interp.get_input_details():
        shape = [int(batch)] + [int(s) for s in d["shape"][1:]]
        dtype = np.dtype(d["dtype"])
        if dtype.kind == "f":
            out.append(rng.standard_normal(shape).astype(dtype))
        else:
            info = np.iinfo(dtype)
            out.append(rng.integers(max(info.min, -128), min(info.max, 127), shape).astype(dtype))
    return out


def run(interp, inputs):
    """Runs the interpreter on a list of input arrays; returns output arrays."""
    details = interp.get_input_details()
    if len(inputs) != len(details):
        raise ValueError(
            f"the .tflite model has {len(details)} inputs, got {len(inputs)} arrays."
        )
    for d, x in zip(details, inputs):
        interp.set_tensor(d["index"], np.asarray(x, dtype=d["dtype"]))
    interp.invoke()
    return [interp.get_tensor(d["index"]) for d in output_details(interp)]


def output_details(interp):
    """Output details in the order of the Keras model's outputs.

    Keras 3 exports name the signature outputs `output_0`, `output_1`, ...;
    when the signature is present this order is used.
    """
    details = interp.get_output_details()
    try:
        sig = interp.get_signature_list()
        key = next(iter(sig))
        runner_out = interp._get_full_signature_list()[key]["outputs"]
        ordered = sorted(runner_out.items(), key=lambda kv: _trailing_int(kv[0]))
        by_index = {d["index"]: d for d in details}
        return [by_index[i] for _, i in ordered if i in by_index] or details
    except Exception:
        return details


def _trailing_int(name):
    digits = ""
    for c in reversed(name):
        if not c.isdigit():
            break
        digits = c + digits
    return int(digits) if digits else 0
