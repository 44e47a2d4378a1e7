"""Tests for kprune.deploy.budget: latency-budgeted channel pruning.

The measurer is a deterministic fake (file size / 1000 ms), so the budget is
met by construction and the tests have no timing threshold. TensorFlow leg
(the latency model converts files).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

from kprune.deploy import LatencyModel, allocate, measure_result, prune_for_latency

pytestmark = pytest.mark.tensorflow


class SizeMeasurer:
    """Deterministic fake: bytes / 1000 ms."""

    cache_key = {"runtime": "fake 1.0", "threads": 1}

    def __call__(self, tflite):
        return len(tflite) / 1000.0


def cnn():
    keras.utils.set_random_seed(1)
    return keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(16, 3, activation="relu", name="c1"),
        keras.layers.Conv2D(32, 3, activation="relu", name="c2"),
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(10, name="out"),
    ], name="budget_cnn")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    model = cnn()
    lat = LatencyModel(model, measurer=SizeMeasurer(), cache_dir=tmp_path_factory.mktemp("lat"),
                       levels=(1.0, 0.75, 0.5, 0.25))
    return model, lat


def weights(model):
    return [np.array(w) for w in model.get_weights()]


@pytest.mark.parametrize("budget", [0.8, 0.5])
def test_budget_met_by_construction(setup, budget):
    model, lat = setup
    result = prune_for_latency(model, budget=budget, latency_model=lat)
    assert result.predicted_ms <= budget * lat.dense_ms
    assert result.measured_ms == pytest.approx(result.predicted_ms, rel=0.05)
    assert result.met and result.missed_by == 0.0
    assert result.model.count_params() < model.count_params()
    assert "MET" in str(result)
    assert result.model.get_layer("out").units == 10  # the output layer keeps its width


def test_budget_in_milliseconds_and_budget_one_keeps_the_model(setup):
    model, lat = setup
    same = prune_for_latency(model, budget=1.0, latency_model=lat, measure=False)
    assert same.model.count_params() == model.count_params() and same.measured_ms is None
    ms = prune_for_latency(model, budget_ms=0.6 * lat.dense_ms, latency_model=lat, measure=False)
    assert ms.predicted_ms <= 0.6 * lat.dense_ms and ms.plan.budget is None


def test_allocation_removes_least_important_channels_first(setup):
    model, lat = setup
    c1 = model.get_layer("c1")
    kernel, bias = c1.get_weights()
    kernel[..., :8] *= 100.0  # channels 0-7 of c1 matter most
    c1.set_weights([kernel, bias])
    try:
        result = prune_for_latency(model, budget=0.6, latency_model=lat, measure=False)
        thin_kernel = result.model.get_layer("c1").get_weights()[0]
        kept = thin_kernel.shape[-1]
        assert kept < 16
        np.testing.assert_allclose(thin_kernel[..., :min(kept, 8)], kernel[..., :min(kept, 8)])
    finally:
        c1.set_weights([kernel / np.where(np.arange(16) < 8, 100.0, 1.0), bias])


def test_missed_budget_is_reported_with_its_size(setup):
    model, lat = setup

    class Slower(SizeMeasurer):
        cache_key = None

        def __call__(self, tflite):  # the device is slower than the table said
            return 2 * len(tflite) / 1000.0

    # in milliseconds (a fraction budget is re-based on the dense file measured alongside)
    result = prune_for_latency(model, budget_ms=0.5 * lat.dense_ms, latency_model=lat, measure=False)

    measure_result(result, model, Slower())
    assert not result.met and result.missed_by == pytest.approx(
        result.measured_ms / result.budget_ms - 1)
    assert "MISSED by" in str(result)


@pytest.mark.parametrize("bad, error, match", [
    (0.0, ValueError, r"budget must be in \(0, 1\]"),
    (1.5, ValueError, r"budget must be in \(0, 1\]"),
    (-0.5, ValueError, r"budget must be in \(0, 1\]"),
    (float("nan"), ValueError, "finite"),
    ("0.5", TypeError, "budget must be a number"),
])
def test_bad_budget_fraction(setup, bad, error, match):
    model, lat = setup
    before = weights(model)
    with pytest.raises(error, match=match):
        prune_for_latency(model, budget=bad, latency_model=lat)
    for a, b in zip(before, weights(model)):
        np.testing.assert_array_equal(a, b)


def test_budget_below_reachable_minimum_names_it_and_leaves_the_model(setup):
    model, lat = setup
    before = weights(model)
    with pytest.raises(ValueError, match="smallest latency this model can reach") as info:
        prune_for_latency(model, budget=0.01, latency_model=lat)
    plan_min = allocate(lat, budget=1.0).min_ms
    assert f"{plan_min:.4f} ms" in str(info.value)
    for a, b in zip(before, weights(model)):
        np.testing.assert_array_equal(a, b)
    assert model.get_layer("c2").filters == 32


def test_one_budget_only(setup):
    model, lat = setup
    with pytest.raises(ValueError, match="Pass one latency budget"):
        prune_for_latency(model, latency_model=lat)
    with pytest.raises(ValueError, match="Pass one latency budget"):
        prune_for_latency(model, budget=0.5, budget_ms=1.0, latency_model=lat)
    with pytest.raises(ValueError, match="budget_ms must be"):
        prune_for_latency(model, budget_ms=0.0, latency_model=lat)


def test_latency_model_of_another_model_is_refused(setup):
    _, lat = setup
    with pytest.raises(ValueError, match="another model"):
        prune_for_latency(cnn(), budget=0.5, latency_model=lat)


def test_iterative_steps_with_fine_tuning(setup):
    model, lat = setup
    seen = []

    def fine_tune(thin, step):
        seen.append((step, thin.count_params()))

    result = prune_for_latency(model, budget=0.5, latency_model=lat, steps=2, fine_tune=fine_tune,
                               measure=False)
    assert [s for s, _ in seen] == [1, 2] and seen[0][1] > seen[1][1]
    one_shot = prune_for_latency(model, budget=0.5, latency_model=lat, measure=False)
    assert result.model.count_params() == one_shot.model.count_params()
