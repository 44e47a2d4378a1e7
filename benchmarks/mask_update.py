"""Benchmark: one global mask update over a 25M-parameter model.

Times kprune's real update path (`Pruner.update_masks`: read weights, |w|
scores, `masking.compute_masks`, `PruneWrapper.assign_masks`) on

* `keras.applications.ResNet50(weights=None)` (25.6M parameters, 54 pruned
  kernels); targets: <= 0.1 s, and >= 2.5x faster than a global `np.sort`
  threshold over the same weights in the same run;
* three plain conv stacks with the same number of kernels (54) and about
  1M, 5M and 25M pruned parameters, to show how the cost scales;

and, in the same run and on the same weights, a full per-tensor sort
reference: tfmot's method, which sorts each whole tensor
(`tf.math.top_k(|w|, k=size)`), takes the k-th value as threshold and builds
`|w| >= threshold`, then assigns masks and masked weights the same way.
A global threshold by full sort (`np.sort` over all weights) is timed as a
second reference for the global update.

Every timing is the median of `--repeats` runs (5), in steady state: masks
are applied once before timing, so about 80% of the scores are exact zeros,
as they are during training. kprune's update is timed three ways:

* cold: a fresh `Pruner` and no memory of the last threshold (the first
  update of a model, or `kprune.update_masks` in a loop on a new model);
* incremental: the same `Pruner` after a drift of the kept weights (an
  optimizer step's worth, applied outside the timed region): the selection
  starts at the last threshold (`masking.SelectionMemo`); this is what a
  training loop runs;
* global scope and layer scope.

Every mask is assigned by the model's one compiled assign (`MaskAssigner`),
the references too, so the comparison is of the selection. The load
average is printed: on a shared machine the timings are noisy.

Usage:
    python benchmarks/mask_update.py [--repeats 5] [--sparsity 0.8] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import kprune  # noqa: E402
from kprune.core import masking  # noqa: E402
from kprune.core.wrapper import model_assigner  # noqa: E402
from kprune.core.wrapping import find_wrappers  # noqa: E402


def conv_stack(width, n_layers=53, name="stack"):
    """54 kernels: 53 3x3 convs of `width` channels and a Dense head."""
    inputs = keras.Input((4, 4, width))
    x = inputs
    for i in range(n_layers):
        x = keras.layers.Conv2D(width, 3, padding="same", name=f"conv{i}")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(1000, name="head")(x)
    return keras.Model(inputs, outputs, name=name)


def median_of(fn, repeats, before=None):
    """Median seconds of `fn()` over `repeats` runs; `before()` runs untimed
    before each."""
    times = []
    for _ in range(repeats):
        if before is not None:
            before()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def drift(wrappers, rng, scale=1e-3):
    """An optimizer step's worth of change: kept weights move a little,
    pruned ones stay zero."""
    for w in wrappers:
        for v, m in zip(w.prunable_weights, w.masks):
            value = keras.ops.convert_to_numpy(v)
            noise = rng.standard_normal(value.shape, np.float32) * (scale * float(np.std(value)) + 1e-12)
            v.assign((value + noise) * keras.ops.convert_to_numpy(m))


def assign_all(wrappers, masks):
    """Assigns one mask per pruned weight with the model's one MaskAssigner."""
    i, grouped = 0, []
    for w in wrappers:
        n = len(w.prunable_weights)
        grouped.append(masks[i:i + n])
        i += n
    model_assigner(wrappers)(grouped, 0)


def tfmot_style_update(wrappers, sparsity):
    """tfmot's per-tensor method: a full sort of each tensor, then a threshold."""
    all_masks = []
    for w in wrappers:
        masks = []
        for var in w.prunable_weights:
            value = var.value
            abs_w = tf.math.abs(value)
            n = int(tf.size(abs_w))
            k = max(int(round(n * (1 - sparsity))), 1)
            top, idx = tf.math.top_k(tf.reshape(abs_w, [-1]), k=n)
            threshold = top[k - 1]
            mask = tf.math.logical_or(
                abs_w >= threshold,
                tf.reshape(tf.one_hot(idx[k - 1], n, True, False, dtype=tf.bool), abs_w.shape),
            )
            masks.append(mask.numpy())
        all_masks.extend(masks)
    assign_all(wrappers, all_masks)


def sort_global_threshold(wrappers, sparsity):
    """A global threshold by a full np.sort over all weights (reference)."""
    values = [keras.ops.convert_to_numpy(v) for w in wrappers for v in w.prunable_weights]
    flat = np.concatenate([np.abs(v).reshape(-1) for v in values])
    k = masking.kept_count(flat.size, sparsity)
    threshold = np.sort(flat)[flat.size - k]
    assign_all(wrappers, [np.abs(v) >= threshold for v in values])


def run(model, sparsity, repeats):
    global_model = kprune.prune_low_magnitude(model, kprune.ConstantSparsity(sparsity), scope="global")
    layer_model = kprune.prune_low_magnitude(model, kprune.ConstantSparsity(sparsity), scope="layer")
    params = sum(int(np.prod(v.shape)) for w in find_wrappers(global_model)
                 for v in w.prunable_weights)
    g, lay = kprune.Pruner(global_model), kprune.Pruner(layer_model)
    g.update_masks(0)  # steady state: pruned weights are exact zeros
    lay.update_masks(0)
    wrappers = lay.wrappers
    rng = np.random.default_rng(0)

    def cold(model):
        # A new Pruner, and the model forgets its last thresholds.
        model_assigner(kprune.Pruner(model).wrappers).memo = masking.SelectionMemo()
        kprune.Pruner(model).update_masks(0)

    out = {
        "params": params,
        "kprune_global_cold": median_of(lambda: cold(global_model), repeats),
        "kprune_global": median_of(lambda: g.update_masks(0), repeats,
                                   before=lambda: drift(g.wrappers, rng)),
        "kprune_layer": median_of(lambda: lay.update_masks(0), repeats,
                                  before=lambda: drift(wrappers, rng)),
        "tfmot_sort_layer": median_of(lambda: tfmot_style_update(wrappers, sparsity), repeats),
        "np_sort_global": median_of(lambda: sort_global_threshold(g.wrappers, sparsity), repeats),
    }
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sparsity", type=float, default=0.8)
    parser.add_argument("--quick", action="store_true",
                        help="the ~1M and ~25M stacks and ResNet50 (no ~5M)")
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    print(f"cpu cores: {os.cpu_count()}, numpy {np.__version__}, tensorflow {tf.__version__}, "
          f"keras {keras.__version__}, sparsity {args.sparsity}, median of {args.repeats}")
    print(f"load average at start: {_load()}")
    models = [
        ("conv_stack ~1M", lambda: conv_stack(44, name="stack_1m")),
        ("conv_stack ~5M", lambda: conv_stack(101, name="stack_5m")),
        ("conv_stack ~25M", lambda: conv_stack(228, name="stack_25m")),
        ("ResNet50", lambda: keras.applications.ResNet50(weights=None)),
    ]
    if args.quick:
        models.pop(1)
    header = (f"{'model':<17}{'pruned params':>14}{'global cold':>13}{'global incr':>13}"
              f"{'layer incr':>12}{'tfmot sort':>12}{'np.sort glob':>14}{'tfmot/kp layer':>16}"
              f"{'sort/kp glob':>14}")
    print(header)
    rows = []
    for name, build in models:
        r = run(build(), args.sparsity, args.repeats)
        rows.append((name, r))
        print(f"{name:<17}{r['params']:>14,}{r['kprune_global_cold']:>12.3f}s"
              f"{r['kprune_global']:>12.3f}s{r['kprune_layer']:>11.3f}s"
              f"{r['tfmot_sort_layer']:>11.3f}s{r['np_sort_global']:>13.3f}s"
              f"{r['tfmot_sort_layer'] / r['kprune_layer']:>15.1f}x"
              f"{r['np_sort_global'] / r['kprune_global']:>13.1f}x", flush=True)
    stacks = [r for n, r in rows if n.startswith("conv_stack")]
    base = stacks[0]
    print("\nscaling of the kprune global update (conv stacks, relative to ~1M):")
    for r in stacks:
        print(f"  {r['params'] / 1e6:6.2f}M params: x{r['params'] / base['params']:5.1f} params, "
              f"cold x{r['kprune_global_cold'] / base['kprune_global_cold']:5.1f} time "
              f"({1e9 * r['kprune_global_cold'] / r['params']:.1f} ns/param), "
              f"incremental x{r['kprune_global'] / base['kprune_global']:5.1f} time "
              f"({1e9 * r['kprune_global'] / r['params']:.1f} ns/param)")
    resnet = rows[-1][1]
    print(f"\nload average at end: {_load()}")
    for label, key in (("incremental (in training)", "kprune_global"),
                       ("cold (first update)", "kprune_global_cold")):
        t = resnet[key]
        ratio_sort = resnet["np_sort_global"] / t
        print(f"ResNet50 global mask update, {label}: {t:.3f} s "
              f"(target <= 0.1 s: {'PASS' if t <= 0.1 else 'MISS'}); "
              f"{ratio_sort:.2f}x faster than a global np.sort threshold "
              f"(target >= 2.5x: {'PASS' if ratio_sort >= 2.5 else 'MISS'})")
    ratio_layer = resnet["kprune_global"] / resnet["kprune_layer"]
    print(f"  vs kprune's per-layer update: global takes {ratio_layer:.2f}x its time")
    big = stacks[-1]
    for label, key in (("incremental", "kprune_global"), ("cold", "kprune_global_cold")):
        scale = (big[key] / base[key]) / (big["params"] / base["params"])
        print(f"  scaling 1M -> 25M, {label}: time grows {scale:.2f}x as fast as the parameter "
              f"count (1.0 = linear)")


def _load():
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min) on {os.cpu_count()} CPUs"


if __name__ == "__main__":
    main()
