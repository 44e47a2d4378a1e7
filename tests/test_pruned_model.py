"""PrunedModel: layers pruned where they are (composite layers, subclassed models)."""

import keras
import numpy as np
import pytest

import kprune
from conftest import ExactZeros, toy_data
from kprune.core.model_tree import find_wrappers
from kprune.core.model_tree import copy_model, prunable_layer_tree
from kprune.core.pruned_model import PrunedModel

L = keras.layers


@keras.saving.register_keras_serializable("kprune_tests")
class Block(L.Layer):
    """A custom composite layer: two Dense layers kprune cannot wrap."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.d1 = L.Dense(units, activation="relu", name="d1")
        self.d2 = L.Dense(units, name="d2")

    def call(self, x):
        return self.d2(self.d1(x))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable("kprune_tests")
class Net(keras.Model):
    """A subclassed model around a custom block and a head."""

    def __init__(self, units=16, classes=5, **kwargs):
        super().__init__(**kwargs)
        self.units, self.classes = units, classes
        self.block = Block(units, name="block")
        self.head = L.Dense(classes, name="head")

    def call(self, x):
        return self.head(self.block(x))

    def get_config(self):
        return {**super().get_config(), "units": self.units, "classes": self.classes}


@keras.saving.register_keras_serializable("kprune_tests")
class Outer(keras.Model):
    """A subclassed model holding a subclassed model."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = Net(name="inner")
        self.out = L.Dense(5, name="out")

    def call(self, x):
        return self.out(self.inner(x))


def _built(model, inputs=20):
    model(np.zeros((1, inputs), "float32"))
    return model


def _functional_twin(net):
    """The functional model that computes what `Net` computes, same weights."""
    inp = keras.Input((20,))
    h = L.Dense(net.units, activation="relu", name="d1")(inp)
    h = L.Dense(net.units, name="d2")(h)
    model = keras.Model(inp, L.Dense(net.classes, name="head")(h))
    for dst, src in zip(model.weights, net.weights):
        dst.assign(keras.ops.convert_to_numpy(src))
    return model


def _np(x):
    return keras.ops.convert_to_numpy(x)




def _fit(model, epochs=2, schedule=None, callbacks=()):
    x, y = toy_data(64)
    pruned = kprune.prune_low_magnitude(
        model, schedule or kprune.PolynomialDecay(0.0, 0.75, 0, 6, frequency=2))
    pruned.compile(keras.optimizers.Adam(1e-2),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x, y, batch_size=16, epochs=epochs, verbose=0, shuffle=False,
               callbacks=[kprune.PruningCallback(), ExactZeros(), *callbacks])
    return pruned


def test_layer_tree_finds_layers_inside_composite_layers_and_subclassed_models():
    net = _built(Net())
    tree = prunable_layer_tree(net)
    assert [(label, top) for _, label, top in tree] == [
        ("block/d1", False), ("block/d2", False), ("head", False)]


def test_subclassed_model_with_composite_layer_prunes_to_target_with_exact_zeros():
    net = _built(Net())
    before = [np.array(_np(w)) for w in net.weights]
    pruned = _fit(net)
    assert isinstance(pruned, PrunedModel)
    for group in find_wrappers(pruned):
        (kernel,) = group.prunable_weights
        assert np.count_nonzero(_np(kernel) == 0) == kernel.shape[0] * kernel.shape[1] * 3 // 4
    # The caller's model is untouched: same weights, no constraints.
    for w, b in zip(net.weights, before):
        np.testing.assert_array_equal(_np(w), b)
        assert w.constraint is None


def test_masks_equal_the_functional_equivalent_with_the_same_weights():
    net = _built(Net())
    twin = _functional_twin(net)
    a = _fit(net)
    b = _fit(twin)
    masks_a = [_np(m) for g in find_wrappers(a) for m in g.masks]
    masks_b = [_np(m) for w in find_wrappers(b) for m in w.masks]
    assert len(masks_a) == len(masks_b) == 3
    for ma, mb in zip(masks_a, masks_b):
        np.testing.assert_array_equal(ma, mb)


def test_nested_subclassed_models_are_reached():
    outer = _built(Outer())
    pruned = _fit(outer, schedule=kprune.ConstantSparsity(0.5, frequency=2))
    labels = [g.label for g in find_wrappers(pruned)]
    assert labels == ["inner/block/d1", "inner/block/d2", "inner/head", "out"]


def test_save_load_resume_and_strip(tmp_path):
    net = _built(Net())
    x, y = toy_data(64)
    pruned = _fit(net, epochs=1)
    path = str(tmp_path / "pruned.keras")
    pruned.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, PrunedModel)
    np.testing.assert_array_equal(_np(loaded(x)), _np(pruned(x)))
    for g, h in zip(find_wrappers(pruned), find_wrappers(loaded)):
        for m, n in zip(g.masks, h.masks):
            np.testing.assert_array_equal(_np(m), _np(n))
    # Resume: the step comes back from the saved optimizer, the schedule goes on.
    assert int(_np(loaded.optimizer.iterations)) == 4
    loaded.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False,
               callbacks=[kprune.PruningCallback(), ExactZeros()])
    assert all(g.step == 8 for g in find_wrappers(loaded))
    plain = kprune.strip_pruning(loaded)
    assert type(plain) is Net
    np.testing.assert_array_equal(_np(plain(x)), _np(loaded(x)))
    assert all(w.constraint is None for w in plain.weights)


def test_fit_without_the_callback_names_it():
    pruned = kprune.prune_low_magnitude(_built(Net()), kprune.ConstantSparsity(0.5))
    pruned.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = toy_data(16)
    with pytest.raises(ValueError, match="PruningCallback"):
        pruned.fit(x, y, verbose=0)


def test_overrides_and_ignore_by_path_or_unique_name():
    net = _built(Net())
    pruned = kprune.prune_low_magnitude(
        net, kprune.ConstantSparsity(0.5), sparsity={"block/d1": 0.9}, ignore=["head"])
    groups = {g.label: g for g in find_wrappers(pruned)}
    assert sorted(groups) == ["block/d1", "block/d2"]
    assert groups["block/d1"].pruning_schedule.final_sparsity == 0.9
    with pytest.raises(ValueError, match="Unknown layer"):
        kprune.prune_low_magnitude(net, sparsity={"nope": 0.5})


def test_ambiguous_names_ask_for_paths():
    inp = keras.Input((20,))
    out = Block(8, name="b2")(Block(8, name="b1")(inp))
    model = keras.Model(inp, out)
    with pytest.raises(ValueError, match="use their paths"):
        kprune.prune_low_magnitude(model, sparsity={"d1": 0.9})
    pruned = kprune.prune_low_magnitude(model, sparsity={"b2/d1": 0.9})
    assert {g.label for g in find_wrappers(pruned)} == {"b1/d1", "b1/d2", "b2/d1", "b2/d2"}


def test_a_model_that_cannot_be_copied_asks_for_in_place():
    class NoConfig(keras.Model):
        def __init__(self, width):  # no **kwargs, no get_config: cannot be rebuilt
            super().__init__()
            self.d = L.Dense(width)

        def call(self, x):
            return self.d(x)

    model = _built(NoConfig(4))
    with pytest.raises(ValueError, match="in_place=True"):
        kprune.prune_low_magnitude(model, kprune.ConstantSparsity(0.5))
    pruned = kprune.prune_low_magnitude(model, kprune.ConstantSparsity(0.5), in_place=True)
    assert pruned.model is model


def test_copy_model_copies_weights_of_a_subclassed_model():
    net = _built(Net())
    copy = copy_model(net)
    assert copy is not net and type(copy) is Net
    for a, b in zip(copy.weights, net.weights):
        assert a is not b
        np.testing.assert_array_equal(_np(a), _np(b))


def test_layers_keras_names_anew_in_the_copy_are_found_by_position(tmp_path):
    """Unnamed sublayers get new automatic names in a copy or a loaded model
    (`dense_3` for `dense`); a PrunedModel finds its layers by tree position."""

    @keras.saving.register_keras_serializable("kprune_tests")
    class Unnamed(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.hidden = L.Dense(8, activation="relu")
            self.out = L.Dense(5)

        def call(self, x):
            return self.out(self.hidden(x))

    model = _built(Unnamed())
    pruned = _fit(model, epochs=1)
    x, _ = toy_data(16)
    path = str(tmp_path / "unnamed.keras")
    pruned.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(_np(loaded(x)), _np(pruned(x)))
    assert [g.label for g in find_wrappers(loaded)] == [g.label for g in find_wrappers(pruned)]
    init = kprune.prune_at_init(model, toy_data(32), "snip", 0.5, verbose=0)
    assert len(find_wrappers(init)) == 2
