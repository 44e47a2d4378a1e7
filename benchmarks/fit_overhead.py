"""model.fit step time, plain vs pruned, on the same model in one run.

Two models: a ~0.54M-parameter MLP (784-512-256-10) and the demo's small CNN
(~0.11M parameters, 28x28x1). For each, three variants are timed, interleaved
round by round so machine noise hits them alike:

* plain: the unwrapped model;
* pruned, masks updated every 100 steps (`frequency=100`);
* pruned, masks updated every step (`frequency=1`).

Both are timed with Keras' CPU default (no XLA) and with `jit_compile=True`
(TensorFlow only). Each variant trains `--steps` steps per round after a
warm-up epoch (tracing), in `--rounds` rounds (>= 5) whose variant order
rotates; the ratio reported is the median over rounds of pruned / plain in
the same round, in wall time and in the process's CPU time (all threads),
which a loaded machine's preemption does not inflate. The load average is
printed. Targets: <= 1.03x at frequency 100, <= 1.25x at frequency 1; PASS or
MISS is printed for each clock (a MISS is reported, never a failure).

The decomposition (CPU time) says where the pruned step's extra time goes:
one mask update in training (a train step between updates, so the
threshold moves as in `fit`; median of 15), split into reading |w|, the
selection and the one compiled assign, and, what remains of the
frequency-100 overhead, the per-step constraint `where(mask, w, 0)` after
the optimizer update (the forward pass runs on the stored weights and costs
nothing extra). The mechanism of each backend is printed first (see
docs/performance.md).

`--backends tensorflow,jax,torch` runs each backend in its own process
(`--python jax=/path/to/python` picks an interpreter with that backend) and
ends with a cross-backend table: the same weights, pruned by each backend's
`Pruner.update_masks` at the same step, give identical masks (a hash of
every mask per backend).

    python benchmarks/fit_overhead.py [--rounds 5] [--steps 100] [--batch 128] [--quick]
    python benchmarks/fit_overhead.py --backends tensorflow,jax,torch \
        --python jax=.venv-jax/bin/python --python torch=.venv-torch/bin/python
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kprune  # noqa: E402
from kprune import backend  # noqa: E402
from kprune.cli.demo import build_cnn  # noqa: E402
from kprune.core import masking  # noqa: E402
from kprune.core.wrapper import model_assigner  # noqa: E402


def build_mlp():
    return keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(512, activation="relu"),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(10),
        ],
        name="mlp",
    )


#: Two clocks: wall time, and the CPU time of this process (all its
#: threads), which a loaded machine's preemption does not inflate.
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


class _EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds = {c: [] for c in CLOCKS}

    def on_epoch_begin(self, epoch, logs=None):
        self._t = {c: clock() for c, clock in CLOCKS.items()}

    def on_epoch_end(self, epoch, logs=None):
        for c, clock in CLOCKS.items():
            self.seconds[c].append(clock() - self._t[c])


def _variant(base, frequency, jit):
    model = keras.models.clone_model(base)
    model.set_weights(base.get_weights())
    callbacks = []
    if frequency is not None:
        model = kprune.prune_low_magnitude(model, kprune.ConstantSparsity(0.8, frequency=frequency))
        callbacks.append(kprune.PruningCallback())
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit,
    )
    return model, callbacks


def bench(name, base, x, y, batch, steps, rounds, jit=False):
    variants = {"plain": None, "pruned f=100": 100, "pruned f=1": 1}
    built = {k: _variant(base, f, jit) for k, f in variants.items()}
    n = batch * steps
    for model, cbs in built.values():  # warm-up: tracing and first mask update
        model.fit(x[:n], y[:n], batch_size=batch, epochs=1, verbose=0, callbacks=cbs)
    per_step = {c: {k: [] for k in variants} for c in CLOCKS}
    order = list(variants)
    for r in range(rounds):
        # Interleaved, and the order rotates, so load changes hit all alike.
        for k in order[r % 3:] + order[:r % 3]:
            model, cbs = built[k]
            timer = _EpochTimer()
            model.fit(x[:n], y[:n], batch_size=batch, epochs=1, verbose=0, callbacks=cbs + [timer])
            for c in CLOCKS:
                per_step[c][k].append(timer.seconds[c][0] / steps)
    print(f"\n{name}: {base.count_params():,} params, batch {batch}, {steps} steps x {rounds} "
          f"interleaved rounds{', jit_compile=True (XLA)' if jit is True else ''}; load {_load()}")
    ratios = {}
    for c in CLOCKS:
        med = {k: statistics.median(v) for k, v in per_step[c].items()}
        # The ratio of each round's runs (interleaved pairs), then the median.
        ratios[c] = {k: statistics.median(a / b for a, b in zip(per_step[c][k], per_step[c]["plain"]))
                     for k in variants}
        print(f"  {c} time:")
        for k in variants:
            spread = f"{1e3 * min(per_step[c][k]):.3f}-{1e3 * max(per_step[c][k]):.3f}"
            print(f"    {k:<13} {1e3 * med[k]:7.3f} ms/step (min-max {spread})  "
                  f"median of round ratios {ratios[c][k]:.3f}x (ratio of medians "
                  f"{med[k] / med['plain']:.3f}x)")
        if c == "cpu":
            cpu_med = med
    parts = decompose(built["pruned f=1"][0], x[:batch], y[:batch])
    f1 = cpu_med["pruned f=1"] - cpu_med["plain"]
    constraint = cpu_med["pruned f=100"] - cpu_med["plain"] - parts["update"] / 100
    print(f"  decomposition of the f=1 overhead (CPU time), {1e3 * f1:+.3f} ms/step:")
    print(f"    one mask update {1e3 * parts['update']:.3f} ms "
          f"({1e9 * parts['update'] / max(1, parts['weights']):.1f} ns/pruned weight) = "
          f"read |w| {1e3 * parts['read']:.3f} + select {1e3 * parts['select']:.3f} + "
          f"assign {1e3 * parts['assign']:.3f} + bookkeeping "
          f"{1e3 * (parts['update'] - parts['read'] - parts['select'] - parts['assign']):+.3f} ms")
    print(f"    per-step constraint where(mask, w, 0) ~{1e3 * constraint:+.3f} ms "
          f"(f=100 overhead minus update/100); callback and rest "
          f"~{1e3 * (f1 - parts['update'] - constraint):+.3f} ms")
    return ratios


def decompose(model, xb, yb, repeats=15):
    """Medians of one mask update in training (a train step between each,
    untimed, so the threshold moves as it does in `fit`), and of its parts:
    reading |w|, the selection (`masking.compute_masks` with the model's
    memo), and the one compiled assign."""
    pruner = kprune.Pruner(model).start()
    wrappers = pruner.wrappers
    assigner = model_assigner(wrappers)
    sparsity = float(wrappers[0].pruning_schedule.sparsity(1))
    layouts = {(i, j): w.layouts[j] for i, w in enumerate(wrappers)
               for j in range(len(w.prunable_weights))}
    times = {"update": [], "read": [], "select": [], "assign": []}
    clock = CLOCKS["cpu"]
    for _ in range(repeats):
        model.train_on_batch(xb, yb)
        t0 = clock()
        pruner.update_masks()
        times["update"].append(clock() - t0)
        model.train_on_batch(xb, yb)
        t0 = clock()
        scores = {(i, j): np.abs(backend.read_numpy(v)) for i, w in enumerate(wrappers)
                  for j, v in enumerate(w.prunable_weights)}
        t1 = clock()
        masks = masking.compute_masks(scores, sparsity, granularity=wrappers[0].granularity,
                                      layouts=layouts, memo=assigner.memo)
        t2 = clock()
        assigner([[masks[(i, j)] for j in range(len(w.prunable_weights))]
                  for i, w in enumerate(wrappers)], pruner.current_step)
        t3 = clock()
        times["read"].append(t1 - t0)
        times["select"].append(t2 - t1)
        times["assign"].append(t3 - t2)
    pruner.stop()
    out = {k: statistics.median(v) for k, v in times.items()}
    out["weights"] = _pruned_params(model)
    return out


def _load():
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min, {os.cpu_count()} CPUs)"


#: What runs a frequency-1 mask update, per backend (see docs/performance.md).
MECHANISM = {
    "tensorflow": "incremental selection on the host between steps (numpy: count above a band "
                  "around the last threshold, partition the band), then ONE tf.function assign "
                  "per model (traced once); the constraint where(mask, w, 0) runs inside the "
                  "compiled train step (inside the XLA cluster with jit_compile=True)",
    "jax": "incremental selection on the host between steps (numpy), eager assigns after the "
           "callback's state sync; the constraint runs inside the jitted train step",
    "torch": "incremental selection on the host between steps (numpy), eager assigns; the "
             "constraint runs inside Keras' (eager) torch train step",
}


def _pruned_params(model):
    return sum(int(np.prod(w.shape)) for g in kprune.core.wrapping.find_wrappers(model)
               for w in g.prunable_weights)


def mask_hashes():
    """Masks of fixed weights after one update at step 0, hashed per model."""
    out = {}
    for name, build in (("MLP", build_mlp), ("CNN", build_cnn)):
        model = build()
        rng = np.random.default_rng(1)
        for w in model.weights:
            w.assign(rng.normal(size=tuple(w.shape)).astype("float32"))
        pruned = kprune.prune_low_magnitude(model, kprune.ConstantSparsity(0.8, frequency=1))
        kprune.Pruner(pruned).update_masks(0)
        digest = hashlib.sha256()
        for g in kprune.core.wrapping.find_wrappers(pruned):
            for m in g.masks:
                digest.update(np.asarray(keras.ops.convert_to_numpy(m), np.uint8).tobytes())
        out[name] = digest.hexdigest()[:16]
    return out


def run_backend(args):
    keras.utils.set_random_seed(0)
    backend_name = keras.backend.backend()
    print(f"kprune fit overhead | backend {backend_name} | {platform.machine()}, "
          f"{os.cpu_count()} CPUs | keras {keras.__version__} | load {_load()}")
    print(f"mechanism: {MECHANISM[backend_name]}")
    rng = np.random.default_rng(0)
    n = args.batch * args.steps
    y = rng.integers(0, 10, n)
    x_mlp = rng.random((n, 784), np.float32)
    x_cnn = rng.random((n, 28, 28, 1), np.float32)
    mlp, cnn = build_mlp(), build_cnn()
    results = {}
    jits = (False,) if args.no_xla else (False, True)
    for jit in (jits if backend_name == "tensorflow" else ("auto",)):
        tag = " XLA" if jit is True else ""
        results["MLP" + tag] = bench("MLP 784-512-256-10", mlp, x_mlp, y, args.batch, args.steps, args.rounds, jit)
        results["CNN" + tag] = bench("small CNN (kprune demo)", cnn, x_cnn, y, args.batch, args.steps, args.rounds, jit)
    print(f"\ntargets ({backend_name}): frequency 100 <= 1.03x, frequency 1 <= 1.25x "
          f"(median of the interleaved rounds' ratios; load {_load()})")
    for name, r in results.items():
        for key, target in (("pruned f=100", 1.03), ("pruned f=1", 1.25)):
            line = "  ".join(
                f"{c} {r[c][key]:.3f}x {'PASS' if r[c][key] <= target else 'MISS'}" for c in CLOCKS)
            print(f"  {name:<7} {key:<13} (target <= {target}x): {line}")
    print("KPRUNE_MASKS " + json.dumps({"backend": backend_name, "masks": mask_hashes()}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="40 steps per round (5 rounds)")
    parser.add_argument("--no-xla", action="store_true", help="skip the jit_compile=True runs")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--backends", default=None,
                        help="comma-separated backends, each in its own process")
    parser.add_argument("--python", action="append", default=[],
                        help="BACKEND=INTERPRETER for --backends (default: this one)")
    args = parser.parse_args()
    if args.quick:
        args.steps = min(args.steps, 40)
    if args.rounds < 5:
        print(f"note: --rounds {args.rounds} < 5: the targets are defined on medians of >= 5")
    if not args.backends:
        run_backend(args)
        return
    pythons = dict(p.split("=", 1) for p in args.python)
    hashes = {}
    for name in args.backends.split(","):
        env = {**os.environ, "KERAS_BACKEND": name}
        cmd = [pythons.get(name, sys.executable), __file__, "--rounds", str(args.rounds),
               "--steps", str(args.steps), "--batch", str(args.batch)]
        if args.no_xla:
            cmd.append("--no-xla")
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        for line in out.stdout.splitlines():
            if line.startswith("KPRUNE_MASKS "):
                hashes[name] = json.loads(line.split(" ", 1)[1])["masks"]
            else:
                print(line)
        if out.returncode:
            print(out.stderr[-2000:])
        print()
    print("cross-backend masks on identical weights (sha256 of every mask, first 16 hex):")
    for name, h in hashes.items():
        print(f"  {name:<11} MLP {h['MLP']}  CNN {h['CNN']}")
    same = len({json.dumps(h, sort_keys=True) for h in hashes.values()}) == 1
    print(f"  identical on every backend: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
