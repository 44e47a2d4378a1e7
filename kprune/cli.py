"""The `kprune` command line: `kprune demo` and `kprune export`."""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["main"]


def _demo(args):
    from kprune.demo import run_demo

    if not 0.0 <= args.sparsity < 1.0:
        print(f"kprune demo: --sparsity must be in [0, 1), got {args.sparsity}", file=sys.stderr)
        return 2
    if args.quick:
        args.epochs, args.prune_epochs = 1, 1
    run_demo(
        sparsity=args.sparsity,
        epochs=args.epochs,
        prune_epochs=args.prune_epochs,
        online=args.online,
        seed=args.seed,
    )
    return 0


def main(argv=None):
    """Entry point of the `kprune` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "export":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            from tflite_export.cli import export_main
        except ImportError as e:  # pragma: no cover - tflite_export ships with kprune
            print(f"kprune export: tflite_export is not available ({e})", file=sys.stderr)
            return 2
        return export_main(argv[1:])

    parser = argparse.ArgumentParser(prog="kprune", description="Pruning toolkit for Keras 3.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train, prune to 80%% during fit, strip, compare (offline MNIST)")
    demo.add_argument("--sparsity", type=float, default=0.8, help="target sparsity (default 0.8)")
    demo.add_argument("--epochs", type=int, default=4, help="dense training epochs (default 4)")
    demo.add_argument("--prune-epochs", type=int, default=None,
                      help="pruning epochs (default: the demo recipe's, 8)")
    demo.add_argument("--online", action="store_true", help="use keras.datasets MNIST if it downloads")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quick", action="store_true", help="one epoch of each (for tests)")
    sub.add_parser("export", help="export a .keras model to TFLite (see `kprune export --help`)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.command == "demo":
        return _demo(args)
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
