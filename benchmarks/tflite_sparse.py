"""Sparse TFLite export targets, measured side by side in one run.

    python benchmarks/tflite_sparse.py [--sizes 1024-4096-4096-1000] [--runs 200]

(a) a Dense MLP at 90% sparsity with kprune.Block((4, 1)) vs its dense
    export, batch 1, 1 thread, XNNPACK on, interleaved: target >= 5x faster;
    batch 64 is printed too (the sparse kernel is expected to lose there);
(b) the 90%-sparse float file: target <= 0.2x the dense float file;
(c) int8 + kprune.Block((16, 1)) at 90%: target <= 0.06x the dense float file.
(d) filter-pruned convnets: use `tflite_export.compare(dense, pruned)`; not
    measured here.

The MLP has random weights masked with kprune.masking (what
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
from kprune import masking  # noqa: E402


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
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--batch64-runs", type=int, default=20)
    args = p.parse_args(argv)
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

    c1 = tflite_export.compare(dense, sparse, labels=("dense", "sparse 1x4"), batch=1,
                               threads=1, runs=args.runs, warmup=20)
    c64 = tflite_export.compare(dense, sparse, labels=("dense", "sparse 1x4"), batch=64,
                                threads=1, runs=args.batch64_runs, warmup=3)
    c8 = tflite_export.compare(dense, int8, labels=("dense", "int8 1x16"), batch=1,
                               threads=1, runs=args.runs, warmup=20)
    print("\nlatency (1 thread, XNNPACK on, interleaved):")
    for c, b in ((c1, 1), (c64, 64), (c8, 1)):
        print(f"  batch {b:2d}: {c.a.label} median {c.a.median_ms:.3f} ms (p90 "
              f"{c.a.p90_ms:.3f}) | {c.b.label} median {c.b.median_ms:.3f} ms (p90 "
              f"{c.b.p90_ms:.3f}) | speed-up {c.speedup:.2f}x")

    size_ratio = len(sparse) / len(dense)
    int8_ratio = len(int8) / len(dense)
    print("\ntargets:")
    print(f"  (a) sparse 1x4 vs dense, batch 1: {c1.speedup:.2f}x faster "
          f"(target >= 5x) -> {verdict(c1.speedup >= 5)}")
    print(f"  (b) sparse float file: {len(sparse):,} / {len(dense):,} bytes = "
          f"{size_ratio:.3f}x (target <= 0.2x) -> {verdict(size_ratio <= 0.2)}")
    print(f"  (c) int8 1x16 file: {len(int8):,} / {len(dense):,} bytes = "
          f"{int8_ratio:.4f}x (target <= 0.06x) -> {verdict(int8_ratio <= 0.06)}")
    print("  (d) filter-pruned convnet: not measured here (use tflite_export.compare)")


if __name__ == "__main__":
    main()
