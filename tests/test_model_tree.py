"""kprune.core.model_tree: the one place that walks and clones a model's layer tree."""

import keras
import numpy as np
import pytest

import kprune
from kprune.core import model_tree


def _nested():
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d1"),
                              keras.layers.BatchNormalization(name="bn")], name="inner")
    x = keras.Input((4,), name="features")
    out = keras.layers.Dense(2, name="head")(inner(x))
    return keras.Model(x, out, name="outer")


class _Block(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.proj = keras.layers.Dense(4, name="proj")

    def call(self, x):
        return self.proj(x)


def test_walkers_agree_on_a_nested_graph_model():
    model = _nested()
    # leaf_layers opens nested models and keeps their InputLayers (they are cloned too)
    leaves = model_tree.leaf_layers(model)
    assert [type(l).__name__ for l in leaves[:2]] == ["InputLayer", "InputLayer"]
    assert [l.name for l in leaves[2:]] == ["d1", "bn", "head"]
    assert sorted(model_tree.leaf_layer_paths(model)) == ["features", "head", "inner/bn", "inner/d1"]
    assert {l.name for l in model_tree.all_layers(model)} >= {"inner", "d1", "bn", "head"}
    labels = [label for _, label, _ in model_tree.walk(model)]
    assert labels[:2] == ["features", "inner"] and labels[2].startswith("inner/input_layer")
    assert labels[3:] == ["inner/d1", "inner/bn", "head"]
    assert [label for _, label, top in model_tree.prunable_layer_tree(model)] == ["inner/d1", "head"]
    assert model_tree.is_graph_model(model) and model_tree.is_graph_model(model.get_layer("inner"))
    assert model_tree.unprunable_layers(model) == [("bn", "BatchNormalization")]


def test_clone_layers_keeps_input_names_and_weights_and_leaves_the_model_alone():
    model = _nested()
    before = [w.copy() for w in model.get_weights()]
    copy = model_tree.clone_layers(model, model_tree.fresh_copy)
    assert copy is not model and [t.name for t in copy.inputs] == ["features"]
    for a, b in zip(copy.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(0).normal(size=(3, 4)).astype("float32")
    np.testing.assert_allclose(copy.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_find_wrappers_sees_wrappers_and_pruned_model_groups():
    pruned = kprune.prune_low_magnitude(_nested(), kprune.ConstantSparsity(0.5, 0))
    assert [w.layer.name for w in model_tree.find_wrappers(pruned)] == ["d1", "head"]
    wrapper = model_tree.find_wrappers(pruned)[0]
    assert model_tree.find_wrappers(wrapper) == [wrapper]

    x = keras.Input((4,))
    composite = keras.Model(x, _Block(name="block")(x))
    tree = kprune.prune_low_magnitude(composite, kprune.ConstantSparsity(0.5, 0))
    assert isinstance(tree, kprune.PrunedModel)
    assert [g.label for g in model_tree.find_wrappers(tree)] == ["block/proj"]
    # a layer with an unrelated `groups` attribute (Conv2D) is not a pruned model
    assert model_tree.find_wrappers(keras.Sequential([keras.Input((8, 8, 2)), keras.layers.Conv2D(2, 3, groups=2)])) == []


def test_tree_index_finds_a_layer_in_a_copy_by_position():
    x = keras.Input((4,))
    composite = keras.Model(x, _Block(name="block")(x))
    copy = model_tree.copy_model(composite)
    where = model_tree.tree_index(composite, "block/proj")
    assert where is not None and model_tree.tree_index(copy, "block/proj") == where
    found = model_tree.find_layers(copy, ["block/proj"], like=composite)
    assert found["block/proj"] is copy.get_layer("block").proj
    assert model_tree.needs_pruned_model(composite) and not model_tree.needs_pruned_model(_nested())


def test_check_clonable_explains_subclassed_models():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.fc = keras.layers.Dense(2)

        def call(self, x):
            return self.fc(x)

    net = Net()
    net(np.zeros((1, 3), "float32"))
    with pytest.raises(ValueError, match="subclassed keras.Model"):
        model_tree.check_clonable(net, "prune_low_magnitude")
    with pytest.raises(TypeError, match="expects a Keras 3 layer or model"):
        model_tree.check_clonable("model", "strip_pruning")
