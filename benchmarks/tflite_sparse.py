"""Sparse TFLite export targets, measured side by side in one run.

    python benchmarks/tflite_sparse.py [--sizes 1024-4096-4096-1000] [--runs 40]
        [--repeats 7] [--explore]

Latency figures are the median of `--repeats` (>= 5) interleaved
repetitions (dense and sparse alternate a, b, b, a inside each) with the
min-max over repetitions, after a warm-up; the settings are printed. Target
(a) is judged on the worker's CPU time (`clock="cpu"`), which stays stable on
a machine shared with other busy processes; the wall-clock figure is printed
next to it with the load average.
`--explore` also measures what moves the 1x4 speed-up (threads, XNNPACK off,
no warm-up, one long repetition) to show where run-to-run variation comes
from.

(a) a Dense MLP at 90% sparsity with kprune.Block((4, 1)) vs its dense
    export, batch 1, 1 thread, XNNPACK on, interleaved: target >= 5x faster;
    batch 64 is printed too (the sparse kernel is expected to lose there);
(b) the 90%-sparse float file: target <= 0.2x the dense float file;
(c) int8 + kprune.Block((16, 1)) at 90%: target <= 0.06x the dense float file.
(d) a filter-pruned convnet (keras.applications.MobileNetV2, weights=None,
    128x128, 50% of channels removed by kprune.structured) exports dense
    (no sparse tensors) and is measurably faster than the unpruned export.

The MLP has random weights masked with kprune.core.masking (what
`kprune.strip_pruning` produces after pruning); latency does not depend on
the weight values. Prints ratios and whether each target is met.
"""

import argparse
import os
import platform
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tflite_export  # noqa: E402
from kprune.core import masking  # noqa: E402


def mlp(sizes, seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((sizes[0],))
    x = inp
    for i, n in enumerate(sizes[1:]):
        x = keras.layers.Dense(n, activation="relu" if i < len(sizes) - 2 else None,
                               name=f"dense_{i}")(x)
    return keras.Model(inp, x)


def prune(model, granularity, sparsity):
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            k = layer.kernel.numpy()
            layer.kernel.assign(k * masking.compute_mask(np.abs(k), sparsity, granularity))
    return model


def verdict(ok):
    return "MET" if ok else "MISSED"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1024-4096-4096-1000")
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--runs", type=int, default=40, help="timed runs per repetition")
    p.add_argument("--repeats", type=int, default=7, help="interleaved repetitions (>= 5)")
    p.add_argument("--batch64-runs", type=int, default=5)
    p.add_argument("--explore", action="store_true")
    p.add_argument("--skip-structured", action="store_true")
    args = p.parse_args(argv)
    if args.repeats < 5:
        p.error("--repeats must be >= 5")
    sizes = tuple(int(s) for s in args.sizes.split("-"))
    print(f"MLP {args.sizes}, sparsity {args.sparsity:.0%}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs, runs={args.runs}")

    t0 = time.time()
    m4 = prune(mlp(sizes), masking.Block((4, 1)), args.sparsity)
    dense = tflite_export.convert(m4, sparsity="dense")
    sparse = tflite_export.convert(m4, sparsity="sparse")
    m16 = prune(mlp(sizes, seed=1), masking.Block((16, 1)), args.sparsity)
    calib = np.random.default_rng(0).standard_normal((100, sizes[0])).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        int8 = tflite_export.convert(m16, sparsity="sparse", quantize="int8",
                                     representative_data=calib)
    print(f"converted 3 files in {time.time() - t0:.1f} s")

    for name, data in (("dense", dense), ("sparse 1x4", sparse), ("int8 1x16", int8)):
        print(f"  {name:11s} {tflite_export.inspect(data).summary()}")
    diff = tflite_export.verify(m4, sparse, samples=calib[:8])
    scale = float(np.abs(m16(calib[:8])).max())
    diff8 = tflite_export.verify(m16, int8, samples=calib[:8])
    print(f"  verify: sparse float max|diff| {diff:.2e} (tol 1e-5); int8 max|diff| "
          f"{diff8:.2e} (tol {tflite_export.tolerance('int8', scale):.2e})")

    rep = dict(runs=args.runs, repeats=args.repeats, warmup=20)
    c1 = tflite_export.compare(dense, sparse, labels=("dense", "sparse 1x4"), batch=1,
                               threads=1, **rep)
    c64 = tflite_export.compare(dense, sparse, labels=("dense", "sparse 1x4"), batch=64,
                                threads=1, runs=args.batch64_runs, repeats=5, warmup=2)
    c1cpu = tflite_export.compare(dense, sparse, labels=("dense", "sparse 1x4"), batch=1,
                                  threads=1, clock="cpu", **rep)
    c8 = tflite_export.compare(dense, int8, labels=("dense", "int8 1x16"), batch=1,
                               threads=1, **rep)
    print(f"\nlatency, median of interleaved repetitions (min-max) [{c1.a.settings}]:")
    for c, b in ((c1, 1), (c64, 64), (c8, 1)):
        print(f"  batch {b:2d}: {c.a.label} {c.a.median_ms:.3f} ms ({c.a.min_ms:.3f}-"
              f"{c.a.max_ms:.3f}) | {c.b.label} {c.b.median_ms:.3f} ms ({c.b.min_ms:.3f}-"
              f"{c.b.max_ms:.3f}) | speed-up {c.speedup:.2f}x ({c.speedup_min:.2f}-"
              f"{c.speedup_max:.2f}x, {c.b.repeats} repetitions)")
    c = c1cpu
    print(f"  batch  1, CPU time: {c.a.label} {c.a.median_ms:.3f} ms ({c.a.min_ms:.3f}-"
          f"{c.a.max_ms:.3f}) | {c.b.label} {c.b.median_ms:.3f} ms ({c.b.min_ms:.3f}-"
          f"{c.b.max_ms:.3f}) | speed-up {c.speedup:.2f}x ({c.speedup_min:.2f}-"
          f"{c.speedup_max:.2f}x)")
    if args.explore:
        explore(dense, sparse, args)

    size_ratio = len(sparse) / len(dense)
    int8_ratio = len(int8) / len(dense)
    print("\ntargets:")
    print(f"  (a) sparse 1x4 vs dense, batch 1, CPU time: {c1cpu.speedup:.2f}x faster, median "
          f"of {len(c1cpu.speedups)} interleaved repetitions (min-max {c1cpu.speedup_min:.2f}-"
          f"{c1cpu.speedup_max:.2f}x) (target >= 5x) -> {verdict(c1cpu.speedup >= 5)}; wall "
          f"clock {c1.speedup:.2f}x ({c1.speedup_min:.2f}-{c1.speedup_max:.2f}x) at load "
          f"{os.getloadavg()[0]:.1f} -> {verdict(c1.speedup >= 5)}")
    print(f"  (b) sparse float file: {len(sparse):,} / {len(dense):,} bytes = "
          f"{size_ratio:.3f}x (target <= 0.2x) -> {verdict(size_ratio <= 0.2)}")
    print(f"  (c) int8 1x16 file: {len(int8):,} / {len(dense):,} bytes = "
          f"{int8_ratio:.4f}x (target <= 0.06x) -> {verdict(int8_ratio <= 0.06)}")
    if not args.skip_structured:
        structured_target(max(5, args.runs // 4))


def explore(dense, sparse, args):
    """What moves the 1x4 speed-up: each row changes one setting."""
    print("\nexplore: 1x4 speed-up at batch 1 under other settings (median, min-max):")
    cases = [
        ("baseline: 1 thread, XNNPACK, warm-up 20", dict(threads=1, warmup=20)),
        ("no warm-up", dict(threads=1, warmup=0)),
        ("2 threads", dict(threads=2, warmup=20)),
        ("4 threads", dict(threads=4, warmup=20)),
        ("XNNPACK off (builtin kernels)", dict(threads=1, warmup=20, xnnpack=False)),
        ("CPU-time clock", dict(threads=1, warmup=20, clock="cpu")),
        ("CPU-time clock, XNNPACK off", dict(threads=1, warmup=20, clock="cpu", xnnpack=False)),
    ]
    for name, kw in cases:
        c = tflite_export.compare(dense, sparse, batch=1, runs=args.runs, repeats=args.repeats, **kw)
        print(f"  {name:40s} dense {c.a.median_ms:.3f} ms, sparse {c.b.median_ms:.3f} ms, "
              f"{c.speedup:.2f}x ({c.speedup_min:.2f}-{c.speedup_max:.2f}x)")
    # Non-interleaved: all dense runs, then all sparse runs (the old protocol).
    a = tflite_export.benchmark(dense, runs=args.runs * args.repeats, repeats=1, warmup=0)
    b = tflite_export.benchmark(sparse, runs=args.runs * args.repeats, repeats=1, warmup=0)
    print(f"  {'one long run each, not interleaved':40s} dense {a.median_ms:.3f} ms, sparse "
          f"{b.median_ms:.3f} ms, {a.median_ms / b.median_ms:.2f}x")
    short = [tflite_export.compare(dense, sparse, runs=10, repeats=5, warmup=0).speedups
             for _ in range(3)]
    flat = [x for s in short for x in s]
    print(f"  {'short repetitions (10 runs, no warm-up)':40s} per-repetition speed-ups "
          f"{min(flat):.2f}-{max(flat):.2f}x")


def structured_target(runs):
    """(d): filter pruning is the conv speed-up; the file stays dense."""
    from kprune import count_flops
    from kprune.structured import prune_channels

    keras.utils.set_random_seed(0)
    net = keras.applications.MobileNetV2(weights=None, input_shape=(128, 128, 3), classes=100)
    thin = prune_channels(net, importance="l1", pruning_ratio=0.5)
    full_file = tflite_export.convert(net, sparsity="auto")
    thin_file = tflite_export.convert(thin, sparsity="auto")
    report = tflite_export.inspect(thin_file)
    c = tflite_export.compare(full_file, thin_file, labels=("MobileNetV2", "filter-pruned"),
                              batch=1, threads=1, runs=runs, warmup=5)
    print(f"  (d) filter-pruned MobileNetV2 128x128 (50% channels): {report.summary()}")
    print(f"      {c.a.label} median {c.a.median_ms:.2f} ms | {c.b.label} median "
          f"{c.b.median_ms:.2f} ms | speed-up {c.speedup:.2f}x, file "
          f"{len(thin_file) / len(full_file):.3f}x, FLOPs {count_flops(thin) / count_flops(net):.3f}x -> "
          f"{verdict(c.speedup > 1.05 and not report.sparse_tensors)} (dense export, measurably faster)")


if __name__ == "__main__":
    main()
