"""Latency of .tflite files on this CPU with the LiteRT interpreter.

Measurement protocol (what makes the figure stable):

* the file is validated (`inspect`'s checks) and run in the LiteRT worker
  process (`tflite_export._runtime`), so a crash cannot kill the caller;
* inputs are random, set once; each timed run is one `invoke()`, timed in
  the worker with `time.perf_counter`;
* `warmup` untimed runs first (XNNPACK packs weights and the CPU leaves its
  idle frequency during the first invokes);
* `repeats` repetitions of `runs` timed invokes; `compare` interleaves the
  repetitions of the two files (a, b, b, a, a, b, ...), so that frequency
  changes and other processes hit both equally, while each block of runs
  measures one model in its own steady state (`settle` untimed invokes
  first re-warm the caches the other model evicted; interleaving single
  invokes instead made the 11 MB sparse MLP 2.3x slower than it runs alone,
  because the 100 MB dense file flushes the cache between its invokes);
* the figure is the median over repetitions of each repetition's median,
  with the min-max over repetitions as its spread; `compare`'s speed-up is
  the median of the per-repetition ratios;
* `clock="wall"` (default) is what a user waits; `clock="cpu"` counts the
  worker's CPU time only, which on a machine shared with other busy
  processes leaves out the time the worker is preempted (a long invoke is
  preempted more often than a short one, which inflates wall-clock ratios).
  With `threads > 1` CPU time adds up all threads.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from tflite_export._runtime import session


@dataclasses.dataclass
class BenchmarkResult:
    """Latency of one .tflite file.

    Attributes:
        label: name shown in tables.
        median_ms: median over repetitions of the per-repetition median
            latency of one `invoke()`, in milliseconds.
        min_ms: smallest per-repetition median (spread, low end).
        max_ms: largest per-repetition median (spread, high end).
        p90_ms: 90th percentile over all timed runs, in milliseconds.
        mean_ms: mean over all timed runs, in milliseconds.
        runs: timed runs per repetition.
        repeats: repetitions.
        warmup: untimed runs before timing.
        batch: batch size.
        threads: interpreter threads.
        xnnpack: whether the XNNPACK delegate was on.
        times_ms: every timed run, in milliseconds (repetition after
            repetition).
        repeat_ms: the per-repetition medians, in milliseconds.
        clock: `"wall"` or `"cpu"` (see the module docstring).
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
    min_ms: float = 0.0
    max_ms: float = 0.0
    repeats: int = 1
    warmup: int = 0
    repeat_ms: list = dataclasses.field(default_factory=list, repr=False)
    clock: str = "wall"

    @property
    def settings(self):
        """The measurement settings as one line."""
        return settings_line(self.batch, self.threads, self.xnnpack, self.runs,
                             self.repeats, self.warmup, self.clock)

    def __str__(self):
        return (
            f"{self.label}: median {self.median_ms:.3f} ms (min-max over "
            f"{self.repeats} repetitions {self.min_ms:.3f}-{self.max_ms:.3f}), "
            f"p90 {self.p90_ms:.3f} ms [{self.settings}]"
        )


@dataclasses.dataclass
class Comparison:
    """Side-by-side result of `compare`.

    Attributes:
        a: `BenchmarkResult` of the first file.
        b: `BenchmarkResult` of the second file.
        speedups: per-repetition `a / b` ratios of the medians.
    """

    a: BenchmarkResult
    b: BenchmarkResult
    speedups: list = dataclasses.field(default_factory=list)

    @property
    def speedup(self):
        """Median over repetitions of `a.median / b.median` (> 1: `b` is faster)."""
        if self.speedups:
            return float(np.median(self.speedups))
        return self.a.median_ms / self.b.median_ms if self.b.median_ms else float("inf")

    @property
    def speedup_min(self):
        """Smallest per-repetition speed-up."""
        return float(min(self.speedups)) if self.speedups else self.speedup

    @property
    def speedup_max(self):
        """Largest per-repetition speed-up."""
        return float(max(self.speedups)) if self.speedups else self.speedup

    def __str__(self):
        return (
            f"{self.a}\n{self.b}\n{self.b.label} is {self.speedup:.2f}x faster than "
            f"{self.a.label} (median of {len(self.speedups) or 1} interleaved repetitions, "
            f"min-max {self.speedup_min:.2f}-{self.speedup_max:.2f}x)"
        )


def settings_line(batch, threads, xnnpack, runs, repeats, warmup, clock="wall"):
    """`batch 1, 1 thread(s), XNNPACK on, 5 x 50 runs, 10 warm-up, wall clock, 16 CPUs`."""
    load = ""
    try:
        load = f", load {os.getloadavg()[0]:.1f}"
    except (OSError, AttributeError):  # pragma: no cover - no getloadavg
        pass
    return (
        f"batch {batch}, {threads} thread(s), XNNPACK {'on' if xnnpack else 'off'}, "
        f"{repeats} x {runs} runs, {warmup} warm-up, {clock} clock, {os.cpu_count()} CPUs{load}"
    )


def _positive(value, name, low=1):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
        kind = "positive" if low == 1 else "non-negative"
        raise ValueError(f"{name} must be a {kind} integer, got {value!r}.")
    return int(value)


def _result(label, reps, batch, threads, xnnpack, warmup, clock="wall"):
    reps_ms = [np.asarray(t, dtype=np.float64) * 1e3 for t in reps]
    meds = [float(np.median(r)) for r in reps_ms]
    all_ms = np.concatenate(reps_ms)
    return BenchmarkResult(
        label=label,
        median_ms=float(np.median(meds)),
        p90_ms=float(np.percentile(all_ms, 90)),
        mean_ms=float(all_ms.mean()),
        runs=int(reps_ms[0].size),
        batch=int(batch),
        threads=int(threads),
        xnnpack=bool(xnnpack),
        times_ms=all_ms.tolist(),
        min_ms=float(min(meds)),
        max_ms=float(max(meds)),
        repeats=len(reps_ms),
        warmup=int(warmup),
        repeat_ms=meds,
        clock=clock,
    )


#: Untimed invokes before each model's block of runs after the first
#: repetition (re-warms caches after the other model ran).
SETTLE = 3


def _measure(files, names, batch, threads, xnnpack, runs, warmup, repeats, seed, verbose,
             clock="wall", settle=SETTLE):
    if clock not in ("wall", "cpu"):
        raise ValueError(f"clock must be 'wall' or 'cpu', got {clock!r}.")
    runs = _positive(runs, "runs")
    warmup = _positive(warmup, "warmup", 0)
    repeats = _positive(repeats, "repeats")
    _positive(batch, "batch")
    with session() as s:
        models = [s.load(f, n, threads=threads, xnnpack=xnnpack) for f, n in zip(files, names)]
        for m in models:
            m.set_batch(batch)
        bar = None
        if verbose:
            # Here, not at the top: `import tflite_export` (and its LiteRT
            # worker) stays free of kprune's Keras import.
            from kprune.utils.progress import Progress

            bar = Progress(repeats, "benchmark", verbose=verbose, unit="repetition")
        reps = [[] for _ in models]
        for r in range(repeats):
            order = list(range(len(models)))
            if ((r + 1) // 2) % 2 == 1:
                order.reverse()  # a b | b a | b a | a b | a b | ...  (ABBA)
            times = s.time([models[i] for i in order], runs,
                           warmup if r == 0 else settle, seed, clock)
            for i, t in zip(order, times):
                reps[i].append(t)
            if bar:
                bar.update(1)
    return reps


def benchmark(
    tflite, batch=1, threads=1, xnnpack=True, runs=50, warmup=10, label=None, seed=0,
    verbose=0, repeats=5, clock="wall",
):
    """Median latency and its spread for a .tflite file with the LiteRT interpreter.

    The file is validated first and run in the LiteRT worker process (a
    LiteRT crash raises `InterpreterCrash`, naming the file).

    Args:
        tflite: .tflite bytes or path.
        batch: batch size (the first input axis is resized).
        threads: interpreter threads.
        xnnpack: True (default) uses the XNNPACK delegate, as on phones.
        runs: timed runs per repetition.
        warmup: untimed runs first.
        label: name for tables (default: the path, or "model").
        seed: seed for the random inputs.
        verbose: 1 shows a progress bar.
        repeats: repetitions; the result is the median of the
            per-repetition medians, with their min-max.
        clock: `"wall"` (default, elapsed time) or `"cpu"` (the worker's
            CPU time: stable on a machine shared with busy processes).

    Returns:
        A `BenchmarkResult`.

    Raises:
        ValueError: bad arguments, or a corrupt file / one LiteRT refuses.
        InterpreterCrash: LiteRT crashed on the file.

    Example:
    >>> print(tflite_export.benchmark("model.tflite", batch=1, threads=1))
    """
    label = label or (os.fspath(tflite) if isinstance(tflite, (str, os.PathLike)) else "model")
    reps = _measure([tflite], ["tflite"], batch, threads, xnnpack, runs, warmup, repeats,
                    seed, verbose, clock)
    return _result(label, reps[0], batch, threads, xnnpack, warmup, clock)


def compare(
    a, b, labels=("a", "b"), batch=1, threads=1, xnnpack=True, runs=50, warmup=10, seed=0,
    verbose=0, repeats=5, clock="wall",
):
    """Benchmarks two .tflite files side by side, interleaved.

    Repetitions alternate between the two files (a b | b a | b a | a b ...)
    so that frequency scaling, other processes and thermal drift hit both
    equally; inside a repetition each file runs its block of `runs` invokes
    in its own steady state. `speedup` is the median over repetitions of the
    per-repetition ratio, `speedup_min`/`speedup_max` its spread.

    Args:
        a: first .tflite (bytes or path), e.g. the dense export.
        b: second .tflite (bytes or path), e.g. the sparse export.
        labels: names of `a` and `b` for tables.
        batch, threads, xnnpack, runs, warmup, seed, repeats, clock: as in
            `benchmark`.
        verbose: 1 shows a progress bar.

    Returns:
        A `Comparison`; `.speedup` is the median `a / b` ratio.

    Raises:
        ValueError: bad arguments, or a corrupt file / one LiteRT refuses.
        InterpreterCrash: LiteRT crashed on a file.

    Example:
    >>> c = tflite_export.compare("dense.tflite", "sparse.tflite",
    ...                           labels=("dense", "sparse"))
    >>> print(c.speedup, c.speedup_min, c.speedup_max)
    """
    if len(labels) != 2:
        raise ValueError(f"labels must be two names, got {labels!r}.")
    reps = _measure([a, b], ["a", "b"], batch, threads, xnnpack, runs, warmup, repeats,
                    seed, verbose, clock)
    ra = _result(labels[0], reps[0], batch, threads, xnnpack, warmup, clock)
    rb = _result(labels[1], reps[1], batch, threads, xnnpack, warmup, clock)
    ratios = [x / y if y else float("inf") for x, y in zip(ra.repeat_ms, rb.repeat_ms)]
    return Comparison(ra, rb, ratios)
