"""Benchmark: the latency model and latency-budgeted channel pruning (kprune.deploy).

1. Prediction: for the demo CNN and a keras.applications MobileNetV2
   (weights=None, 32x32x3 inputs, `--alpha`), the `LatencyModel`'s
   predicted end-to-end latency of several thin models (latency budgets and
   uniform channel ratios) next to the latency measured on their .tflite
   (LiteRT + XNNPACK, batch 1, 1 thread, interleaved with the dense file).
   Target: within 15%.
2. Budgets: both models trained on the offline MNIST digits (`kprune.data`;
   MobileNetV2's inputs padded to 32x32 and repeated to 3 channels), pruned
   for budgets 0.5x and 0.3x of the dense latency by `prune_for_latency`
   and by a uniform ratio found by bisection on the same latency model, both
   fine-tuned the same way. Printed: the measured latency over the budget
   (target <= 1.05, median of interleaved repetitions) and the test accuracy
   (target: mean over seeds of the latency-aware allocation >= the uniform
   mean; spread printed).

Timings come from a shared machine: its load average is printed with them,
and they are CPU time of the LiteRT worker by default (`--clock cpu`: on a
loaded machine wall-clock times include the time the worker waits for a
core; see tflite_export.benchmark).

Usage: python benchmarks/latency.py [--quick] [--seeds N] [--models cnn,mobilenetv2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tflite_export  # noqa: E402

from kprune import data, deploy  # noqa: E402
from kprune.cli.demo import build_cnn  # noqa: E402
from kprune.structured import ChannelPruner  # noqa: E402
from kprune.utils.table import format_table  # noqa: E402


def _load(name, seed):
    (x, y), (xt, yt) = data.load_mnist_5k(seed=seed)
    if name == "mobilenetv2":
        pad = ((0, 0), (2, 2), (2, 2), (0, 0))
        x, xt = (np.repeat(np.pad(a, pad), 3, axis=-1) for a in (x, xt))
    return x, y, xt, yt


def _build(name, alpha):
    if name == "cnn":
        return build_cnn()
    return keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=alpha, weights=None,
                                          classes=10, classifier_activation=None)


def _compile(model, lr=1e-3):
    model.compile(keras.optimizers.Adam(lr), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])


def _measure(dense, thin, measurer, repeats):
    c = measurer.compare(tflite_export.convert(dense, sparsity="dense"),
                         tflite_export.convert(thin, sparsity="dense"), repeats=repeats)
    return c.a.median_ms, c.b.median_ms, c


def _uniform(model, lat, budget_ms, max_ratio=0.875):
    """The largest-kept uniform ratio whose predicted latency meets the budget (bisection)."""
    pruner = ChannelPruner(model, pruning_ratio=0.0)
    lo, hi = 0.0, max_ratio
    if lat.predict_plan(pruner.plan(pruning_ratio=hi)) > budget_ms:
        return None, pruner
    for _ in range(12):
        mid = (lo + hi) / 2
        if lat.predict_plan(pruner.plan(pruning_ratio=mid)) <= budget_ms:
            hi = mid
        else:
            lo = mid
    return hi, pruner


def prediction(models, lats, measurer, repeats):
    rows, errors = [], []
    for name, model in models.items():
        lat = lats[name]
        configs = []
        for b in (0.7, 0.5):
            try:
                plan = deploy.allocate(lat, budget=b)
                configs.append((f"budget {b}", ChannelPruner(model, pruning_ratio=plan.pruning_ratio)))
            except ValueError as e:
                print(f"{name} budget {b}: {str(e).splitlines()[0]}")
        for r in (0.25, 0.5):
            configs.append((f"uniform {r}", ChannelPruner(model, pruning_ratio=r)))
        for label, pruner in configs:
            plan = pruner.plan()
            predicted = lat.predict_plan(plan)
            thin = pruner.prune(plan, verify=False)
            dense_ms, measured, _ = _measure(model, thin, measurer, repeats)
            # the prediction is relative to the table's dense latency; re-base on this run's
            predicted_now = predicted * dense_ms / lat.dense_ms
            err = predicted_now / measured - 1
            errors.append(abs(err))
            rows.append([name, label, f"{dense_ms:.4f}", f"{predicted_now:.4f}", f"{measured:.4f}",
                         f"{100 * err:+.1f}%", "PASS" if abs(err) <= 0.15 else "MISS"])
    print(format_table(["model", "thin model", "dense ms", "predicted ms", "measured ms", "error",
                        "<=15%"], rows))
    print(f"mean |error| {100 * np.mean(errors):.1f}%, max {100 * np.max(errors):.1f}% over "
          f"{len(errors)} configurations")


def budgets(name, alpha, seeds, epochs, fine_tune, measurer, cache_dir, repeats, levels):
    rows = []
    for budget in (0.5, 0.3):
        acc = {"latency-aware": [], "uniform": []}
        ratio = {"latency-aware": [], "uniform": []}
        for seed in range(seeds):
            keras.utils.set_random_seed(seed)
            x, y, xt, yt = _load(name, seed)
            model = _build(name, alpha)
            _compile(model)
            model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
            lat = deploy.LatencyModel(model, measurer=measurer, cache_dir=cache_dir, levels=levels)
            target = budget * lat.dense_ms
            thins = {}
            try:
                res = deploy.prune_for_latency(model, budget=budget, latency_model=lat, measure=False)
                thins["latency-aware"] = res.model
            except ValueError as e:
                print(f"{name} {budget}: latency-aware: {str(e).splitlines()[0]}")
            r, pruner = _uniform(model, lat, target)
            if r is None:
                print(f"{name} {budget}: uniform: no ratio <= 0.875 meets the budget")
            else:
                thins["uniform"] = pruner.prune(pruner.plan(pruning_ratio=r), verify=False)
            for method, thin in thins.items():
                _compile(thin)
                thin.fit(x, y, batch_size=64, epochs=fine_tune, verbose=0)
                acc[method].append(thin.evaluate(xt, yt, verbose=0)[1])
                dense_ms, measured, _ = _measure(model, thin, measurer, repeats)
                ratio[method].append(measured / (budget * dense_ms))
        for method in acc:
            if not acc[method]:
                rows.append([name, f"{budget}x", method, "-", "-", "-", "-"])
                continue
            a, q = acc[method], ratio[method]
            spread = f"{min(a):.4f}-{max(a):.4f}"
            rows.append([name, f"{budget}x", method, f"{statistics.median(q):.2f} (max {max(q):.2f})",
                         "PASS" if max(q) <= 1.05 else "MISS", f"{np.mean(a):.4f} ({spread})", ""])
        if acc["latency-aware"] and acc["uniform"]:
            ok = np.mean(acc["latency-aware"]) >= np.mean(acc["uniform"])
            rows[-2][-1] = "PASS" if ok else "MISS"
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="1 seed, short training, 3 repetitions, coarse MobileNetV2 table")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--models", default="cnn,mobilenetv2")
    parser.add_argument("--alpha", type=float, default=0.35, help="MobileNetV2 width multiplier")
    parser.add_argument("--cache-dir", default=None, help="latency cache (default ~/.cache/kprune)")
    parser.add_argument("--clock", default="cpu", choices=("cpu", "wall"),
                        help="cpu (default): the LiteRT worker's CPU time, which leaves out the time "
                        "it is preempted on a shared machine; wall: elapsed time")
    args = parser.parse_args()
    seeds = 1 if args.quick else args.seeds
    epochs, fine_tune = (2, 1) if args.quick else (4, 3)
    repeats = 3 if args.quick else 7
    measurer = deploy.LiteRTMeasurer(runs=30 if args.quick else 50, repeats=3, clock=args.clock)
    names = [n for n in args.models.split(",") if n]
    levels = {"cnn": deploy.latency.DEFAULT_LEVELS,
              "mobilenetv2": (1.0, 0.75, 0.5, 0.25) if args.quick else deploy.latency.DEFAULT_LEVELS}
    print(f"kprune.deploy latency benchmark: {'quick' if args.quick else 'full'}, seeds {seeds}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, {measurer!r}")

    t0 = time.perf_counter()
    models, lats = {}, {}
    for name in names:
        keras.utils.set_random_seed(0)
        models[name] = _build(name, args.alpha)
        t = time.perf_counter()
        lats[name] = deploy.LatencyModel(models[name], measurer=measurer, cache_dir=args.cache_dir,
                                         levels=levels[name])
        print(f"{name}: latency table of {len(lats[name].units)} layers, {lats[name].measured} new "
              f"measurements in {time.perf_counter() - t:.0f} s; dense {lats[name].dense_ms:.4f} ms")
    print("\n1. predicted vs measured end-to-end latency")
    prediction(models, lats, measurer, repeats)

    print(f"\n2. latency budgets: latency-aware allocation vs uniform ratio (bisection), fine-tuned "
          f"{fine_tune} epoch(s) after {epochs} dense epochs, {seeds} seed(s)")
    rows = []
    for name in names:
        rows += budgets(name, args.alpha, seeds, epochs, fine_tune, measurer, args.cache_dir, repeats,
                        levels[name])
    print(format_table(["model", "budget", "widths", "measured / budget", "<=1.05",
                        "accuracy mean (min-max)", "aware >= uniform"], rows))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
