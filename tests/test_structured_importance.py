"""Tests for kprune.structured.importance."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from structured_models import (  # noqa: E402
    check_equivalent,
    inputs_for,
    randomize,
    resnet_block_model,
    sequential_cnn,
)

from kprune.structured import (  # noqa: E402
    BNScaleImportance,
    ChannelPruner,
    DependencyGraph,
    MagnitudeImportance,
    TaylorImportance,
    get_importance,
)


def _group(model, producer):
    return [g for g in DependencyGraph(model).groups if producer in g.producers][0]


def test_l1_is_filter_norm_summed_over_coupled_producers():
    model = randomize(resnet_block_model())
    g = _group(model, "stem")
    k1 = model.get_layer("stem").get_weights()[0]
    k2 = model.get_layer("b1_c2").get_weights()[0]
    expected = np.abs(k1).sum(axis=(0, 1, 2)) + np.abs(k2).sum(axis=(0, 1, 2))
    np.testing.assert_allclose(MagnitudeImportance(1)(g), expected, rtol=1e-6)
    np.testing.assert_allclose(get_importance("l1")(g), expected, rtol=1e-6)


def test_l2_is_group_norm():
    model = randomize(resnet_block_model())
    g = _group(model, "stem")
    k1 = model.get_layer("stem").get_weights()[0]
    k2 = model.get_layer("b1_c2").get_weights()[0]
    expected = np.sqrt((k1 ** 2).sum(axis=(0, 1, 2)) + (k2 ** 2).sum(axis=(0, 1, 2)))
    np.testing.assert_allclose(get_importance("l2")(g), expected, rtol=1e-6)


def test_l1_prunes_smallest_filters():
    model = randomize(sequential_cnn())
    conv = model.get_layer("c1")
    k, b = conv.get_weights()
    k = np.abs(k) + 1.0
    k[..., [0, 3, 5, 7]] *= 1e-3
    conv.set_weights([k, b])
    pruner = ChannelPruner(model, pruning_ratio=0.5)
    plan = pruner.plan()
    g = [g for g in pruner.groups if "c1" in g.producers][0]
    assert np.flatnonzero(plan.removed[g.index]).tolist() == [0, 3, 5, 7]


def test_bn_scale():
    model = randomize(resnet_block_model())
    g = _group(model, "stem")
    expected = (np.abs(model.get_layer("stem_bn").get_weights()[0])
                + np.abs(model.get_layer("b1_bn2").get_weights()[0]))
    np.testing.assert_allclose(BNScaleImportance()(g), expected, rtol=1e-6)
    # A group without BN gets no score and is kept whole.
    pruner = ChannelPruner(model, importance="bn_scale", pruning_ratio=0.5)
    plan = pruner.plan()
    assert plan.widths["b2_c1"] == (10, 10)
    assert any("gives no score" in n for n in plan.notes)


def test_taylor_with_data():
    model = randomize(resnet_block_model())
    x = inputs_for(model, n=8)
    y = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    imp = TaylorImportance(x, y, loss="mse", batch_size=4)
    scores = imp(_group(model, "stem"))
    assert scores.shape == (8,) and np.all(scores >= 0) and scores.sum() > 0
    check_equivalent(model, importance=imp, pruning_ratio=0.5)
    with pytest.raises(ValueError, match="loss"):
        TaylorImportance(x, y)(_group(model, "stem"))


def test_custom_callable_and_bad_scores():
    model = randomize(resnet_block_model())
    pruner = ChannelPruner(model, importance=lambda g: np.arange(g.size, dtype=float),
                           pruning_ratio=0.5)
    plan = pruner.plan()
    g = [g for g in pruner.groups if "stem" in g.producers][0]
    assert np.flatnonzero(plan.removed[g.index]).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="scores"):
        ChannelPruner(model, importance=lambda g: np.ones(3)).plan()


def test_bad_importance_names():
    with pytest.raises(ValueError, match="needs data"):
        get_importance("taylor")
    with pytest.raises(ValueError, match="importance must be"):
        get_importance("l3")
    with pytest.raises(ValueError, match="p must be"):
        MagnitudeImportance(p=3)
