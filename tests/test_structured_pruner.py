"""Tests for kprune.structured.channel_pruner: equivalence, surgery, bad input."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from structured_models import (  # noqa: E402
    L,
    assert_same_snapshot,
    check_equivalent,
    check_save_and_tflite,
    inception_model,
    inputs_for,
    inverted_residual_model,
    randomize,
    resnet_block_model,
    sequential_cnn,
    snapshot,
)

from kprune.structured import (  # noqa: E402
    ChannelPruner,
    ChannelPruningCallback,
    prune_channels,
    prune_iteratively,
)

# --- correctness: pruned == masked, .keras and TFLite ------------------------


@pytest.mark.parametrize(
    "builder", [sequential_cnn, resnet_block_model, inception_model, inverted_residual_model]
)
def test_small_models_equal_masked_and_export(builder, tmp_path):
    model = randomize(builder())
    pruner, thin, x = check_equivalent(model, pruning_ratio=0.5)
    check_save_and_tflite(thin, x, tmp_path)


def test_sequential_flatten_head_widths():
    model = randomize(sequential_cnn())
    pruner, thin, _ = check_equivalent(model, pruning_ratio=0.5)
    widths = pruner.plan().widths
    assert widths["c1"] == (8, 4) and widths["c2"] == (12, 6) and widths["fc"] == (16, 8)
    # Flatten -> Dense: the Dense input shrinks by whole channels (H*W each).
    dense_in = thin.get_layer("fc").kernel.shape[0]
    assert dense_in == 5 * 5 * 6
    # Output layer is ignored by default.
    assert thin.layers[-1].units == 5


def test_resnet_add_ties_shortcuts():
    model = randomize(resnet_block_model())
    pruner, thin, _ = check_equivalent(model, pruning_ratio=0.5)
    assert thin.get_layer("stem").filters == thin.get_layer("b1_c2").filters == 4
    assert thin.get_layer("b2_proj").filters == thin.get_layer("b2_c2").filters == 8
    assert thin.get_layer("b1_c1").filters == 3


def test_keras_mobilenet_v2(tmp_path):
    model = keras.applications.MobileNetV2(
        weights=None, input_shape=(32, 32, 3), alpha=0.35, classes=10)
    randomize(model)
    pruner, thin, x = check_equivalent(model, pruning_ratio=0.5)
    assert not pruner.graph.unknown_layers
    check_save_and_tflite(thin, x, tmp_path)


def test_keras_resnet50(tmp_path):
    model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10)
    randomize(model)
    pruner, thin, x = check_equivalent(model, pruning_ratio=0.5, round_to=8)
    assert not pruner.graph.unknown_layers
    for layer in thin.layers:
        if isinstance(layer, L.Conv2D):
            assert layer.filters % 8 == 0
    check_save_and_tflite(thin, x, tmp_path)


# --- options -----------------------------------------------------------------


def test_every_group_keeps_one_channel():
    model = randomize(resnet_block_model())
    pruner, thin, _ = check_equivalent(model, pruning_ratio=0.99)
    for before, after in pruner.plan().widths.values():
        assert after >= 1


def test_round_to():
    model = randomize(inverted_residual_model())
    pruner, thin, _ = check_equivalent(model, pruning_ratio=0.5, round_to=8)
    for name, (before, after) in pruner.plan().widths.items():
        if name != "head":
            assert after % 8 == 0 or after == before, (name, before, after)


def test_global_pruning_uses_one_threshold():
    model = randomize(resnet_block_model())
    pruner, thin, _ = check_equivalent(model, pruning_ratio=0.5, global_pruning=True)
    prunable = sum(int((~g.frozen).sum()) for g in pruner.groups)
    removed = pruner.plan().num_removed
    assert abs(removed - prunable // 2) <= 1
    with pytest.raises(ValueError, match="global_pruning"):
        ChannelPruner(model, pruning_ratio={"stem": 0.5}, global_pruning=True)


def test_per_layer_ratio_dict():
    model = randomize(resnet_block_model())
    pruner, thin, _ = check_equivalent(model, pruning_ratio={"b2_c1": 0.5})
    assert thin.get_layer("b2_c1").filters == 5
    assert thin.get_layer("stem").filters == 8
    assert thin.get_layer("b2_c2").filters == 16


def test_ignored_layers_keep_their_outputs():
    model = randomize(resnet_block_model())
    pruner, thin, _ = check_equivalent(model, pruning_ratio=0.5, ignored_layers=["b2_c1"])
    assert thin.get_layer("b2_c1").filters == 10
    assert thin.get_layer("stem").filters == 4


def test_from_zero_channels_removes_exactly_the_zero_filters():
    model = randomize(sequential_cnn())
    conv = model.layers[0]
    k, b = conv.get_weights()
    k[..., [1, 4, 6]] = 0
    conv.set_weights([k, b])
    pruner = ChannelPruner(model, from_zero_channels=True)
    plan = pruner.plan()
    assert plan.widths[conv.name] == (8, 5)
    assert plan.num_removed == 3
    removed = plan.removed[[g.index for g in pruner.groups if conv.name in g.producers][0]]
    assert np.flatnonzero(removed).tolist() == [1, 4, 6]


def test_from_zero_channels_keeps_one_channel():
    model = randomize(sequential_cnn())
    conv = model.layers[0]
    k, b = conv.get_weights()
    conv.set_weights([np.zeros_like(k), b])
    plan = ChannelPruner(model, from_zero_channels=True).plan()
    assert plan.widths[conv.name] == (8, 1)


def test_prune_channels_and_report():
    model = randomize(resnet_block_model())
    thin = prune_channels(model, pruning_ratio=0.25)
    assert thin.get_layer("stem").filters == 6
    text = ChannelPruner(model, pruning_ratio=0.25).report()
    assert "b2_c1" in text and "before" in text


def test_prune_iteratively_reaches_the_ratio():
    model = randomize(resnet_block_model())
    calls = []

    def tune(m, step):
        calls.append((step, m.get_layer("b2_c1").filters))

    thin = prune_iteratively(model, pruning_ratio=0.5, steps=2, fine_tune=tune)
    assert [c[0] for c in calls] == [1, 2]
    assert calls[0][1] in (7, 8) and thin.get_layer("b2_c1").filters == 5
    assert thin.get_layer("stem").filters == 4


def test_callback_masks_during_fit_and_returns_thin_model():
    model = randomize(resnet_block_model())
    model.compile("adam", "mse")
    x = inputs_for(model, n=16)
    y = np.zeros((16, 4), "float32")
    cb = ChannelPruningCallback(0.5, prune_epochs=[0, 1])
    model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[cb])
    thin = cb.pruned_model
    assert thin is not None and thin.get_layer("stem").filters == 4
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(thin(x)), keras.ops.convert_to_numpy(model(x)),
        rtol=0, atol=1e-5)


# --- bad input ---------------------------------------------------------------


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = L.Conv2D(4, 3)
        self.head = L.Dense(2)

    def call(self, x):
        return self.head(keras.ops.mean(self.conv(x), axis=(1, 2)))


def test_subclassed_model_is_refused():
    model = Subclassed()
    model(np.zeros((1, 8, 8, 3), "float32"))
    with pytest.raises(TypeError, match="functional"):
        ChannelPruner(model)


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
def test_ratio_outside_range(ratio):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        ChannelPruner(sequential_cnn(), pruning_ratio=ratio)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        ChannelPruner(sequential_cnn(), pruning_ratio={"c1": ratio})


def test_ratio_wrong_type():
    with pytest.raises(TypeError, match="pruning_ratio"):
        ChannelPruner(sequential_cnn(), pruning_ratio="half")


def test_unknown_ignored_layer_name():
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        ChannelPruner(resnet_block_model(), ignored_layers=["nope"])
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        ChannelPruner(resnet_block_model(), pruning_ratio={"nope": 0.5})


def test_nothing_prunable():
    x = keras.Input((8,))
    model = keras.Model(x, L.Dense(3)(x))
    with pytest.raises(ValueError, match="Nothing to prune"):
        ChannelPruner(model)


def test_unbuilt_sequential():
    with pytest.raises(ValueError, match="keras.Input"):
        ChannelPruner(keras.Sequential([L.Dense(3)]))


def test_caller_model_is_never_modified():
    model = randomize(inverted_residual_model())
    before = snapshot(model)
    pruner = ChannelPruner(model, pruning_ratio=0.5, round_to=4)
    pruner.prune()
    pruner.masked_model()
    with pytest.raises(ValueError):
        ChannelPruner(model, pruning_ratio=2.0)
    assert_same_snapshot(before, snapshot(model))


def test_a_model_with_prune_wrappers_says_strip_pruning_first():
    import kprune

    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, name="a"),
                              keras.layers.Dense(3, name="b")])
    pruned = kprune.prune_low_magnitude(model, kprune.ConstantSparsity(0.5))
    with pytest.raises(ValueError, match=r"strip_pruning first.*kprune.strip_pruning\(model\)"):
        ChannelPruner(pruned, pruning_ratio=0.5)
