"""Tests for kprune.deploy.latency: the latency model, its measurers and its cache.

The latency model converts one-layer files with TensorFlow's converter, so
these tests run on the TensorFlow leg. The measurer is a deterministic fake
(milliseconds = file size / 1000: latency grows with the weights, like a
real kernel's), except in the one test of the LiteRT measurer itself; no
test has a timing threshold.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json

import keras
import pytest

from kprune.deploy import (
    LatencyCache,
    LatencyModel,
    LiteRTMeasurer,
    measure_model,
    runtime_key,
)

pytestmark = pytest.mark.tensorflow

LEVELS = (1.0, 0.5, 0.25)


class SizeMeasurer:
    """Deterministic fake: bytes / 1000 ms; counts its calls."""

    def __init__(self, **settings):
        self.cache_key = {"runtime": "fake 1.0", "threads": 1, **settings}
        self.calls = 0

    def __call__(self, tflite):
        self.calls += 1
        return len(tflite) / 1000.0


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One cache folder for the tests that do not test the cache itself."""
    return tmp_path_factory.mktemp("latency-cache")


def small_cnn():
    return keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(16, 3, activation="relu", name="c1"),
        keras.layers.Conv2D(16, 3, activation="relu", name="c2"),
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(10, name="out"),
    ], name="small_cnn")


def test_table_predicts_the_dense_model_exactly_and_less_when_thinner(shared_cache):
    tmp_path = shared_cache
    model = small_cnn()
    lat = LatencyModel(model, measurer=SizeMeasurer(), cache_dir=tmp_path, levels=LEVELS)
    assert [u.path for u in lat.units] == ["c1", "c2", "out"]
    assert lat.predict() == pytest.approx(lat.dense_ms)
    groups = {g.producers[0]: g.index for g in lat.groups}
    assert lat.options[groups["c1"]] == [16, 8]  # widths rounded up to multiples of 8
    one = lat.predict({groups["c1"]: 8})
    both = lat.predict({groups["c1"]: 8, groups["c2"]: 8})
    assert both < one < lat.dense_ms
    exact = LatencyModel(model, measurer=SizeMeasurer(), cache_dir=tmp_path, levels=LEVELS, round_to=1)
    assert exact.options[groups["c1"]] == [16, 8, 4]


def test_prediction_matches_the_fake_measurement_of_a_thin_model(shared_cache):
    tmp_path = shared_cache
    from kprune.structured import ChannelPruner

    model = small_cnn()
    measurer = SizeMeasurer()
    lat = LatencyModel(model, measurer=measurer, cache_dir=tmp_path, levels=LEVELS)
    pruner = ChannelPruner(model, pruning_ratio={"c1": 0.5, "c2": 0.75})
    plan = pruner.plan()
    predicted = lat.predict_plan(plan)
    measured = measure_model(pruner.prune(plan), measurer)
    assert predicted == pytest.approx(measured, rel=0.05)


def test_cache_reused_for_same_settings_and_invalidated_when_they_change(tmp_path):
    model = small_cnn()
    first = SizeMeasurer()
    lat = LatencyModel(model, measurer=first, cache_dir=tmp_path, levels=(1.0, 0.5))
    assert first.calls == lat.measured > 0
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and json.loads(files[0].read_text())["key"] == first.cache_key

    again = SizeMeasurer()
    lat2 = LatencyModel(model, measurer=again, cache_dir=tmp_path, levels=(1.0, 0.5))
    assert again.calls == lat2.measured == 0
    assert lat2.dense_ms == lat.dense_ms

    changed = SizeMeasurer(threads=4)
    LatencyModel(model, measurer=changed, cache_dir=tmp_path, levels=(1.0, 0.5))
    assert changed.calls == first.calls  # everything measured again
    assert len(list(tmp_path.iterdir())) == 2
    for other in (SizeMeasurer(runtime="fake 2.0"), SizeMeasurer(cpu="another CPU"),
                  SizeMeasurer(xnnpack=False), SizeMeasurer(batch=4)):
        cache = LatencyCache(other.cache_key, tmp_path)
        assert cache.entries == {} and not os.path.exists(cache.path)


def test_cache_invalidated_when_the_input_shape_changes(tmp_path):
    LatencyModel(small_cnn(), measurer=SizeMeasurer(), cache_dir=tmp_path, levels=(1.0,))
    bigger = keras.Sequential([
        keras.Input((12, 12, 3)),
        keras.layers.Conv2D(16, 3, activation="relu", name="c1"),
        keras.layers.Conv2D(16, 3, activation="relu", name="c2"),
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(10, name="out"),
    ], name="small_cnn")
    measurer = SizeMeasurer()
    LatencyModel(bigger, measurer=measurer, cache_dir=tmp_path, levels=(1.0,))
    assert measurer.calls == 4  # the model and its three layers at 12x12; the one-weight file is cached


def test_measurer_without_cache_key_is_not_cached(tmp_path):
    calls = []

    def measurer(tflite):
        calls.append(len(tflite))
        return 1.0

    LatencyModel(small_cnn(), measurer=measurer, cache_dir=tmp_path, levels=(1.0,))
    assert len(calls) == 5 and not list(tmp_path.iterdir())


def test_corrupt_cache_file_is_measured_again(tmp_path):
    measurer = SizeMeasurer()
    cache = LatencyCache(measurer.cache_key, tmp_path)
    os.makedirs(tmp_path, exist_ok=True)
    with open(cache.path, "w") as f:
        f.write("{not json")
    lat = LatencyModel(small_cnn(), measurer=measurer, cache_dir=tmp_path, levels=(1.0,))
    assert lat.measured == measurer.calls == 5


def test_runtime_key_names_what_changes_a_latency():
    key = runtime_key(threads=2, xnnpack=False)
    assert key["threads"] == 2 and key["xnnpack"] is False and key["batch"] == 1
    assert key["runtime"].startswith("ai-edge-litert") and key["cpu"]
    m = LiteRTMeasurer(threads=2, runs=5)
    assert m.cache_key["threads"] == 2 and m.cache_key["runs"] == 5


def test_litert_measurer_returns_milliseconds():
    model = small_cnn()
    ms = measure_model(model, LiteRTMeasurer(runs=3, repeats=1, warmup=1))
    assert isinstance(ms, float) and ms > 0


def test_bad_arguments():
    model = small_cnn()
    with pytest.raises(TypeError, match="measurer"):
        LatencyModel(model, measurer="litert")
    with pytest.raises(ValueError, match="levels must include 1.0"):
        LatencyModel(model, measurer=SizeMeasurer(), levels=(0.5,))
    with pytest.raises(ValueError, match="threads"):
        LiteRTMeasurer(threads=0)
    free = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(4, 3, name="c"),
                             keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="unknown size"):
        LatencyModel(free, measurer=SizeMeasurer())


def test_measurer_returning_nonsense_is_refused(tmp_path):
    with pytest.raises(ValueError, match="measurer"):
        LatencyModel(small_cnn(), measurer=lambda tflite: -1.0, cache_dir=tmp_path)
