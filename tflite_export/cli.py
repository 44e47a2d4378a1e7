"""`kprune export`: Keras file -> .tflite, with one summary table.

    kprune export model.keras -o model.tflite [--sparse|--dense|--auto]
        [--quantize dynamic|float16|int8 --calibration data.npz]
        [--verify] [--benchmark] [--verbose]

The table compares the dense float32 export with the exported file: size,
gzip size, sparse tensors, max diff against Keras (`--verify`) and latency
(`--benchmark`, batch 1, 1 thread, XNNPACK on, interleaved repetitions).

Guarantees: the model loads with `safe_mode=True` (no code runs from the
file); the output is written atomically (temporary file + rename) and never
over an input file; missing, empty, truncated and non-zip `.keras` files get
their own message. Exit status 0 on success, 2 for bad arguments or bad
input files, 1 when the export or a check fails; errors are one line on
stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tflite_export.files import InputFileError  # noqa: E402  (no TensorFlow import)


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        raise _UsageError(message)


def _parser():
    p = _Parser(
        prog="kprune export",
        description="Export a Keras model (pruned or not) to a .tflite file.",
    )
    p.add_argument("model", help="Keras model file (.keras)")
    p.add_argument("-o", "--output", help="output .tflite path (default: MODEL.tflite)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--sparse", dest="sparsity", action="store_const", const="sparse",
                      help="store sparse weights sparse (TFLite EXPERIMENTAL_SPARSITY)")
    mode.add_argument("--dense", dest="sparsity", action="store_const", const="dense",
                      help="store every weight dense")
    mode.add_argument("--auto", dest="sparsity", action="store_const", const="auto",
                      help="sparse when some kernel has >= 50%% zeros (default)")
    p.add_argument("--quantize", choices=["dynamic", "float16", "int8"], default=None,
                   help="post-training quantization")
    p.add_argument("--calibration", help=".npz of typical inputs (key 'x' or the first "
                   "array): calibrates --quantize int8, and --verify runs on its first 32 "
                   "samples (default: random normal inputs)")
    p.add_argument("--verify", action="store_true", help="check outputs against Keras")
    p.add_argument("--benchmark", action="store_true",
                   help="time the dense and exported files side by side")
    p.add_argument("--runs", type=int, default=50,
                   help="timed runs per repetition for --benchmark")
    p.add_argument("--repeats", type=int, default=5,
                   help="interleaved repetitions for --benchmark (median, min-max)")
    p.add_argument("--verbose", action="store_true",
                   help="show TensorFlow's and the converter's logs")
    p.set_defaults(sparsity="auto")
    return p


def export_main(argv=None):
    """Runs `kprune export` with the arguments `argv`; returns the exit status.

    Args:
        argv: list of command-line arguments after `export` (default:
            `sys.argv[1:]`).

    Returns:
        0 on success, 1 when the export or a check fails, 2 for bad arguments.
        Errors print one line, `kprune export: error: ...`, to stderr.

    Example:
    >>> export_main(["model.keras", "-o", "model.tflite", "--sparse", "--verify"])
    0
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parser().parse_args(argv)
    except _UsageError as e:
        return _fail(str(e), 2)
    except SystemExit as e:  # --help
        return int(e.code or 0)
    from kprune.utils.quiet import quiet_import, set_verbose, startup_lines

    quiet_import(verbose=args.verbose or None)
    set_verbose(args.verbose)
    if args.verbose:
        for line in startup_lines():
            print(line, file=sys.stderr)
    try:
        return _export(args)
    except (_UsageError, InputFileError) as e:
        return _fail(str(e), 2)
    except (ValueError, TypeError, OSError, RuntimeError, MemoryError) as e:
        from tflite_export.convert import CalibrationError

        return _fail(_one_line(e), 2 if isinstance(e, CalibrationError) else 1)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as e:  # a bug: still one line, no traceback
        return _fail(f"{type(e).__name__}: {_one_line(e)}", 1)


def _fail(message, code):
    print(f"kprune export: error: {message}", file=sys.stderr)
    return code


def _one_line(error):
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:400]


def _load_calibration(path):
    import numpy as np

    if not os.path.exists(path):
        raise _UsageError(f"--calibration: no such file: {path!r}")
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = list(data.keys()) if hasattr(data, "keys") else []
            if not keys:
                raise _UsageError(f"--calibration: {path!r} holds no arrays")
            array = data["x"] if "x" in keys else data[keys[0]]
    except _UsageError:
        raise
    except Exception as e:
        raise _UsageError(f"--calibration: cannot read {path!r} as .npz: {_one_line(e)}")
    return np.asarray(array, dtype=np.float32)


def _export(args):
    import numpy as np

    from kprune.utils.table import format_table
    from tflite_export.benchmark import compare
    from tflite_export.convert import convert
    from tflite_export.inspection import inspect
    from tflite_export.verify import compare_outputs, tolerance

    if args.quantize == "int8" and not args.calibration:
        raise _UsageError("--quantize int8 needs --calibration data.npz (typical inputs)")
    from tflite_export.files import atomic_write, check_keras_file, check_output, load_keras_file

    if args.runs < 1:
        raise _UsageError(f"--runs must be positive, got {args.runs}")
    if args.repeats < 1:
        raise _UsageError(f"--repeats must be positive, got {args.repeats}")
    check_keras_file(args.model)
    output = args.output or os.path.splitext(args.model)[0] + ".tflite"
    check_output(output, [args.model, args.calibration])
    calibration = _load_calibration(args.calibration) if args.calibration else None
    model = load_keras_file(args.model)

    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # --calibration calibrates int8 ranges, and is --verify's input data in
        # every mode: only int8 conversion takes it.
        exported = convert(model, sparsity=args.sparsity, quantize=args.quantize,
                           representative_data=calibration if args.quantize == "int8" else None,
                           verbose=args.verbose)
        same_as_dense = args.sparsity == "dense" and args.quantize is None
        dense = exported if same_as_dense else convert(model, sparsity="dense",
                                                       verbose=args.verbose)
    atomic_write(output, exported)

    rows = []
    results = {}
    files = [("dense float32", dense, None)]
    if not same_as_dense:
        files.append((f"exported ({args.sparsity}, {args.quantize or 'float32'})",
                      exported, args.quantize))
    bench = None
    if args.benchmark and len(files) == 2:
        bench = compare(dense, exported, labels=("dense", "exported"), runs=args.runs,
                        repeats=args.repeats)
    elif args.benchmark:
        bench = compare(dense, dense, labels=("dense", "exported"), runs=args.runs,
                        repeats=args.repeats)
    for i, (label, data, quantize) in enumerate(files):
        report = inspect(data)
        sparse = report.sparse_tensors
        cells = [
            label,
            f"{len(data):,}",
            f"{len(gzip.compress(data)):,}",
            f"{len(data) / len(dense):.3f}",
            f"{len(sparse)} ({len(report.sparse_kernel_ops)} fast FC, "
            f"{len(report.densified_tensors)} DENSIFY)" if sparse else "0",
        ]
        if args.verify:
            samples = calibration[:32] if calibration is not None else None
            scale, diff = compare_outputs(model, data, samples=samples)
            tol = tolerance(quantize, scale)
            results[label] = (diff, tol)
            cells.append(f"{diff:.2e} (tol {tol:.0e})")
        if bench is not None:
            r = bench.a if i == 0 else bench.b
            cells.append(f"{r.median_ms:.3f} ({r.min_ms:.3f}-{r.max_ms:.3f})")
        rows.append(cells)
    header = ["file", "bytes", "gzip bytes", "x dense", "sparse tensors"]
    if args.verify:
        header.append("max |diff|")
    if bench is not None:
        header.append("median ms (min-max)")
    print(f"{args.model} -> {output}")
    print(format_table(header, rows))
    if args.verify:
        inputs = (f"the first {min(len(calibration), 32)} samples of {args.calibration}"
                  if calibration is not None else
                  "8 random normal samples (pass --calibration data.npz to verify on real inputs)")
        print(f"verify: {inputs}; tolerance 1e-5 x max(1, max |Keras output|) for float32, "
              "relative to max |Keras output| when quantized")
    elif calibration is not None and args.quantize != "int8":
        print(f"note: --calibration {args.calibration} was not used (it calibrates "
              "--quantize int8 and is --verify's input data; neither was asked)")
    if bench is not None and len(files) == 2:
        print(f"speed-up vs dense: {bench.speedup:.2f}x (min-max {bench.speedup_min:.2f}-"
              f"{bench.speedup_max:.2f}x) [{bench.a.settings}]")
    for w in caught:
        if issubclass(w.category, UserWarning) and "unclosed" not in str(w.message):
            print(f"note: {w.message}")
    for label, (diff, tol) in results.items():
        if not np.isfinite(diff) or diff > tol:
            return _fail(f"verify failed for {label}: max |diff| {diff:.3g} > tolerance {tol:.3g}", 1)
    return 0
