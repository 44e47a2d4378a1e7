"""tflite_export: pruned Keras 3 models -> .tflite files that phones run fast.

* `convert(model, sparsity, quantize, representative_data)` -> .tflite bytes;
  `save(tflite, path)` writes them.
* `inspect(tflite)`: per-op and per-tensor report (dense / CSR / block,
  which FullyConnected ops take the sparse kernel, what goes through DENSIFY),
  after checking every index and sparse array of the file.
* `verify(keras_model, tflite)`: max abs diff against Keras;
  `compare_outputs` also returns the largest Keras output, `scale`, and
  `tolerance(quantize, scale)` gives the accepted value; multi-input samples
  as a list or dict.
* `benchmark(tflite)` and `compare(a, b)`: median latency of interleaved
  repetitions with its min-max, with the LiteRT interpreter.

LiteRT never runs in the caller's process: files are validated, then run in
a worker process, so a native crash raises `InterpreterCrash` naming the file.
`tflite_export.files` (checked inputs, atomic outputs), `kprune.utils.quiet`
(TensorFlow start-up without log noise) and `kprune.utils.table` (the text
table printer) serve the command line.
* `xnnpack_sparse_report(keras_model)`: XNNPACK sparse-inference conditions,
  layer by layer.

The `kprune export` command (`tflite_export.cli.export_main`) drives it.
"""

from kprune import compat as _compat
from tflite_export._runtime import InterpreterCrash
from tflite_export.benchmark import BenchmarkResult, Comparison, benchmark, compare
from tflite_export.convert import CalibrationError, ConversionError, convert, save
from tflite_export.inspection import TFLiteReport, inspect
from tflite_export.verify import TOLERANCES, compare_outputs, tolerance, verify
from tflite_export.xnnpack import XnnpackSparseReport, xnnpack_sparse_report

__all__ = [
    "convert",
    "save",
    "inspect",
    "verify",
    "compare_outputs",
    "tolerance",
    "benchmark",
    "compare",
    "xnnpack_sparse_report",
    "CalibrationError",
    "ConversionError",
    "InterpreterCrash",
    "TFLiteReport",
    "BenchmarkResult",
    "Comparison",
    "XnnpackSparseReport",
    "TOLERANCES",
]


_compat.install()


def __getattr__(name):
    """Old module paths (`tflite_export.quiet`): see `kprune.compat`."""
    module = _compat.moved_attribute(__name__, name)
    if module is None:
        raise AttributeError(f"module 'tflite_export' has no attribute {name!r}")
    return module
