"""LSTM/GRU export: the static-batch WHILE route (what convert does) vs unroll=True.

    python benchmarks/recurrent_export.py [--quick]

Prints, per model and route: file bytes, builtin ops, max |diff| against
Keras (16 random samples) and the LiteRT median latency (XNNPACK, 1 thread,
batch 1). Target: both routes convert to builtin ops only and verify within
tolerance (PASS/MISS); the latency comparison is information, not a target.
"""

import argparse
import os
import time

import keras
import numpy as np

import kprune
import tflite_export


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer timed runs")
    args = parser.parse_args()
    runs, repeats = (20, 3) if args.quick else (100, 5)
    x = np.random.default_rng(0).normal(size=(16, 20, 8)).astype("float32")
    print(f"load average {os.getloadavg()[0]:.1f} (timings from a shared machine are noisy)")
    print(f"{'model':5} {'route':12} {'bytes':>8} {'max diff':>9} {'tol':>8} {'median ms':>9}  ops")
    ok = True
    for kind in (keras.layers.LSTM, keras.layers.GRU):
        for unroll in (False, True):
            keras.utils.set_random_seed(0)
            inp = keras.Input((20, 8))
            h = kind(32, unroll=unroll, name="rnn")(inp)
            model = keras.Model(inp, keras.layers.Dense(4, name="head")(h))
            pruned = kprune.prune_low_magnitude(model, kprune.ConstantSparsity(0.5, 0))
            kprune.Pruner(pruned).start()
            start = time.perf_counter()
            data = tflite_export.convert(pruned)
            seconds = time.perf_counter() - start
            ops = tflite_export.inspect(data).op_counts
            scale, diff = tflite_export.compare_outputs(kprune.strip_pruning(pruned), data,
                                                        samples=x)
            tol = tflite_export.tolerance(None, scale)
            bench = tflite_export.benchmark(data, runs=runs, repeats=repeats)
            builtin = not any(o.startswith(("Flex", "CUSTOM")) for o in ops)
            ok = ok and builtin and diff <= tol
            print(f"{kind.__name__:5} {'unroll' if unroll else 'static WHILE':12} {len(data):8,} "
                  f"{diff:9.1e} {tol:8.0e} {bench.median_ms:9.3f}  "
                  f"{', '.join(f'{k} x{v}' for k, v in ops.items())} (convert {seconds:.1f} s)")
    print(f"builtin ops only and verified within tolerance: {'PASS' if ok else 'MISS'}")


if __name__ == "__main__":
    main()
