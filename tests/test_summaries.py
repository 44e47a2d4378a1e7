"""`kprune.PruningSummaries`: per-layer sparsity scalars in TensorBoard event files."""

import glob
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

import kprune  # noqa: E402
from kprune.core.callbacks import PruningSummaries  # noqa: E402
from kprune.core.model_tree import find_wrappers  # noqa: E402

L = keras.layers
SCHEDULE = kprune.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=8, frequency=2)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


def _read_scalars(log_dir):
    """{tag: [(step, value), ...]} from every event file under log_dir."""
    out = {}
    files = sorted(glob.glob(os.path.join(log_dir, "**", "events.out.tfevents.*"), recursive=True))
    assert files, f"no event file in {log_dir}"
    for path in files:
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                scalar = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") else value.simple_value
                out.setdefault(value.tag, []).append((event.step, scalar))
    return out


def _pruned(fixed_layer=False):
    model = keras.Sequential([
        keras.Input((10,)), L.Dense(16, activation="relu", name="fc1"),
        L.Dense(8, activation="relu", name="fc2"), L.Dense(3, name="logits"),
    ])
    return kprune.prune_low_magnitude(model, SCHEDULE, sparsity={"logits": 0.5})


def _fit(model, callbacks, epochs=2, n=64, batch=16):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 10)).astype("float32")
    y = rng.integers(0, 3, size=(n,))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0, callbacks=callbacks)


def test_epoch_summaries_match_masks_and_schedule(tmp_path):
    log_dir = str(tmp_path / "logs")
    model = _pruned()
    _fit(model, [kprune.PruningCallback(), PruningSummaries(log_dir)], epochs=3)
    scalars = _read_scalars(log_dir)
    # 4 batches per epoch: written at steps 4, 8, 12
    for name in ("fc1", "fc2", "logits"):
        assert [s for s, _ in scalars[f"sparsity/{name}"]] == [4, 8, 12]
        assert [s for s, _ in scalars[f"target_sparsity/{name}"]] == [4, 8, 12]
    # the last value is the real mask sparsity
    for w in find_wrappers(model):
        masks = [keras.ops.convert_to_numpy(m) for m in w.masks]
        real = sum(m.size - np.count_nonzero(m) for m in masks) / sum(m.size for m in masks)
        assert scalars[f"sparsity/{w.layer.name}"][-1][1] == pytest.approx(real, abs=1e-6)
    assert scalars["sparsity/fc1"][-1][1] == pytest.approx(0.8, abs=1e-3)
    assert scalars["sparsity/logits"][-1][1] == pytest.approx(0.5, abs=1e-3)
    # the schedule's target at each written step
    targets = dict(scalars["target_sparsity/fc1"])
    for step in (4, 8, 12):
        assert targets[step] == pytest.approx(SCHEDULE.sparsity(step), abs=1e-6)
    assert dict(scalars["target_sparsity/logits"])[4] == pytest.approx(0.5)
    assert "sparsity_total" in scalars


@pytest.mark.parametrize("update_freq, steps", [("batch", list(range(1, 9))), (3, [3, 6])])
def test_batch_and_integer_frequency(tmp_path, update_freq, steps):
    log_dir = str(tmp_path / "logs")
    _fit(_pruned(), [kprune.PruningCallback(), PruningSummaries(log_dir, update_freq)], epochs=2)
    scalars = _read_scalars(log_dir)
    assert [s for s, _ in scalars["sparsity/fc2"]] == steps
    # sparsity is non-decreasing along the polynomial schedule
    values = [v for _, v in scalars["sparsity/fc2"]]
    assert values == sorted(values)
    # at an update step the masks are at the schedule's target (to 1/128 weights)
    assert values[-1] == pytest.approx(SCHEDULE.sparsity(steps[-1]), abs=1 / 128)


def test_resumed_fit_continues_the_step(tmp_path):
    log_dir = str(tmp_path / "logs")
    model = _pruned()
    _fit(model, [kprune.PruningCallback(), PruningSummaries(log_dir)], epochs=1)
    _fit(model, [kprune.PruningCallback(), PruningSummaries(log_dir)], epochs=1)
    assert [s for s, _ in _read_scalars(log_dir)["sparsity/fc1"]] == [4, 8]


@pytest.mark.parametrize("bad", ["step", 0, -2, 1.5, True])
def test_bad_update_freq(tmp_path, bad):
    with pytest.raises(ValueError, match="update_freq"):
        PruningSummaries(str(tmp_path), update_freq=bad)


def test_model_without_wrappers_is_an_error(tmp_path):
    model = keras.Sequential([keras.Input((10,)), L.Dense(3)])
    with pytest.raises(ValueError, match="no PruneWrapper"):
        _fit(model, [PruningSummaries(str(tmp_path))], epochs=1)
