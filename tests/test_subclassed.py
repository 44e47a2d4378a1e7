"""Subclassed models: wrap layers in __init__, or get a clear error."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import kprune  # noqa: E402
from kprune.core import masking  # noqa: E402
from kprune.core.model_tree import find_wrappers  # noqa: E402

L = keras.layers


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _data(n=64, features=12, classes=4):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, features)).astype("float32")
    y = rng.integers(0, classes, size=(n,))
    return x, y


class PlainNet(keras.Model):
    """A subclassed model as users write them: nothing kprune-specific."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.fc1 = L.Dense(16, activation="relu", name="fc1")
        self.bn = L.BatchNormalization(name="bn")
        self.body = keras.Sequential([L.Dense(16, name="body_fc")], name="body")
        self.out = L.Dense(4, name="logits")

    def call(self, x, training=False):
        return self.out(self.body(self.bn(self.fc1(x), training=training)))


class PrunedNet(keras.Model):
    """The pattern kprune recommends: create the layers wrapped in __init__."""

    def __init__(self, target=0.8, **kwargs):
        super().__init__(**kwargs)
        schedule = kprune.PolynomialDecay(0.0, target, begin_step=0, end_step=8, frequency=2)
        self.fc1 = kprune.PruneWrapper(L.Dense(16, activation="relu", name="fc1"), schedule)
        self.drop = L.Dropout(0.1)
        body = keras.Sequential(
            [keras.Input((16,)), L.Dense(16, activation="relu", name="body_fc"),
             L.Dense(16, name="body_fc2")],
            name="body",
        )
        # A nested functional/Sequential model is pruned with the usual API.
        self.body = kprune.prune_low_magnitude(body, schedule)
        self.out = L.Dense(4, name="logits")  # left dense on purpose

    def call(self, x, training=False):
        return self.out(self.body(self.drop(self.fc1(x), training=training)))


def _assert_target(model, target):
    wrappers = find_wrappers(model)
    assert sorted(w.layer.name for w in wrappers) == ["body_fc", "body_fc2", "fc1"]
    for w in wrappers:
        for var, mask in zip(w.prunable_weights, w.masks):
            m, v = _np(mask), _np(var)
            assert int(m.sum()) == masking.kept_count(m.size, target), var.path
            assert np.all(v[m == 0] == 0)


@pytest.mark.parametrize("build_first", [True, False], ids=["built", "built_by_fit"])
def test_subclassed_with_wrappers_in_init_trains_to_target(build_first):
    model = PrunedNet(0.8)
    x, y = _data()
    if build_first:
        model(x[:1])
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[kprune.PruningCallback()])
    _assert_target(model, 0.8)
    assert np.count_nonzero(_np(model.out.kernel)) == _np(model.out.kernel).size
    report = kprune.sparsity_report(model)
    assert {r.layer for r in report.rows} >= {"fc1", "body_fc", "body_fc2"}



def test_subclassed_training_without_callback_names_it():
    model = PrunedNet()
    x, y = _data()
    model.compile("adam", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="PruningCallback"):
        model.fit(x, y, epochs=1, verbose=0)


def test_subclassed_weights_round_trip(tmp_path):
    model = PrunedNet(0.5)
    x, y = _data()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[kprune.PruningCallback()])
    path = str(tmp_path / "net.weights.h5")
    model.save_weights(path)
    fresh = PrunedNet(0.5)
    fresh(x[:1])
    fresh.load_weights(path)
    for a, b in zip(find_wrappers(model), find_wrappers(fresh)):
        for ma, mb in zip(a.masks, b.masks):
            np.testing.assert_array_equal(_np(ma), _np(mb))
        assert a.step == b.step > 0
    np.testing.assert_allclose(_np(fresh(x)), _np(model(x)), rtol=1e-5, atol=1e-6)


def test_prune_low_magnitude_on_a_built_subclassed_model_prunes_a_copy():
    model = PlainNet(name="plain_net")
    x, _ = _data()
    model(x[:1])
    before = [_np(v).copy() for v in model.weights]
    pruned = kprune.prune_low_magnitude(model, kprune.ConstantSparsity(0.5))
    assert isinstance(pruned, kprune.PrunedModel)
    labels = [g.label for g in find_wrappers(pruned)]
    assert "fc1" in labels and "logits" in labels
    assert any(label.startswith("body/") for label in labels), labels
    np.testing.assert_allclose(_np(pruned(x)), _np(model(x)), rtol=1e-5, atol=1e-6)
    # the caller's model is untouched
    assert not find_wrappers(model)
    for a, b in zip(before, model.weights):
        np.testing.assert_array_equal(a, _np(b))
        assert b.constraint is None


def test_prune_low_magnitude_on_unbuilt_subclassed_still_explains():
    with pytest.raises(ValueError, match="(?s)subclassed.*'fc1' \\(Dense\\): prunable"):
        kprune.prune_low_magnitude(PlainNet())


def test_already_wrapped_subclassed_says_just_train_it():
    model = PrunedNet()
    model(_data()[0][:1])
    with pytest.raises(ValueError, match="(?s)already holds PruneWrapper.*PruningCallback"):
        kprune.prune_low_magnitude(model)
    with pytest.raises(ValueError, match="(?s)strip_pruning.*subclassed.*already exactly zero"):
        kprune.strip_pruning(model)


class Block(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = L.Dense(8, activation="relu", name="blk_fc")

    def call(self, x):
        return self.inner(x)


def test_subclassed_block_inside_functional_is_pruned_too():
    inp = keras.Input((12,))
    out = L.Dense(4, name="top")(Block(name="blk")(L.Dense(8, name="pre")(inp)))
    model = keras.Model(inp, out)
    x, y = _data()
    pruned = kprune.prune_low_magnitude(model, kprune.ConstantSparsity(0.5, frequency=1))
    assert sorted(w.label for w in find_wrappers(pruned)) == ["blk/blk_fc", "pre", "top"]
    # same function before training (all weights carried over, block included)
    np.testing.assert_allclose(_np(pruned(x)), _np(model(x)), rtol=1e-5, atol=1e-6)
    pruned.compile("adam", "sparse_categorical_crossentropy")
    pruned.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[kprune.PruningCallback()])
    for w in find_wrappers(pruned):
        m = _np(w.masks[0])
        assert int(m.sum()) == masking.kept_count(m.size, 0.5)
