"""tflite_export: pruned Keras 3 models -> .tflite files that phones run fast.

* `convert(model, sparsity, quantize, representative_data)` -> .tflite bytes;
  `save(tflite, path)` writes them.
* `inspect(tflite)`: per-op and per-tensor report (dense / CSR / block,
  which FullyConnected ops take the sparse kernel, what goes through DENSIFY).
* `verify(keras_model, tflite)`: max abs diff against Keras
  (`tolerance(quantize)` gives the accepted value).
* `benchmark(tflite)` and `compare(a, b)`: median/p90 latency with the LiteRT
  interpreter, two files interleaved side by side.
* `xnnpack_sparse_report(keras_model)`: XNNPACK sparse-inference conditions,
  layer by layer.

The `kprune export` command (`tflite_export.cli.export_main`) drives it.
"""

from tflite_export._runtime import InterpreterCrash
from tflite_export.benchmark import BenchmarkResult, Comparison, benchmark, compare
from tflite_export.convert import CalibrationError, ConversionError, convert, save
from tflite_export.inspect import TFLiteReport, inspect
from tflite_export.verify import TOLERANCES, tolerance, verify
from tflite_export.xnnpack import XnnpackSparseReport, xnnpack_sparse_report

__all__ = [
    "convert",
    "save",
    "inspect",
    "verify",
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
