"""More importance criteria: OBD (weights and channels), FPGM, LAMP, random."""

import keras
import numpy as np
import pytest

import kprune
from kprune.methods import criteria
from kprune.core import masking
from kprune.structured import ChannelPruner, DependencyGraph
from kprune.structured.importance import (
    FPGMImportance,
    HessianImportance,
    LAMPImportance,
    MagnitudeImportance,
    RandomImportance,
    get_importance,
)


def _linear(inputs=5, units=1):
    model = keras.Sequential([keras.Input((inputs,)),
                              keras.layers.Dense(units, use_bias=False, name="d")])
    return model


def _data(n=12, inputs=5, units=1, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, inputs)).astype("float32"), rng.normal(size=(n, units)).astype("float32")


def test_obd_equals_half_h_w2_for_least_squares():
    # L = mean over n and units of (x w - y)^2: H_ii = 2/(n*units) sum_n x_n,row^2.
    model = _linear(units=2)
    x, y = _data(units=2)
    kernel = model.layers[0].kernel
    (got,) = criteria.obd_scores(model, [kernel], x, y, loss="mse", method="exact")
    h = 2.0 / (len(x) * 2) * np.square(x.astype(np.float64)).sum(0)[:, None] * np.ones((1, 2))
    w = keras.ops.convert_to_numpy(kernel).astype(np.float64)
    np.testing.assert_allclose(got, 0.5 * h * w ** 2, rtol=1e-5)


def test_hutchinson_is_exact_when_the_hessian_is_diagonal():
    model = _linear(inputs=4)
    x = (np.eye(4) * np.array([1.0, 2.0, 3.0, 0.5])).astype("float32")  # orthogonal columns
    y = np.ones((4, 1), "float32")
    kernel = model.layers[0].kernel
    (diag,) = criteria.hessian_diagonal(model, [kernel], x, y, loss="mse", samples=1)
    expected = 2.0 / 4 * np.array([1.0, 4.0, 9.0, 0.25])[:, None]
    np.testing.assert_allclose(diag, expected, rtol=1e-5)


def test_obd_through_the_scores_seam():
    model = _linear(units=3)
    x, y = _data(units=3)
    pruned = kprune.prune_low_magnitude(model, kprune.ConstantSparsity(0.5, begin_step=0))
    pruned.compile(keras.optimizers.SGD(0.0), "mse")
    obd = criteria.OBD(pruned, x, y, loss="mse", method="exact")
    expected = obd(pruned.layers[0])[0]
    pruned.fit(x, y, batch_size=12, epochs=1, verbose=0,
               callbacks=[kprune.PruningCallback(scores=obd)])
    mask = keras.ops.convert_to_numpy(pruned.layers[0].masks[0]).astype(bool)
    np.testing.assert_array_equal(mask, masking.compute_mask(expected, 0.5))


def test_scores_with_the_wrong_shape_name_the_wrapper():
    model = kprune.prune_low_magnitude(_linear(), kprune.ConstantSparsity(0.5, begin_step=0))
    pruner = kprune.Pruner(model, scores=lambda w: [np.ones((2, 2))])
    with pytest.raises(ValueError, match="one array per pruned weight"):
        pruner.start()


def test_random_scores_are_fixed_per_weight():
    model = kprune.prune_low_magnitude(_linear(units=4), kprune.ConstantSparsity(0.5))
    rnd = criteria.RandomScores(seed=1)
    a = rnd(model.layers[0])[0]
    np.testing.assert_array_equal(rnd(model.layers[0])[0], a)
    assert a.shape == (5, 4)


def _dense_group(kernel):
    inputs = keras.Input((kernel.shape[0],))
    h = keras.layers.Dense(kernel.shape[1], use_bias=False, name="a")(inputs)
    out = keras.layers.Dense(1, name="out")(h)
    model = keras.Model(inputs, out)
    model.get_layer("a").kernel.assign(kernel)
    (group,) = DependencyGraph(model).prunable_groups
    return model, group


def test_fpgm_sums_distances_to_the_other_filters():
    kernel = np.array([[0.0, 1.0, 10.0], [0.0, 0.0, 0.0]], "float32")  # filters are columns
    _, group = _dense_group(kernel)
    np.testing.assert_allclose(FPGMImportance()(group), [11.0, 10.0, 19.0])
    np.testing.assert_allclose(FPGMImportance(p=1)(group), [11.0, 10.0, 19.0])
    # The filter nearest the median is removed first.
    assert get_importance("fpgm")(group).argmin() == 1


def test_lamp_is_lamp_of_the_l2_norms():
    rng = np.random.default_rng(0)
    _, group = _dense_group(rng.normal(size=(4, 6)).astype("float32"))
    norms = MagnitudeImportance(p=2)(group)
    np.testing.assert_allclose(LAMPImportance()(group), masking.lamp_scores(norms))
    assert (np.argsort(LAMPImportance()(group)) == np.argsort(norms)).all()


def test_random_importance_is_seeded():
    _, group = _dense_group(np.ones((3, 5), "float32"))
    a, b = RandomImportance(seed=4)(group), RandomImportance(seed=4)(group)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (5,)


def test_hessian_channel_importance_sums_obd_per_channel():
    x, _ = _data(inputs=3)
    model, group = _dense_group(np.random.default_rng(1).normal(size=(3, 4)).astype("float32"))
    y = np.zeros((len(x), 1), "float32")
    imp = HessianImportance(x, y, loss="mse", method="exact", roles=("out",))
    kernel = model.get_layer("a").kernel
    (obd,) = criteria.obd_scores(model, [kernel], x, y, loss="mse", method="exact")
    np.testing.assert_allclose(imp(group), obd.sum(axis=0), rtol=1e-5)
    thin = ChannelPruner(model, importance=imp, pruning_ratio=0.5).prune()
    assert thin.get_layer("a").units == 2


def test_get_importance_names():
    assert isinstance(get_importance("lamp"), LAMPImportance)
    assert isinstance(get_importance("random"), RandomImportance)
    assert isinstance(get_importance("l1"), MagnitudeImportance)
    with pytest.raises(ValueError, match="HessianImportance"):
        get_importance("hessian")
    with pytest.raises(ValueError, match="fpgm"):
        get_importance("nope")
