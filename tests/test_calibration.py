"""The one calibration-data contract: as_batches, resolve_loss, gradient_sum."""

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kprune.core import calibration


def _dense(inputs=3, units=2):
    return keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(units, name="d")])


def _two_inputs():
    a, b = keras.Input((2,), name="a"), keras.Input((3,), name="b")
    out = keras.layers.Dense(1)(keras.layers.Concatenate()([a, b]))
    return keras.Model([a, b], out)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), batch_size=st.integers(1, 16), max_batches=st.none() | st.integers(1, 5))
def test_pair_is_sliced_in_order_and_covers_the_examples(n, batch_size, max_batches):
    x = np.arange(n * 2, dtype="float32").reshape(n, 2)
    y = np.arange(n)
    batches = calibration.as_batches((x, y), batch_size=batch_size, max_batches=max_batches)
    want = -(-n // batch_size) if max_batches is None else min(max_batches, -(-n // batch_size))
    assert len(batches) == want
    xs = np.concatenate([b[0] for b in batches])
    ys = np.concatenate([b[1] for b in batches])
    np.testing.assert_array_equal(xs, x[:len(xs)])
    np.testing.assert_array_equal(ys, y[:len(ys)])
    assert all(len(bx) <= batch_size for bx, _ in batches)


def test_inputs_only_array_dict_and_multi_input_list():
    x = np.zeros((5, 3), "float32")
    assert [b.shape for b in calibration.as_batches(x, batch_size=2, targets="drop")] == [(2, 3), (2, 3), (1, 3)]
    d = {"a": np.zeros((4, 2)), "b": np.ones((4, 3))}
    got = calibration.as_batches(d, batch_size=3, targets="drop")
    assert [b["b"].shape for b in got] == [(3, 3), (1, 3)]
    pair = [np.zeros((4, 2)), np.zeros((4, 3))]
    model = _two_inputs()
    got = calibration.as_batches(pair, batch_size=4, targets="drop", model=model)
    assert isinstance(got[0], list) and [a.shape for a in got[0]] == [(4, 2), (4, 3)]
    # Without a multi-input model, a 2-list is an (x, y) pair.
    got = calibration.as_batches(pair, batch_size=4, targets="drop")
    assert got[0].shape == (4, 2)


def test_iterables_of_batches_generators_and_max_batches():
    batches = [(np.full((2, 3), i, "float32"), np.full(2, i)) for i in range(4)]
    got = calibration.as_batches(iter(batches), max_batches=3)
    assert len(got) == 3 and got[2][0][0, 0] == 2 and got[2][1][0] == 2
    got = calibration.as_batches((b for b in batches), targets="drop")
    assert len(got) == 4 and got[1].shape == (2, 3)
    # inputs-only batches are fine unless targets are required
    got = calibration.as_batches([np.zeros((2, 3))] * 4, targets="optional")  # not a pair: 4 items
    assert got[0][1] is None


@pytest.mark.tensorflow
def test_tf_data_batches_become_numpy():
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((np.ones((6, 3), "float32"), np.arange(6))).batch(4)
    got = calibration.as_batches(ds)
    assert len(got) == 2 and isinstance(got[0][0], np.ndarray) and got[1][1].tolist() == [4, 5]


@pytest.mark.parametrize("data, targets, error, match", [
    ("text", "drop", TypeError, "calibration_data must be"),
    (3, "required", TypeError, r"calibration_data must be \(x, y\) arrays"),
    (np.zeros((4, 3)), "required", ValueError, "single array of shape \\(4, 3\\)"),
    ((np.zeros((4, 3)),), "required", ValueError, "one item"),
    ((np.zeros((4, 3)), np.zeros(3)), "required", ValueError, "has 4 examples but its y has 3"),
    ({"a": np.zeros((4, 2)), "b": np.zeros((3, 2))}, "drop", ValueError, "same number of examples"),
    (np.zeros((0, 3)), "drop", ValueError, "holds no examples"),
    ([], "optional", ValueError, "yielded no batches"),
    ([np.zeros((2, 3))] * 4, "required", ValueError, "Every batch of calibration_data must be an \\(x, y\\) pair"),
])
def test_bad_data_says_what_is_wrong(data, targets, error, match):
    with pytest.raises(error, match=match):
        calibration.as_batches(data, targets=targets, name="calibration_data")


def test_check_inputs_names_the_expected_shape():
    with pytest.raises(ValueError, match=r"expects inputs of shape \(None, 3\)"):
        calibration.check_inputs(_dense(), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="takes 2"):
        calibration.check_inputs(_two_inputs(), np.zeros((2, 2)))
    calibration.check_inputs(_dense(), np.zeros((2, 3)))


def test_loss_rule_explicit_then_compiled_then_fallback_then_error():
    model = _dense()
    with pytest.raises(ValueError, match="pass loss="):
        calibration.resolve_loss(model, caller="TaylorImportance")
    assert calibration.resolve_loss(model, fallback=lambda m: "fallback") == "fallback"
    model.compile(loss="mse")
    assert calibration.resolve_loss(model, fallback=lambda m: "fallback") is keras.losses.get("mse")
    assert calibration.resolve_loss(model, "mae") is keras.losses.get("mae")
    with pytest.raises(TypeError, match="loss must be a Keras loss or callable"):
        calibration.resolve_loss(model, 3)
    assert calibration.label_form(model, "sparse_categorical_crossentropy") == "sparse"
    assert calibration.label_form(model, keras.losses.CategoricalCrossentropy()) == "one_hot"
    assert calibration.label_form(_dense()) == "auto"


def test_gradient_sum_is_the_sum_of_per_batch_gradients():
    # L = sum(x @ w): dL/dw = sum of x over examples (bias: the count).
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, name="d")])
    x = np.random.default_rng(0).normal(size=(7, 3)).astype("float32")
    batches = calibration.as_batches((x, np.zeros(7)), batch_size=3)
    grads = calibration.gradient_sum(lambda xb, yb: keras.ops.sum(model(xb)), model.trainable_weights, batches)
    np.testing.assert_allclose(grads[0][:, 0], x.sum(0), rtol=1e-5)
    np.testing.assert_allclose(grads[1], [7.0])
