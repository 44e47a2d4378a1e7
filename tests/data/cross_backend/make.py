"""Writes this directory's fixtures: a model pruned halfway on one backend.

Run once per backend (the files are committed; tests/test_cross_backend.py
loads each on whatever backend it runs on and resumes it):

    KERAS_BACKEND=tensorflow python tests/data/cross_backend/make.py
    KERAS_BACKEND=jax python tests/data/cross_backend/make.py
    KERAS_BACKEND=torch python tests/data/cross_backend/make.py

Each writes `<backend>.keras` (the pruned model after 4 of 8 training
batches, schedule step stored) and `<backend>.npz`: the data, the masks and
weights at the save, and the masks and weights after the origin backend
trained the remaining 4 batches itself.
"""

import os
import sys

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))))

import kprune  # noqa: E402
from kprune.core.model_tree import find_wrappers  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEDULE = dict(initial_sparsity=0.0, final_sparsity=0.75, begin_step=0, end_step=6, frequency=2)


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 8)).astype("float32")
    y = rng.integers(0, 4, size=(32,)).astype("int32")
    return x, y


def build():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(16, activation="relu", name="d1"),
        keras.layers.Dense(4, name="out"),
    ])
    rng = np.random.default_rng(1)  # the same weights on every backend
    model.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in model.get_weights()])
    return model


def fit(model, x, y):
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0,
              callbacks=[kprune.PruningCallback()])


def state(model):
    masks = [keras.ops.convert_to_numpy(m) for w in find_wrappers(model) for m in w.masks]
    return masks, [np.asarray(w) for w in model.get_weights()]


def main():
    name = keras.backend.backend()
    x, y = data()
    pruned = kprune.prune_low_magnitude(build(), kprune.PolynomialDecay(**SCHEDULE))
    pruned.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    fit(pruned, x, y)
    pruned.save(os.path.join(HERE, f"{name}.keras"))
    saved_masks, saved_weights = state(pruned)
    fit(pruned, x, y)
    end_masks, end_weights = state(pruned)
    out = {"x": x, "y": y}
    for prefix, arrays in (("saved_mask", saved_masks), ("saved_weight", saved_weights),
                           ("end_mask", end_masks), ("end_weight", end_weights)):
        for i, a in enumerate(arrays):
            out[f"{prefix}_{i}"] = a
    np.savez(os.path.join(HERE, f"{name}.npz"), **out)
    print(f"wrote {name}.keras and {name}.npz")


if __name__ == "__main__":
    main()
