"""The `kprune` command line: `kprune demo`, `kprune export`, `kprune report`.

TensorFlow's start-up lines (oneDNN, CUDA stubs, absl) are kept off stderr
(`kprune.utils.quiet`); `--verbose` shows them and TensorFlow's logs.
Exit status: 0 success, 2 bad arguments or bad input file (one line on
stderr, never a traceback), 1 a failed export/check.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

__all__ = ["main"]


def _demo(args):
    from kprune.cli.demo import run_demo

    if args.sparsity is not None and not 0.0 <= args.sparsity < 1.0:
        print(f"kprune demo: --sparsity must be in [0, 1), got {args.sparsity}", file=sys.stderr)
        return 2
    if args.quick:
        args.epochs, args.prune_epochs = 1, 1
    try:
        run_demo(sparsity=args.sparsity, epochs=args.epochs, prune_epochs=args.prune_epochs,
                 online=args.online, seed=args.seed, export=not args.no_export,
                 export_dir=args.export_dir, runs=args.runs, unstructured=args.unstructured)
    except ValueError as e:  # e.g. an unwritable --export-dir, checked before training
        print(f"kprune demo: error: {e}", file=sys.stderr)
        return 2
    return 0


def _report(args):
    from tflite_export.files import InputFileError

    from kprune.cli.file_report import model_report

    try:
        if args.plot:
            from tflite_export.files import check_output

            if not args.plot.lower().endswith(".png"):
                raise InputFileError(f"--plot {args.plot!r}: expected a .png file name")
            folder = os.path.dirname(os.path.abspath(args.plot))
            if not os.path.isdir(folder):
                raise InputFileError(
                    f"--plot {args.plot!r}: the folder {folder!r} does not exist; create it "
                    f"first (kprune report writes only the picture, no folders)")
            check_output(args.plot, [args.model])
        report = model_report(args.model)
        if args.plot:
            report.plot(args.plot)
    except (InputFileError, FileNotFoundError, ValueError, TypeError, OSError) as e:
        text = str(e).strip().splitlines()
        print(f"kprune report: error: {(text[0] if text else type(e).__name__)[:400]}",
              file=sys.stderr)
        return 2
    except Exception as e:  # a bug: still one line, no traceback
        print(f"kprune report: error: {type(e).__name__}: {str(e)[:300]}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.as_json(), indent=1))
    else:
        print(report)
        if args.plot:
            print(f"plot: {args.plot}")
    if args.target:  # kprune.deploy: what runs sparse on the target, measured per layer
        from kprune.deploy.patterns import target_report

        print("\n" + target_report(args.model, args.target))
    return 0


def _parser():
    parser = argparse.ArgumentParser(prog="kprune", description="Pruning toolkit for Keras 3.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="train, prune during fit, strip, export dense and sparse .tflite, compare "
        "(offline MNIST)")
    demo.add_argument("--sparsity", type=float, default=None,
                      help="target sparsity (default 0.5 of fc1's 4x1 blocks; 0.8 with --unstructured)")
    demo.add_argument("--epochs", type=int, default=4, help="dense training epochs (default 4)")
    demo.add_argument("--prune-epochs", type=int, default=None,
                      help="pruning epochs (default: the demo recipe's, 12)")
    demo.add_argument("--online", action="store_true", help="use keras.datasets MNIST if it downloads")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quick", action="store_true", help="one epoch of each (for tests)")
    demo.add_argument("--no-export", action="store_true",
                      help="skip the .tflite export, verification and latency")
    demo.add_argument("--export-dir", default="kprune-demo",
                      help="folder for dense.keras, pruned.keras and the .tflite files (default "
                      "./kprune-demo; only those file names are overwritten)")
    demo.add_argument("--unstructured", action="store_true",
                      help="the unstructured recipe: a smaller file at dense speed")
    demo.add_argument("--runs", type=int, default=50,
                      help="timed runs per repetition for the latency comparison")
    demo.add_argument("--verbose", action="store_true", help="show TensorFlow's logs")
    sub.add_parser("export", help="export a .keras model to TFLite (see `kprune export --help`)")
    report = sub.add_parser(
        "report", help="per-layer weights, zeros, sparsity pattern, FLOPs of a .keras or "
        ".tflite file")
    report.add_argument("model", help=".keras, .h5 or .tflite file")
    report.add_argument("--target", choices=["litert-xnnpack"], default=None,
                        help="also measure per layer what runs sparse on this runtime (slow: converts "
                        "and times each Dense layer)")
    report.add_argument("--json", action="store_true",
                        help="print JSON (schema: kprune.cli.file_report.REPORT_SCHEMA)")
    report.add_argument("--plot", metavar="FILE.png",
                        help="write a per-layer sparsity and size picture")
    report.add_argument("--verbose", action="store_true", help="show TensorFlow's logs")
    return parser


def main(argv=None):
    """Entry point of the `kprune` console script.

    Args:
        argv: arguments after `kprune` (default: `sys.argv[1:]`).

    Returns:
        The exit status: 0 success, 2 bad arguments or input, 1 failure.

    Example:
    >>> main(["report", "model.tflite", "--json"])
    0
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "2")
    if argv and argv[0] == "export":
        try:
            from tflite_export.cli import export_main
        except ImportError as e:  # pragma: no cover - tflite_export ships with kprune
            print(f"kprune export: tflite_export is not available ({e})", file=sys.stderr)
            return 2
        return export_main(argv[1:])
    args = _parser().parse_args(argv)
    from kprune.utils.quiet import quiet_import, set_verbose, startup_lines

    quiet_import(verbose=verbose or None)
    set_verbose(verbose)
    if verbose:
        for line in startup_lines():
            print(line, file=sys.stderr)
    import kprune

    kprune.import_api()  # deferred until here: `kprune --help` imports no Keras
    if args.command == "demo":
        return _demo(args)
    if args.command == "report":
        return _report(args)
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
