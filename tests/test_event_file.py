"""kprune.utils.event_file: TensorBoard event files without TensorFlow (every backend)."""

import os

import keras
import numpy as np
import pytest

import kprune
from kprune.utils.event_file import EventFileWriter, read_scalars


def test_written_scalars_read_back(tmp_path):
    with EventFileWriter(tmp_path / "logs") as w:
        w.scalar("a", 0.25, step=3)
        w.scalars({"a": 0.5, "b/c": 1.0}, step=7)
    assert read_scalars(tmp_path / "logs") == {"a": [(3, 0.25), (7, 0.5)], "b/c": [(7, 1.0)]}
    (name,) = os.listdir(tmp_path / "logs")
    assert name.startswith("events.out.tfevents.")


def test_a_corrupt_record_is_named(tmp_path):
    with EventFileWriter(tmp_path) as w:
        w.scalar("a", 0.25, step=3)
    data = bytearray(open(w.path, "rb").read())
    data[-6] ^= 0xFF
    open(w.path, "wb").write(bytes(data))
    with pytest.raises(ValueError, match="corrupt event record"):
        read_scalars(tmp_path)


def test_pruning_summaries_work_on_this_backend(tmp_path):
    """JAX and torch have no TensorFlow: the callback writes its own event files."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, name="d1"),
                              keras.layers.Dense(2, name="d2")])
    pruned = kprune.prune_low_magnitude(
        model, kprune.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=4, frequency=1))
    pruned.compile("sgd", "mse")
    x = np.random.default_rng(0).normal(size=(32, 8)).astype("float32")
    y = np.zeros((32, 2), "float32")
    pruned.fit(x, y, batch_size=8, epochs=2, verbose=0,
               callbacks=[kprune.PruningCallback(), kprune.PruningSummaries(tmp_path)])
    scalars = read_scalars(tmp_path)
    assert set(scalars) >= {"sparsity/d1", "sparsity/d2", "target_sparsity/d1",
                            "sparsity_total"}
    assert [s for s, _ in scalars["sparsity_total"]] == [4, 8]
    assert scalars["sparsity/d1"][-1][1] == pytest.approx(0.5, abs=0.01)
