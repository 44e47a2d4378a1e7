"""Latency of .tflite files on this CPU with the LiteRT interpreter."""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from tflite_export._runtime import make_interpreter, random_inputs, set_batch


@dataclasses.dataclass
class BenchmarkResult:
    """Latency of one .tflite file.

    Attributes:
        label: name shown in tables.
        median_ms: median latency of one `invoke()`, in milliseconds.
        p90_ms: 90th percentile latency, in milliseconds.
        mean_ms: mean latency, in milliseconds.
        runs: number of timed runs.
        batch: batch size.
        threads: interpreter threads.
        xnnpack: whether the XNNPACK delegate was on.
        times_ms: every timed run, in milliseconds.
    """

    label: str
    median_ms: float
    p90_ms: float
    mean_ms: float
    runs: int
    batch: int
    threads: int
    xnnpack: bool
    times_ms: list = dataclasses.field(default_factory=list, repr=False)

    def __str__(self):
        return (
            f"{self.label}: median {self.median_ms:.3f} ms, p90 {self.p90_ms:.3f} ms "
            f"(batch {self.batch}, {self.threads} thread(s), "
            f"XNNPACK {'on' if self.xnnpack else 'off'}, {self.runs} runs)"
        )


@dataclasses.dataclass
class Comparison:
    """Side-by-side result of `compare`.

    Attributes:
        a: `BenchmarkResult` of the first file.
        b: `BenchmarkResult` of the second file.
        speedup: `a.median_ms / b.median_ms` (> 1: `b` is faster).
    """

    a: BenchmarkResult
    b: BenchmarkResult

    @property
    def speedup(self):
        return self.a.median_ms / self.b.median_ms if self.b.median_ms else float("inf")

    def __str__(self):
        return f"{self.a}\n{self.b}\n{self.b.label} is {self.speedup:.2f}x faster than {self.a.label} (median)"


def _check(runs, warmup):
    if not isinstance(runs, (int, np.integer)) or runs < 1:
        raise ValueError(f"runs must be a positive integer, got {runs!r}.")
    if not isinstance(warmup, (int, np.integer)) or warmup < 0:
        raise ValueError(f"warmup must be a non-negative integer, got {warmup!r}.")


def _prepare(tflite, batch, threads, xnnpack, seed, name):
    interp = make_interpreter(tflite, threads=threads, xnnpack=xnnpack, name=name)
    set_batch(interp, batch)
    inputs = random_inputs(interp, batch, seed)
    for d, x in zip(interp.get_input_details(), inputs):
        interp.set_tensor(d["index"], x)
    return interp


def _result(label, times, batch, threads, xnnpack):
    ms = np.asarray(times) * 1e3
    return BenchmarkResult(
        label=label,
        median_ms=float(np.median(ms)),
        p90_ms=float(np.percentile(ms, 90)),
        mean_ms=float(ms.mean()),
        runs=int(ms.size),
        batch=int(batch),
        threads=int(threads),
        xnnpack=bool(xnnpack),
        times_ms=ms.tolist(),
    )


def benchmark(
    tflite, batch=1, threads=1, xnnpack=True, runs=50, warmup=5, label=None, seed=0, verbose=0
):
    """Median and p90 latency of a .tflite file with the LiteRT interpreter.

    Inputs are random (standard normal for float inputs); they are set once
    and each timed run is one `invoke()`.

    Args:
        tflite: .tflite bytes or path.
        batch: batch size (the first input axis is resized).
        threads: interpreter threads.
        xnnpack: True (default) uses the XNNPACK delegate, as on phones.
        runs: timed runs.
        warmup: untimed runs first.
        label: name for tables (default: the path, or "model").
        seed: seed for the random inputs.
        verbose: 1 shows a progress bar.

    Returns:
        A `BenchmarkResult`.

    Example:
    >>> print(tflite_export.benchmark("model.tflite", batch=1, threads=1))
    """
    import keras

    _check(runs, warmup)
    label = label or (tflite if isinstance(tflite, str) else "model")
    interp = _prepare(tflite, batch, threads, xnnpack, seed, "tflite")
    for _ in range(warmup):
        interp.invoke()
    bar = keras.utils.Progbar(runs, verbose=verbose) if verbose else None
    times = []
    for i in range(runs):
        t = time.perf_counter()
        interp.invoke()
        times.append(time.perf_counter() - t)
        if bar:
            bar.update(i + 1)
    return _result(label, times, batch, threads, xnnpack)


def compare(
    a, b, labels=("a", "b"), batch=1, threads=1, xnnpack=True, runs=50, warmup=5, seed=0,
    verbose=0,
):
    """Benchmarks two .tflite files side by side, interleaved.

    Runs alternate between the two files (a, b, b, a, a, b, ...) so that
    frequency scaling, other processes and thermal drift hit both equally.

    Args:
        a: first .tflite (bytes or path), e.g. the dense export.
        b: second .tflite (bytes or path), e.g. the sparse export.
        labels: names of `a` and `b` for tables.
        batch, threads, xnnpack, runs, warmup, seed: as in `benchmark`.
        verbose: 1 shows a progress bar.

    Returns:
        A `Comparison`; `.speedup` is `a.median / b.median`.

    Example:
    >>> c = tflite_export.compare("dense.tflite", "sparse.tflite",
    ...                           labels=("dense", "sparse"))
    >>> print(c.speedup)
    """
    import keras

    _check(runs, warmup)
    if len(labels) != 2:
        raise ValueError(f"labels must be two names, got {labels!r}.")
    ia = _prepare(a, batch, threads, xnnpack, seed, "a")
    ib = _prepare(b, batch, threads, xnnpack, seed, "b")
    for _ in range(warmup):
        ia.invoke()
        ib.invoke()
    ta, tb = [], []
    bar = keras.utils.Progbar(runs, verbose=verbose) if verbose else None
    for i in range(runs):
        order = ((ia, ta), (ib, tb)) if i % 2 == 0 else ((ib, tb), (ia, ta))
        for interp, times in order:
            t = time.perf_counter()
            interp.invoke()
            times.append(time.perf_counter() - t)
        if bar:
            bar.update(i + 1)
    return Comparison(
        _result(labels[0], ta, batch, threads, xnnpack),
        _result(labels[1], tb, batch, threads, xnnpack),
    )
