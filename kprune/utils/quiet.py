"""Quiet TensorFlow start-up: no oneDNN / CUDA-stub / absl lines on stderr.

TensorFlow's C++ runtime writes a handful of INFO/WARNING lines to stderr
while it loads (`oneDNN custom operations are on`, `Could not find cuda
drivers`, `All log messages before absl::InitializeLog() ...`,
`cpu_feature_guard`, `failed call to cuInit`). They are printed before
`TF_CPP_MIN_LOG_LEVEL` takes effect, so the environment variable alone does
not hide them. `quiet_import()` imports TensorFlow with file descriptor 2
pointed at a temporary file, then restores it and writes back every line
that is not one of those start-up lines: real errors still show.

The `kprune` command line and `import kprune` call it (unless TensorFlow is
already imported, or `KPRUNE_VERBOSE=1`); `kprune ... --verbose` replays the
captured lines (`startup_lines()`).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

__all__ = ["quiet_import", "startup_lines", "is_startup_noise", "set_verbose"]

_NOISE = re.compile(
    r"(All log messages before absl::InitializeLog\(\) is called"
    r"|oneDNN custom operations are on"
    r"|cudart_stub\.cc|Could not find cuda drivers"
    r"|cpu_feature_guard\.cc|This TensorFlow binary is optimized to use available CPU"
    r"|To enable the following instructions:"
    r"|failed call to cuInit|cuda_platform\.cc|cuda_executor\.cc|cuda_diagnostics"
    r"|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|computation placer already registered"
    r"|TF-TRT Warning|Could not find TensorRT"
    r"|Created TensorFlow Lite XNNPACK delegate)"
)

_CAPTURED = []


def is_startup_noise(line):
    """True for one of TensorFlow's start-up log lines (see the module doc)."""
    return bool(_NOISE.search(line))


def startup_lines():
    """The start-up lines `quiet_import` kept off stderr, in order."""
    return list(_CAPTURED)


def set_verbose(verbose):
    """Turns TensorFlow's C++ logging back on (True) or down to errors (False)."""
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0" if verbose else "2"
    if verbose:
        os.environ["TFLITE_EXPORT_WORKER_STDERR"] = "inherit"
    else:
        os.environ.pop("TFLITE_EXPORT_WORKER_STDERR", None)
    if "tensorflow" in sys.modules:
        try:
            import absl.logging

            absl.logging.set_verbosity(absl.logging.INFO if verbose else absl.logging.ERROR)
        except ImportError:  # pragma: no cover
            pass
        sys.modules["tensorflow"].get_logger().setLevel("INFO" if verbose else "ERROR")


def quiet_import(verbose=None):
    """Imports TensorFlow (and initialises its devices) without start-up noise.

    Args:
        verbose: True imports normally (all logs). None reads the
            `KPRUNE_VERBOSE` environment variable ("1" = verbose).

    Returns:
        The list of start-up lines kept off stderr (empty when TensorFlow
        was already imported or `verbose`).

    Example:
    >>> from kprune.utils.quiet import quiet_import
    >>> quiet_import()   # then `import keras` prints nothing on stderr
    []
    """
    if verbose is None:
        verbose = os.environ.get("KPRUNE_VERBOSE", "") not in ("", "0")
    if "tensorflow" in sys.modules:
        return []
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "2")
    if verbose:
        import tensorflow  # noqa: F401

        return []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real stderr (IDE, pythonw)
        import tensorflow  # noqa: F401

        return []
    sink = tempfile.TemporaryFile()
    lines = []
    try:
        os.dup2(sink.fileno(), 2)
        try:
            import tensorflow as tf

            try:  # device initialisation prints the cuInit lines
                tf.config.list_physical_devices()
            except Exception:  # pragma: no cover - no device support
                pass
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        text = sink.read().decode("utf-8", "replace")
        lines = text.splitlines()
    finally:
        sink.close()
    kept = [l for l in lines if is_startup_noise(l) or _continuation(l)]
    _CAPTURED.extend(kept)
    for line in lines:
        if line not in kept:
            print(line, file=sys.stderr)
    return kept


def _continuation(line):
    # The second line of cpu_feature_guard's message: a list of instruction sets.
    return line.startswith("AVX") or line.startswith("SSE") or "rebuild TensorFlow with the appropriate compiler flags" in line
