"""model.fit step time, plain vs pruned, on the same model in one run.

Two models: a ~0.54M-parameter MLP (784-512-256-10) and the demo's small CNN
(~0.11M parameters, 28x28x1). For each, three variants are timed, interleaved
round by round so machine noise hits them alike:

* plain: the unwrapped model;
* pruned, masks updated every 100 steps (`frequency=100`);
* pruned, masks updated every step (`frequency=1`).

Both are timed with Keras' CPU default (no XLA) and with `jit_compile=True`.
Each variant trains `--steps` steps per round after a warm-up epoch (tracing);
the median seconds per step over `--rounds` rounds is reported, and the ratio
pruned / plain. Targets (issue #2): <= 1.03x at frequency 100, <= 1.25x at
frequency 1.

    python benchmarks/fit_overhead.py [--rounds 5] [--steps 100] [--batch 128]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kprune  # noqa: E402
from kprune.demo import build_cnn  # noqa: E402


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
          f"{', jit_compile=True (XLA)' if jit else ''}")
    for k in variants:
        print(f"  {k:<13} {1e3 * med[k]:7.3f} ms/step  {1 / med[k]:8.1f} steps/s  "
              f"ratio {med[k] / med['plain']:.3f}x")
    return {k: med[k] / med["plain"] for k in variants}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    print(f"kprune fit overhead | {platform.machine()}, {os.cpu_count()} CPUs | "
          f"keras {keras.__version__}")
    rng = np.random.default_rng(0)
    n = args.batch * args.steps
    y = rng.integers(0, 10, n)
    x_mlp = rng.random((n, 784), np.float32)
    x_cnn = rng.random((n, 28, 28, 1), np.float32)
    mlp, cnn = build_mlp(), build_cnn()
    results = {}
    for jit in (False, True):
        tag = " XLA" if jit else ""
        results["MLP" + tag] = bench("MLP 784-512-256-10", mlp, x_mlp, y, args.batch, args.steps, args.rounds, jit)
        results["CNN" + tag] = bench("small CNN (kprune demo)", cnn, x_cnn, y, args.batch, args.steps, args.rounds, jit)
    print("\ntargets: frequency 100 <= 1.03x, frequency 1 <= 1.25x")
    for name, r in results.items():
        for key, target in (("pruned f=100", 1.03), ("pruned f=1", 1.25)):
            verdict = "MET" if r[key] <= target else "MISSED"
            print(f"  {name:<7} {key:<13} {r[key]:.3f}x (target <= {target}x) -> {verdict}")


if __name__ == "__main__":
    main()
