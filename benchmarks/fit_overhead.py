"""model.fit step time, plain vs pruned, on the same model in one run.

Two models: a ~0.54M-parameter MLP (784-512-256-10) and the demo's small CNN
(~0.11M parameters, 28x28x1). For each, three variants are timed, interleaved
round by round so machine noise hits them alike:

* plain: the unwrapped model;
* pruned, masks updated every 100 steps (`frequency=100`);
* pruned, masks updated every step (`frequency=1`).

Both are timed with Keras' CPU default (no XLA) and with `jit_compile=True`
(TensorFlow only). Each variant trains `--steps` steps per round after a
warm-up epoch (tracing); the median seconds per step over `--rounds` rounds
is reported, and the ratio pruned / plain. Targets: <= 1.03x at frequency
100, <= 1.25x at frequency 1.

The decomposition says where the pruned step's extra time goes: one mask
update (read the weights, select, assign: `Pruner.update_masks`, median of
20) and, what remains of the frequency-100 overhead, the per-step
constraint `where(mask, w, 0)` after the optimizer update (the forward pass
runs on the stored weights and costs nothing extra).

`--backends tensorflow,jax,torch` runs each backend in its own process
(`--python jax=/path/to/python` picks an interpreter with that backend) and
ends with a cross-backend table: the same weights, pruned by each backend's
`Pruner.update_masks` at the same step, give identical masks (a hash of
every mask per backend).

    python benchmarks/fit_overhead.py [--rounds 5] [--steps 100] [--batch 128]
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
from kprune.cli.demo import build_cnn  # noqa: E402


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


class _EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._t)


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
    per_step = {k: [] for k in variants}
    for _ in range(rounds):
        for k, (model, cbs) in built.items():
            timer = _EpochTimer()
            model.fit(x[:n], y[:n], batch_size=batch, epochs=1, verbose=0, callbacks=cbs + [timer])
            per_step[k].append(timer.seconds[0] / steps)
    med = {k: statistics.median(v) for k, v in per_step.items()}
    print(f"\n{name}: {base.count_params():,} params, batch {batch}, {steps} steps x {rounds} rounds"
          f"{', jit_compile=True (XLA)' if jit is True else ''}")
    for k in variants:
        spread = f"{1e3 * min(per_step[k]):.3f}-{1e3 * max(per_step[k]):.3f}"
        print(f"  {k:<13} {1e3 * med[k]:7.3f} ms/step (min-max {spread})  "
              f"ratio {med[k] / med['plain']:.3f}x")
    pruner = kprune.Pruner(built["pruned f=1"][0]).start()
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        pruner.update_masks()
        times.append(time.perf_counter() - t0)
    update = statistics.median(times)
    fixed = med["pruned f=100"] - med["plain"] - update / 100
    print(f"  decomposition: one mask update {1e3 * update:.3f} ms "
          f"({1e9 * update / max(1, _pruned_params(built['pruned f=1'][0])):.1f} ns/pruned weight); "
          f"per-step constraint ~{1e3 * fixed:+.3f} ms (f=100 overhead minus update/100)")
    return {k: med[k] / med["plain"] for k in variants}


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
    backend = keras.backend.backend()
    print(f"kprune fit overhead | backend {backend} | {platform.machine()}, "
          f"{os.cpu_count()} CPUs | keras {keras.__version__}")
    rng = np.random.default_rng(0)
    n = args.batch * args.steps
    y = rng.integers(0, 10, n)
    x_mlp = rng.random((n, 784), np.float32)
    x_cnn = rng.random((n, 28, 28, 1), np.float32)
    mlp, cnn = build_mlp(), build_cnn()
    results = {}
    for jit in ((False, True) if backend == "tensorflow" else ("auto",)):
        tag = " XLA" if jit is True else ""
        results["MLP" + tag] = bench("MLP 784-512-256-10", mlp, x_mlp, y, args.batch, args.steps, args.rounds, jit)
        results["CNN" + tag] = bench("small CNN (kprune demo)", cnn, x_cnn, y, args.batch, args.steps, args.rounds, jit)
    print(f"\ntargets ({backend}): frequency 100 <= 1.03x, frequency 1 <= 1.25x")
    for name, r in results.items():
        for key, target in (("pruned f=100", 1.03), ("pruned f=1", 1.25)):
            verdict = "PASS" if r[key] <= target else "MISS"
            print(f"  {name:<7} {key:<13} {r[key]:.3f}x (target <= {target}x) -> {verdict}")
    print("KPRUNE_MASKS " + json.dumps({"backend": backend, "masks": mask_hashes()}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--backends", default=None,
                        help="comma-separated backends, each in its own process")
    parser.add_argument("--python", action="append", default=[],
                        help="BACKEND=INTERPRETER for --backends (default: this one)")
    args = parser.parse_args()
    if not args.backends:
        run_backend(args)
        return
    pythons = dict(p.split("=", 1) for p in args.python)
    hashes = {}
    for backend in args.backends.split(","):
        env = {**os.environ, "KERAS_BACKEND": backend}
        cmd = [pythons.get(backend, sys.executable), __file__, "--rounds", str(args.rounds),
               "--steps", str(args.steps), "--batch", str(args.batch)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        for line in out.stdout.splitlines():
            if line.startswith("KPRUNE_MASKS "):
                hashes[backend] = json.loads(line.split(" ", 1)[1])["masks"]
            else:
                print(line)
        if out.returncode:
            print(out.stderr[-2000:])
        print()
    print("cross-backend masks on identical weights (sha256 of every mask, first 16 hex):")
    for backend, h in hashes.items():
        print(f"  {backend:<11} MLP {h['MLP']}  CNN {h['CNN']}")
    same = len({json.dumps(h, sort_keys=True) for h in hashes.values()}) == 1
    print(f"  identical on every backend: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
