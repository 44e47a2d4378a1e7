"""Benchmark: pruned accuracy, kprune next to tfmot, over many seeds.

Per seed, in this (Keras 3) process:

1. the offline digits, `kprune.data.load_mnist(online=False, seed=seed)`
   (4,000 train / 1,000 test);
2. the demo's small CNN (`kprune.cli.demo.build_cnn`) trained dense for 4
   epochs; its weights are then the starting point of every pruning run of
   that seed, on both sides;
3. kprune prunes those weights during `fit`, per-layer scope, with
   `kprune.cli.demo.SHORT_RECIPE` (`PolynomialDecay(0 -> s)` over the first 2/3
   of 4 epochs, 20 mask updates, Adam(1e-3), batch 64);
4. ONE tf_keras child process (`kprune.tfmot.reference`) gets the same
   weights, data, schedule and optimizer and runs tfmot 0.8's
   `prune_low_magnitude` + `UpdatePruningStep` for every sparsity of that
   seed.

Both sides see the batches in the same order: each epoch is one `fit(...,
shuffle=False)` call on the training set permuted by a permutation drawn
from the seed, so the paired difference (kprune - tfmot, same seed) measures
the libraries, not the shuffles.

Printed: per sparsity, each side's mean +- standard deviation over seeds, the
paired difference with its standard error and median, and how many seeds
kprune is ahead; kprune's Block(4, 1), 2:4 and global scope (90%); the demo's
recipe (`kprune.cli.demo.DEMO_RECIPE`) at 90% on 3 seeds, with tfmot on the same
recipe and a dense model trained for as long with the same learning rate
schedule for reference. Target: paired mean difference >= -1 s.e. at every
sparsity; the demo recipe at 90% <= 1 pp below dense.

`--mechanics` adds kprune with tfmot's mechanics switched on one at a time
(at 90% and 95%), to measure which of them moves accuracy:

* `previous-step`: kprune's timing before it adopted tfmot's: batch k
  (0-based) runs with the mask of schedule step k instead of k + 1 (tfmot
  increments `pruning_step` inside the train step before its mask update;
  kprune now counts the same way, `kprune.core.pruner`);
* `tfmot-remask`: tfmot's weight update: weights are multiplied by the
  mask at the start of every forward pass, pruned weights get their real
  gradient and keep one optimizer step until the next forward pass, so at
  a mask update they compete with that one-step value (regrowth);
* `forward-stored`: the forward pass uses the stored weights (no `w * mask`;
  the constraint keeps pruned weights at zero).

`--recipes` compares candidate recipes at 90% (3 seeds) and prints why
`DEMO_RECIPE` is the default.

Usage:
    python benchmarks/quality.py [--seeds N] [--first-seed K] [--quick] [--mechanics] [--recipes]
        [--sparsities S ...] [--save results.json]
    python benchmarks/quality.py --report results.json [more.json ...]

`--save` writes every result after each seed; `--report` reprints the
tables from one or more such files (seeds split over processes with
`--first-seed`, or extra seeds for the main table with `--sparsities`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import statistics
import sys
import tempfile
import time
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kprune  # noqa: E402
from kprune.cli import demo  # noqa: E402
from kprune.core.wrapping import find_wrappers  # noqa: E402
from kprune.core.schedules import PruningSchedule  # noqa: E402
from kprune.tfmot.reference import CHILD_PREAMBLE, TfmotUnavailable, run_tfmot_script  # noqa: E402
from kprune.utils.table import format_table  # noqa: E402

BATCH = 64
DENSE_EPOCHS = 4
SPARSITIES = (0.5, 0.8, 0.9, 0.95)
RECIPE_SEEDS = 3

# --------------------------------------------------------------------------
# The tfmot side (runs in a tf_keras child, one per seed)
# --------------------------------------------------------------------------

TFMOT_BODY = """
cfg = json.load(open(sys.argv[1]))
d = np.load(sys.argv[2])
L = tf_keras.layers


def build():
    layers = [L.Input(tuple(cfg["input_shape"]))]
    for cls, kwargs in cfg["arch"]:
        layers.append(getattr(L, cls)(**kwargs))
    return tf_keras.Sequential(layers)


x, y, xt, yt = d["x"], d["y"], d["xt"], d["yt"]
weights = [d[f"w{i}"] for i in range(int(d["n_weights"]))]
orders = [d[f"order{e}"] for e in range(int(d["n_orders"]))]
sk = tfmot.sparsity.keras
results = {}
for run in cfg["runs"]:
    t0 = __import__("time").perf_counter()
    tf_keras.utils.set_random_seed(0)
    model = build()
    model.set_weights(weights)
    s = run["schedule"]
    sched = sk.PolynomialDecay(
        initial_sparsity=s["initial_sparsity"], final_sparsity=s["final_sparsity"],
        begin_step=s["begin_step"], end_step=s["end_step"], power=s["power"], frequency=s["frequency"])
    pruned = sk.prune_low_magnitude(model, pruning_schedule=sched)
    lr = run["lr"]
    if run["decay_steps"]:
        lr = tf_keras.optimizers.schedules.CosineDecay(lr, run["decay_steps"], alpha=run["alpha"])
    pruned.compile(tf_keras.optimizers.Adam(lr),
                   tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    for e in range(run["epochs"]):
        pruned.fit(x[orders[e]], y[orders[e]], batch_size=cfg["batch_size"], epochs=1, shuffle=False,
                   verbose=0, callbacks=[sk.UpdatePruningStep()])
    acc = float(pruned.evaluate(xt, yt, verbose=0)[1])
    stripped = sk.strip_pruning(pruned)
    zeros = size = 0
    for layer in stripped.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is not None:
            k = kernel.numpy()
            zeros += int(k.size - np.count_nonzero(k))
            size += int(k.size)
    results[run["name"]] = {"accuracy": acc, "sparsity": zeros / size,
                            "seconds": __import__("time").perf_counter() - t0}
json.dump(results, open(sys.argv[3], "w"))
print("DONE", len(results))
"""

# Config keys of the CNN's layers that mean the same in tf_keras.
_ARCH_KEYS = ("name", "filters", "kernel_size", "strides", "padding", "activation", "units",
              "use_bias", "pool_size")


def tf_keras_arch(model):
    """The model's layers as `(class name, kwargs)` for the tf_keras twin."""
    arch = []
    for layer in model.layers:
        config = layer.get_config()
        arch.append([type(layer).__name__, {k: config[k] for k in _ARCH_KEYS if k in config}])
    return arch


def _lr_fields(recipe, steps_per_epoch):
    total, _, _ = recipe.steps(steps_per_epoch)
    return {"lr": recipe.learning_rate,
            "decay_steps": total if recipe.decay == "cosine" else 0,
            "alpha": recipe.final_lr_fraction}


def run_tfmot_seed(workdir, model, weights, train, test, orders, runs):
    """All tfmot runs of one seed in one child; {name: result dict}."""
    spe = steps_per_epoch(len(train[0]))
    cfg = {"input_shape": list(model.input_shape[1:]), "arch": tf_keras_arch(model),
           "batch_size": BATCH, "runs": []}
    for name, sparsity, recipe in runs:
        sched = recipe.schedule(sparsity, spe).get_config()
        cfg["runs"].append({"name": name, "epochs": recipe.prune_epochs, "schedule": sched,
                            **_lr_fields(recipe, spe)})
    cfg_path, in_path, out_path = (os.path.join(workdir, n) for n in ("cfg.json", "in.npz", "out.json"))
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)
    np.savez(in_path, x=train[0], y=train[1], xt=test[0], yt=test[1], n_weights=len(weights),
             n_orders=len(orders), **{f"w{i}": w for i, w in enumerate(weights)},
             **{f"order{e}": o for e, o in enumerate(orders)})
    run_tfmot_script(CHILD_PREAMBLE + TFMOT_BODY, [cfg_path, in_path, out_path], workdir, timeout=1800)
    with open(out_path) as f:
        return json.load(f)


# --------------------------------------------------------------------------
# tfmot's mechanics inside kprune (for --mechanics)
# --------------------------------------------------------------------------


class StepBehind(PruningSchedule):
    """A schedule seen one step later: kprune's timing before it adopted
    tfmot's (0-based batch k trained with the mask of step k instead of
    k + 1; `begin_step`'s update before the first batch either way).

    kprune now applies the update of step `t` before 0-based batch `t - 1`;
    this schedule moves every update `u` of `base` to step `u + 1`, with
    `base`'s sparsity at `u`, so it lands before batch `u`.
    """

    def __init__(self, base):
        self.base = base
        super().__init__(begin_step=0, end_step=-1, frequency=base.frequency)

    def should_prune(self, step):
        return step >= 1 and self.base.should_prune(int(step) - 1)

    def next_update(self, step):
        u = self.base.next_update(max(int(step) - 1, 0))
        return None if u is None else u + 1

    def sparsity(self, step):
        return self.base.sparsity(max(int(step) - 1, 0))

    @property
    def final_sparsity(self):
        return self.base.final_sparsity

    def get_config(self):
        return {"base": self.base.get_config()}


def _remask_then_forward(self, inputs=None, *args, training=None, **kwargs):
    # tfmot's order: weights *= mask, then the layer reads the stored weights
    # (so pruned weights get their real gradient and one optimizer step).
    for var, mask in zip(self.prunable_weights, self.masks):
        var.assign(var * keras.ops.cast(mask, var.dtype))
    if getattr(self.layer, "_call_has_training_arg", False):
        kwargs["training"] = training
    return self.layer(inputs, *args, **kwargs)


def _forward_stored(self, inputs=None, *args, training=None, **kwargs):
    # The stored weights, no `w * mask` (pruned ones are zero by the constraint).
    if getattr(self.layer, "_call_has_training_arg", False):
        kwargs["training"] = training
    return self.layer(inputs, *args, **kwargs)


@contextlib.contextmanager
def mechanics(model, remask=False, forward_stored=False):
    """Switches a pruned model's wrappers to tfmot's weight update or to a
    stored-weights forward pass, for the duration of the block."""
    wrappers = find_wrappers(model)
    saved = []
    for w in wrappers:
        if remask:
            w.call = types.MethodType(_remask_then_forward, w)
            for var in w.prunable_weights:
                saved.append((var, var.constraint))
                var.constraint = var.constraint.inner  # no re-masking after the step
        elif forward_stored:
            w.call = types.MethodType(_forward_stored, w)
    try:
        yield
    finally:
        for var, constraint in saved:
            var.constraint = constraint
        for w in wrappers:
            if remask:  # tfmot re-masks at epoch end, so checkpoints are sparse
                for var, mask in zip(w.prunable_weights, w.masks):
                    var.assign(var * keras.ops.cast(mask, var.dtype))
            w.__dict__.pop("call", None)


# --------------------------------------------------------------------------
# The kprune side (in this process)
# --------------------------------------------------------------------------


def steps_per_epoch(n):
    return int(math.ceil(n / BATCH))


def epoch_orders(seed, n, epochs):
    """One permutation of the training set per epoch, shared by both sides."""
    rng = np.random.default_rng(1_000_003 + seed)
    return [rng.permutation(n) for _ in range(epochs)]


def kernel_sparsity(model):
    zeros = size = 0
    for w in model.weights:
        if w.path.endswith("kernel"):
            k = keras.ops.convert_to_numpy(w)
            zeros += int(k.size - np.count_nonzero(k))
            size += int(k.size)
    return zeros / size


def compile_cnn(model, optimizer=None):
    model.compile(optimizer or keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])


def train_dense(seed, train, test):
    keras.utils.set_random_seed(seed)
    model = demo.build_cnn()
    compile_cnn(model)
    for order in epoch_orders(seed, len(train[0]), DENSE_EPOCHS):
        model.fit(train[0][order], train[1][order], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    return model, float(model.evaluate(test[0], test[1], verbose=0)[1])


def run_kprune(weights, train, test, orders, sparsity, recipe, granularity=None, scope="layer",
               variant="default", prune=True, ignore=None):
    """One pruning run from `weights`; returns {"accuracy", "sparsity", "seconds"}."""
    t0 = time.perf_counter()
    model = demo.build_cnn()
    model.set_weights(weights)
    spe = steps_per_epoch(len(train[0]))
    if prune:
        schedule = recipe.schedule(sparsity, spe)
        if variant == "previous-step":
            schedule = StepBehind(schedule)
        model = kprune.prune_low_magnitude(model, schedule, granularity=granularity, scope=scope, ignore=ignore)
    compile_cnn(model, recipe.optimizer(spe))
    remask = variant in ("tfmot-remask", "tfmot-both")
    with mechanics(model, remask=remask, forward_stored=variant == "forward-stored"):
        for e in range(recipe.prune_epochs):
            model.fit(train[0][orders[e]], train[1][orders[e]], batch_size=BATCH, epochs=1,
                      shuffle=False, verbose=0, callbacks=[kprune.PruningCallback()] if prune else [])
    acc = float(model.evaluate(test[0], test[1], verbose=0)[1])
    stripped = kprune.strip_pruning(model) if prune else model
    return {"accuracy": acc, "sparsity": kernel_sparsity(stripped), "seconds": time.perf_counter() - t0}


# --------------------------------------------------------------------------
# Statistics and printing
# --------------------------------------------------------------------------


def pct(v):
    return 100.0 * v


def mean_sd(values):
    values = [pct(v) for v in values]
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.mean(values):.2f} +- {sd:.2f}"


def paired(a, b):
    """(mean, s.e., median) of a - b in pp, and how many a > b."""
    d = [pct(x - y) for x, y in zip(a, b)]
    se = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
    return statistics.mean(d), se, statistics.median(d), sum(x > 0 for x in d), sum(x < 0 for x in d)


def fmt_paired(a, b):
    m, se, med, ahead, behind = paired(a, b)
    return f"{m:+.2f} +- {se:.2f} ({med:+.2f})", f"{ahead}/{behind}", m, se


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

_R = demo.PruningRecipe
RECIPE_CANDIDATES = {
    "4 ep, ramp 2/3, constant (SHORT_RECIPE)": demo.SHORT_RECIPE,
    "6 ep, ramp 1/2, constant": _R(6, 1 / 2),
    "8 ep, ramp 1/2, constant": _R(8, 1 / 2),
    "8 ep, ramp 1/3, constant": _R(8, 1 / 3),
    "8 ep, ramp 1/2, cosine to 0.1": _R(8, 1 / 2, decay="cosine", final_lr_fraction=0.1),
    "12 ep, ramp 1/3, constant (DEMO_RECIPE)": demo.DEMO_RECIPE,
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=8, help="seeds per sparsity (default 8)")
    parser.add_argument("--first-seed", type=int, default=0, help="first seed (to split a run over processes)")
    parser.add_argument("--quick", action="store_true", help="2 seeds, 50%% and 90%%, 1 recipe seed")
    parser.add_argument("--mechanics", action="store_true", help="also tfmot's mechanics in kprune")
    parser.add_argument("--recipes", action="store_true", help="also candidate recipes at 90%%")
    parser.add_argument("--no-tfmot", action="store_true", help="kprune only")
    parser.add_argument("--sparsities", type=float, nargs="+",
                        help="only these sparsities, short recipe, kprune vs tfmot (no other rows)")
    parser.add_argument("--save", help="write every result (JSON) to this file after each seed")
    parser.add_argument("--report", nargs="+", help="only print the tables of results saved with --save "
                        "(several files: their seeds together)")
    args = parser.parse_args(argv)
    if args.report:
        print_report(*load_results(args.report))
        return 0
    if args.seeds < 2:
        parser.error(f"--seeds must be >= 2 (a standard error needs two), got {args.seeds}")
    seeds = list(range(args.first_seed, args.first_seed + (2 if args.quick else args.seeds)))
    sparsities = (0.5, 0.9) if args.quick else SPARSITIES
    if args.sparsities:
        bad = [s for s in args.sparsities if not 0.0 < s < 1.0]
        if bad:
            parser.error(f"--sparsities must be in (0, 1), got {bad}")
        sparsities = tuple(args.sparsities)
    recipe_seeds = [] if args.sparsities else [s for s in range(1 if args.quick else RECIPE_SEEDS) if s in seeds]
    mech_sparsities = [s for s in (0.9, 0.95) if s in sparsities]
    variants = ("previous-step", "tfmot-remask", "forward-stored")
    short = demo.SHORT_RECIPE
    t_start = time.perf_counter()
    res = {}  # (kind, key) -> {seed: result}
    dense = {}
    tfmot_ok, tfmot_why = not args.no_tfmot, "--no-tfmot"
    mech_seconds = recipe_seconds = 0.0

    def put(kind, key, seed, r):
        res.setdefault((kind, key), {})[seed] = r

    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            t_seed = time.perf_counter()
            (xtr, ytr), (xte, yte), _ = kprune.data.load_mnist(online=False, seed=seed)
            train, test = (xtr, ytr), (xte, yte)
            model, dense[seed] = train_dense(seed, train, test)
            weights = model.get_weights()
            max_epochs = max([short.prune_epochs, demo.DEMO_RECIPE.prune_epochs]
                             + [r.prune_epochs for r in RECIPE_CANDIDATES.values()])
            orders = epoch_orders(10_000 + seed, len(xtr), max_epochs)
            runs = [(f"short/{s}", s, short) for s in sparsities]
            if seed in recipe_seeds:
                runs.append(("demo/0.9", 0.9, demo.DEMO_RECIPE))
            if tfmot_ok:
                try:
                    for name, r in run_tfmot_seed(tmp, model, weights, train, test, orders, runs).items():
                        put("tfmot", name, seed, r)
                except TfmotUnavailable as e:
                    tfmot_ok, tfmot_why = False, str(e)
            for name, s, recipe in runs:
                put("kprune", name, seed, run_kprune(weights, train, test, orders, s, recipe))
            if not args.sparsities and (not args.quick or seed == seeds[0]):
                put("kprune", "block/0.9", seed, run_kprune(weights, train, test, orders, 0.9, short,
                                                            granularity=kprune.Block((4, 1))))
                put("kprune", "nm/0.5", seed, run_kprune(weights, train, test, orders, 0.5, short,
                                                         granularity=kprune.NM(2, 4),
                                                         ignore=["conv1"]))
                put("kprune", "global/0.9", seed, run_kprune(weights, train, test, orders, 0.9, short,
                                                             scope="global"))
            if seed in recipe_seeds:
                put("dense", "demo", seed, run_kprune(weights, train, test, orders, 0.0, demo.DEMO_RECIPE,
                                                      prune=False))
                if args.recipes:
                    t_rec = time.perf_counter()
                    for label, recipe in RECIPE_CANDIDATES.items():
                        put("recipe", label, seed, run_kprune(weights, train, test, orders, 0.9, recipe))
                    recipe_seconds += time.perf_counter() - t_rec
            if args.mechanics:
                t_mech = time.perf_counter()
                for s in mech_sparsities:
                    for v in variants:
                        put(v, f"short/{s}", seed, run_kprune(weights, train, test, orders, s, short, variant=v))
                mech_seconds += time.perf_counter() - t_mech
            print(f"seed {seed}: dense {pct(dense[seed]):.2f}%, "
                  + ", ".join(f"{k[0]} {k[1]} {pct(v[seed]['accuracy']):.1f}"
                              for k, v in res.items() if seed in v and k[1].startswith("short/0.9"))
                  + f"  ({time.perf_counter() - t_seed:.0f} s)", flush=True)
            if args.save:
                with open(args.save, "w") as f:
                    json.dump({"dense": dense, "results": {f"{k[0]}|{k[1]}": v for k, v in res.items()}}, f)

    total = time.perf_counter() - t_start
    print_report(res, dense, seeds, sparsities, recipe_seeds, mech_sparsities, variants, tfmot_ok, tfmot_why,
                 args.recipes, args.mechanics)
    print(f"\ntotal time {total / 60:.1f} min ({(total - mech_seconds - recipe_seconds) / 60:.1f} min without "
          f"--mechanics ({mech_seconds / 60:.1f}) and --recipes ({recipe_seconds / 60:.1f}))")
    return 0


def load_results(paths):
    """Results written by `--save` (one or more files), as `print_report` arguments."""
    dense, res = {}, {}
    for path in paths:
        with open(path) as f:
            saved = json.load(f)
        dense.update({int(k): v for k, v in saved["dense"].items()})
        for name, per_seed in saved["results"].items():
            kind, key = name.split("|")
            res.setdefault((kind, key), {}).update({int(k): v for k, v in per_seed.items()})
    seeds = sorted(dense)
    sparsities = sorted(float(k[1].split("/")[1]) for k in res if k[0] == "kprune" and k[1].startswith("short/"))
    recipe_seeds = sorted(res.get(("kprune", "demo/0.9"), {}))
    variants = tuple(v for v in ("previous-step", "tfmot-remask", "forward-stored") if any(k[0] == v for k in res))
    mech_sparsities = sorted({float(k[1].split("/")[1]) for k in res if k[0] in variants})
    tfmot_ok = any(k[0] == "tfmot" for k in res)
    recipes = any(k[0] == "recipe" for k in res)
    return (res, dense, seeds, sparsities, recipe_seeds, mech_sparsities, variants, tfmot_ok,
            "not in the saved results", recipes, bool(variants))


def print_report(res, dense, seeds, sparsities, recipe_seeds, mech_sparsities, variants, tfmot_ok, tfmot_why,
                 recipes, mechanics):
    """Prints every table of the benchmark from the collected results."""
    short = demo.SHORT_RECIPE

    def acc(kind, key, over=seeds):
        return [res[(kind, key)][s]["accuracy"] for s in over]

    def spars(kind, key):
        return statistics.mean(r["sparsity"] for r in res[(kind, key)].values())

    print(f"\nkprune {kprune.__version__} vs tfmot (tf_keras child), small CNN "
          f"({demo.build_cnn().count_params():,} parameters), offline digits 4,000/1,000, "
          f"dense {DENSE_EPOCHS} epochs, then {short.prune_epochs} pruning epochs: PolynomialDecay(0 -> s) "
          f"over the first 2/3, 20 mask updates, Adam(1e-3), batch {BATCH}, per-layer scope; "
          f"same weights, data and batch order on both sides. Test accuracy, %, mean +- sd over seeds.\n")
    if not tfmot_ok:
        print(f"tfmot column missing: {tfmot_why}\n")
    header = ["sparsity", "seeds", "dense", "kprune", "tfmot", "kprune - tfmot: mean +- s.e. (median)",
              "kprune ahead/behind", ">= -1 s.e.", "achieved (kprune / tfmot)"]
    rows, verdicts = [], []
    for s in sparsities:
        key = f"short/{s}"
        over = sorted(set(res[("kprune", key)]) & set(res.get(("tfmot", key), res[("kprune", key)])))
        kp = acc("kprune", key, over)
        row = [f"{s:.0%}", len(over), mean_sd([dense[i] for i in over]), mean_sd(kp)]
        if tfmot_ok:
            tf = acc("tfmot", key, over)
            text, ahead, m, se = fmt_paired(kp, tf)
            ok = m >= -se
            verdicts.append(ok)
            row += [mean_sd(tf), text, ahead, "yes" if ok else "NO",
                    f"{pct(spars('kprune', key)):.2f} / {pct(spars('tfmot', key)):.2f}"]
        else:
            row += ["-", "-", "-", "-", f"{pct(spars('kprune', key)):.2f}"]
        rows.append(row)
    print(format_table(header, rows))

    extra = [("block/0.9", "Block(4, 1), 90%", "short/0.9"), ("nm/0.5", "2:4 (50%; conv1, 1 input channel, dense)", "short/0.5"),
             ("global/0.9", "global scope, 90%", "short/0.9")]
    rows = []
    for key, label, ref in extra:
        if ("kprune", key) not in res:
            continue
        over = sorted(res[("kprune", key)])
        kp = acc("kprune", key, over)
        text, ahead, _, _ = fmt_paired(kp, acc("kprune", ref, over))
        rows.append([label, len(over), mean_sd([dense[s] for s in over]), mean_sd(kp),
                     f"{pct(spars('kprune', key)):.2f}", text])
    print("\nkprune, other granularities and scopes (same recipe):\n")
    print(format_table(["pruning", "seeds", "dense", "kprune", "achieved sparsity",
                        "minus unstructured per-layer at the same sparsity"], rows))

    if recipe_seeds:
        r = demo.DEMO_RECIPE
        kp = acc("kprune", "demo/0.9", recipe_seeds)
        dense_r = [dense[s] for s in recipe_seeds]
        change = statistics.mean(pct(a - b) for a, b in zip(kp, dense_r))
        print(f"\ndemo recipe (kprune.cli.demo.DEMO_RECIPE: {r.prune_epochs} pruning epochs, ramp over the first "
              f"{r.ramp_fraction:.2f}, Adam({r.learning_rate:g}) {r.decay or 'constant'} decay) at 90%, "
              f"{len(recipe_seeds)} seeds:\n")
        rows = [["dense (4 epochs)", mean_sd(dense_r), ""],
                [f"dense + {r.prune_epochs} more epochs, same lr schedule", mean_sd(acc("dense", "demo", recipe_seeds)),
                 fmt_paired(acc("dense", "demo", recipe_seeds), dense_r)[0]],
                ["kprune 90%", mean_sd(kp), fmt_paired(kp, dense_r)[0]]]
        if tfmot_ok:
            tf = acc("tfmot", "demo/0.9", recipe_seeds)
            rows.append(["tfmot 90%", mean_sd(tf), fmt_paired(tf, dense_r)[0]])
        print(format_table(["model", "accuracy", "minus dense (4 epochs): mean +- s.e. (median)"], rows))
        print(f"\ndemo recipe at 90%: {change:+.2f} pp against dense (target >= -1.00): "
              f"{'met' if change >= -1.0 else 'MISSED'}")
        if tfmot_ok:
            text, ahead, m, se = fmt_paired(kp, tf)
            print(f"demo recipe at 90%, kprune - tfmot: {text}, kprune ahead/behind {ahead}")

    if recipes:
        rows = []
        for label, recipe in RECIPE_CANDIDATES.items():
            a = acc("recipe", label, recipe_seeds)
            rows.append([label, mean_sd(a), fmt_paired(a, dense_r)[0]])
        print(f"\ncandidate recipes at 90%, kprune, {len(recipe_seeds)} seeds:\n")
        print(format_table(["recipe", "accuracy", "minus dense: mean +- s.e. (median)"], rows))

    if mechanics:
        rows = []
        for s in mech_sparsities:
            key = f"short/{s}"
            for v in variants:
                over = sorted(res[(v, key)])
                a, base = acc(v, key, over), acc("kprune", key, over)
                row = [f"{s:.0%}", v, len(over), mean_sd(a), fmt_paired(a, base)[0]]
                row.append(fmt_paired(a, acc("tfmot", key, over))[0] if tfmot_ok else "-")
                same = sum(x == y for x, y in zip(a, base))
                same_tf = sum(x == y for x, y in zip(a, acc("tfmot", key, over))) if tfmot_ok else "-"
                row.append(f"{same} / {same_tf}")
                rows.append(row)
        print("\nkprune with tfmot's mechanics, one at a time (short recipe):\n")
        print(format_table(["sparsity", "variant", "seeds", "accuracy", "minus kprune: mean +- s.e. (median)",
                            "minus tfmot", "seeds identical to kprune / tfmot"], rows))

    if tfmot_ok:
        print("kprune at least as accurate as tfmot (paired mean >= -1 s.e.) at every sparsity: "
              f"{'yes' if all(verdicts) else 'NO'}")


if __name__ == "__main__":
    sys.exit(main())
