import keras
import numpy as np
import pytest

import kprune
from kprune.core.model_tree import find_wrappers, unprunable_layers
from conftest import assert_unchanged, small_cnn, small_mlp, weights_of


def _functional_with_nested():
    inp = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(4, 3, name="c1")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Flatten(name="flat")(x)
    inner = keras.Sequential(
        [keras.Input((144,)), keras.layers.Dense(16, name="inner_d1"), keras.layers.Dense(8, name="inner_d2")],
        name="inner",
    )
    x = inner(x)
    out = keras.layers.Dense(3, name="head")(x)
    return keras.Model(inp, out, name="outer")


@pytest.mark.parametrize("make", [small_mlp, small_cnn, _functional_with_nested])
def test_wraps_every_prunable_layer_and_keeps_weights(make):
    model = make()
    before_w, before_c = weights_of(model), model.get_config()
    pruned = kprune.prune_low_magnitude(model, kprune.ConstantSparsity(0.5))
    assert_unchanged(model, before_w, before_c)
    assert pruned is not model
    expected = sorted(
        l.name for l in model._flatten_layers(include_self=False)
        if isinstance(l, (keras.layers.Dense, keras.layers.Conv2D))
    )
    assert sorted(w.layer.name for w in find_wrappers(pruned)) == expected
    x = np.random.default_rng(0).random((2,) + tuple(model.input_shape[1:])).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(pruned(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-6
    )


def test_prune_a_single_layer():
    layer = keras.layers.Dense(3, name="solo")
    wrapper = kprune.prune_low_magnitude(layer, kprune.ConstantSparsity(0.5))
    assert isinstance(wrapper, kprune.PruneWrapper)
    assert wrapper.layer is not layer and wrapper.layer.name == "solo"
    model = keras.Sequential([keras.Input((4,)), wrapper])
    assert model.output_shape == (None, 3)


def test_prune_a_built_layer_carries_weights():
    layer = keras.layers.Dense(3)
    layer.build((None, 4))
    wrapper = kprune.prune_low_magnitude(layer)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(wrapper.layer.kernel), keras.ops.convert_to_numpy(layer.kernel)
    )


@pytest.mark.parametrize("make", [small_mlp, small_cnn, _functional_with_nested])
def test_strip_restores_the_original_config_and_bakes_masks(make):
    model = make()
    pruned = kprune.prune_low_magnitude(model, kprune.ConstantSparsity(0.6))
    kprune.Pruner(pruned).start()  # applies the step-0 masks
    before_w, before_c = weights_of(pruned), pruned.get_config()
    stripped = kprune.strip_pruning(pruned)
    assert_unchanged(pruned, before_w, before_c)
    assert stripped.get_config() == model.get_config()
    assert not find_wrappers(stripped)
    masks = {w.layer.name: keras.ops.convert_to_numpy(w.masks[0]) for w in find_wrappers(pruned)}
    for layer in stripped._flatten_layers(include_self=False):
        if layer.name in masks:
            kernel = keras.ops.convert_to_numpy(layer.kernel)
            assert np.all(kernel[masks[layer.name] == 0] == 0)
    x = np.random.default_rng(1).random((2,) + tuple(model.input_shape[1:])).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(stripped(x)), keras.ops.convert_to_numpy(pruned(x)), atol=1e-5
    )


def test_strip_an_unpruned_model_returns_an_equal_model():
    model = small_cnn()
    stripped = kprune.strip_pruning(model)
    assert stripped is not model
    assert stripped.get_config() == model.get_config()
    for a, b in zip(weights_of(stripped), weights_of(model)):
        np.testing.assert_array_equal(a, b)


def test_strip_a_single_wrapper():
    wrapper = kprune.prune_low_magnitude(keras.layers.Dense(3, name="solo"))
    wrapper.build((None, 4))
    wrapper.assign_masks([np.eye(4, 3, dtype=bool)])
    plain = kprune.strip_pruning(wrapper)
    assert isinstance(plain, keras.layers.Dense) and plain.name == "solo"


def test_keras_history_private_attribute_is_still_there():
    # prune.py finds the InputLayer of a functional input through
    # KerasTensor._keras_history; this pins that private attribute.
    inp = keras.Input((3,), name="pinned")
    layer = inp._keras_history[0]
    assert isinstance(layer, keras.layers.InputLayer) and layer.name == "pinned"


def test_overrides_and_ignore():
    model = small_cnn()
    pruned = kprune.prune_low_magnitude(
        model,
        kprune.ConstantSparsity(0.5),
        sparsity={"fc1": 0.9, "logits": None},
        ignore=[keras.layers.Conv2D],
    )
    wrapped = {w.layer.name: w for w in find_wrappers(pruned)}
    assert sorted(wrapped) == ["fc1"]
    assert wrapped["fc1"].pruning_schedule.target_sparsity == 0.9
    pruned = kprune.prune_low_magnitude(model, ignore=["conv1"])
    assert "conv1" not in {w.layer.name for w in find_wrappers(pruned)}


def test_unprunable_layers_are_listed(capsys):
    model = small_cnn()
    pruned = kprune.prune_low_magnitude(model, verbose=1)
    assert unprunable_layers(pruned) == [("bn", "BatchNormalization")]
    out = capsys.readouterr().out
    assert "wrapped 4 layer(s)" in out and "bn (BatchNormalization)" in out


# -- bad input: a clear error, and nothing changed ------------------------


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.norm = keras.layers.LayerNormalization()

    def call(self, x):
        return self.norm(x)


def test_non_keras_object():
    with pytest.raises(TypeError, match="Keras 3 layer or model"):
        kprune.prune_low_magnitude(np.zeros((3, 3)))
    with pytest.raises(TypeError, match="Keras 3 layer or model"):
        kprune.strip_pruning("model.keras")


def test_subclassed_model_with_nothing_to_prune():
    model = _Subclassed()
    model(np.zeros((1, 4), "float32"))
    before_w = weights_of(model)
    with pytest.raises(ValueError, match="subclassed"):
        kprune.prune_low_magnitude(model)
    for a, b in zip(weights_of(model), before_w):
        np.testing.assert_array_equal(a, b)


def test_unbuilt_model():
    model = keras.Sequential([keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="not built"):
        kprune.prune_low_magnitude(model)
    assert not model.built


def test_already_pruned_model_is_an_error():
    pruned = kprune.prune_low_magnitude(small_mlp())
    before_w, before_c = weights_of(pruned), pruned.get_config()
    with pytest.raises(ValueError, match="already pruned"):
        kprune.prune_low_magnitude(pruned)
    assert_unchanged(pruned, before_w, before_c)
    with pytest.raises(ValueError, match="already pruned"):
        kprune.prune_low_magnitude(find_wrappers(pruned)[0])


def test_unknown_keyword():
    model = small_mlp()
    with pytest.raises(TypeError, match="target_sparsity"):
        kprune.prune_low_magnitude(model, target_sparsity=0.5)


def test_nothing_to_prune():
    model = keras.Sequential([keras.Input((4,)), keras.layers.LayerNormalization()])
    with pytest.raises(ValueError, match="no layer kprune can prune"):
        kprune.prune_low_magnitude(model)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"pruning_schedule": 0.5}, TypeError, "pruning_schedule"),
        ({"sparsity": {"nope": 0.5}}, ValueError, "Unknown layer name"),
        ({"ignore": ["nope"]}, ValueError, "Unknown layer name"),
        ({"ignore": [3]}, TypeError, "ignore"),
        ({"sparsity": {"d1": 1.2}}, ValueError, "sparsity"),
        ({"scope": "model"}, ValueError, "scope"),
        ({"granularity": "blocky"}, ValueError, "granularity"),
    ],
)
def test_bad_arguments_change_nothing(kwargs, error, match):
    model = small_mlp()
    before_w, before_c = weights_of(model), model.get_config()
    with pytest.raises(error, match=match):
        kprune.prune_low_magnitude(model, **kwargs)
    assert_unchanged(model, before_w, before_c)


# ------------------------------------------- layers Keras cannot deserialize safely


def test_a_model_with_a_python_lambda_prunes():
    inp = keras.Input((8,))
    x = keras.layers.Dense(16, name="d1")(inp)
    x = keras.layers.Lambda(lambda t: t * 2, name="double")(x)
    model = keras.Model(inp, keras.layers.Dense(3, name="d2")(x))
    before, config = weights_of(model), model.get_config()
    pruned = kprune.prune_low_magnitude(model, kprune.ConstantSparsity(0.5))
    x = np.random.default_rng(0).normal(size=(4, 8)).astype("float32")
    np.testing.assert_allclose(pruned.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)
    assert {w.label for w in find_wrappers(pruned)} == {"d1", "d2"}
    assert_unchanged(model, before, config)
    stripped = kprune.strip_pruning(pruned)
    assert isinstance(stripped.get_layer("double"), keras.layers.Lambda)


class _ForgetfulScale(keras.layers.Layer):
    """A subclassed block whose get_config drops its constructor argument."""

    def __init__(self, factor, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.w * self.factor

    def get_config(self):
        return super().get_config()


def test_a_block_whose_get_config_does_not_round_trip_gets_kprunes_message():
    inp = keras.Input((8,))
    x = keras.layers.Dense(8, name="d1")(inp)
    model = keras.Model(inp, _ForgetfulScale(3.0, name="scale")(x))
    before, config = weights_of(model), model.get_config()
    with pytest.raises(TypeError) as e:
        kprune.prune_low_magnitude(model, kprune.ConstantSparsity(0.5))
    text = str(e.value)
    assert text.startswith("kprune cannot copy layer 'scale' (_ForgetfulScale)")
    assert "'factor'" in text and "get_config()" in text and "Fix:" in text
    assert_unchanged(model, before, config)
