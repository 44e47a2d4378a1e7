"""Tests of one-shot pruning (kprune.methods.one_shot): magnitude, Wanda, SparseGPT."""

import warnings

import keras
import numpy as np
import pytest

import kprune
from kprune.methods import one_shot as pt
from kprune.methods.one_shot import capture, result
from conftest import assert_unchanged, small_cnn, weights_of


def scaled_inputs(rng, n=512, d=64):
    """Correlated inputs whose feature scales differ by orders of magnitude,
    as activations do."""
    scales = np.exp(rng.normal(0.0, 1.0, size=d))
    mixing = np.eye(d) + rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ mixing * scales


def output_error(x, w, w_new):
    return float(np.linalg.norm(x @ w - x @ w_new))


# --------------------------------------------------------------------------
# What defines each method (pure numpy math)
# --------------------------------------------------------------------------


def test_wanda_scores_equal_weight_times_input_norm_by_hand():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 3)) * np.array([1.0, 5.0, 0.1])
    w = rng.normal(size=(3, 2))
    by_hand = np.empty_like(w)
    for i in range(3):
        norm = np.sqrt(sum(x[r, i] ** 2 for r in range(10)))
        for j in range(2):
            by_hand[i, j] = abs(w[i, j]) * norm
    np.testing.assert_allclose(pt.wanda_scores(w, (x ** 2).sum(0)), by_hand, rtol=1e-12)


def test_wanda_compares_within_each_output_unit():
    rng = np.random.default_rng(1)
    x = scaled_inputs(rng, 64, 9)
    w = rng.normal(size=(9, 5))
    mask, w_new = pt.wanda(w, (x ** 2).sum(0), 0.5)
    scores = pt.wanda_scores(w, (x ** 2).sum(0))
    for j in range(5):
        keep = kprune.core.masking.kept_count(9, 0.5)
        assert mask[:, j].sum() == keep
        # the kept weights of every column are its best scores
        assert scores[mask[:, j], j].min() >= scores[~mask[:, j], j].max()
    np.testing.assert_array_equal(w_new, w * mask)


@pytest.mark.parametrize("granularity", [None, kprune.NM(2, 4)], ids=["50%", "2:4"])
def test_layer_output_error_sparsegpt_below_wanda_below_magnitude(granularity):
    for seed in range(5):
        rng = np.random.default_rng(seed)
        x = scaled_inputs(rng)
        w = rng.normal(size=(64, 32))
        h, sq = x.T @ x, (x ** 2).sum(0)
        _, w_mag = pt.magnitude(w, 0.5, granularity)
        _, w_wanda = pt.wanda(w, sq, 0.5, granularity)
        _, w_gpt = pt.sparsegpt(w, h, 0.5, granularity)
        e_mag, e_wanda, e_gpt = (output_error(x, w, v) for v in (w_mag, w_wanda, w_gpt))
        assert e_gpt < e_wanda < e_mag, (seed, e_gpt, e_wanda, e_mag)


def test_sparsegpt_update_equals_closed_form_obs_on_a_tiny_row():
    # One output unit, four inputs; the two smallest weights come first, so
    # SparseGPT prunes inputs {0, 1} and updates the others. OBS's closed form
    # for removing the set Q: delta = -Hinv[:, Q] (Hinv[Q, Q])^-1 w_Q.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 4)) @ rng.normal(size=(4, 4))
    w = np.array([[0.01], [-0.02], [1.0], [-0.7]])
    damping = 0.01
    h = x.T @ x
    mask, w_new = pt.sparsegpt(w, h, 0.5, damping=damping)
    np.testing.assert_array_equal(mask[:, 0], [False, False, True, True])
    hd = h + damping * np.mean(np.diag(h)) * np.eye(4)
    hinv = np.linalg.inv(hd)
    q = [0, 1]
    delta = -hinv[:, q] @ np.linalg.solve(hinv[np.ix_(q, q)], w[q, 0])
    expected = w[:, 0] + delta
    np.testing.assert_allclose(expected[q], 0.0, atol=1e-12)
    np.testing.assert_allclose(w_new[:, 0], expected, rtol=1e-9, atol=1e-12)


def test_sparsegpt_single_weight_is_the_obs_update():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 5))
    w = np.array([[0.001], [0.5], [-0.9], [0.8], [1.1]])
    h = x.T @ x
    _, w_new = pt.sparsegpt(w, h, 0.2, damping=0.0)  # prunes exactly input 0
    hinv = np.linalg.inv(h)
    expected = w[:, 0] - w[0, 0] / hinv[0, 0] * hinv[:, 0]
    np.testing.assert_allclose(w_new[:, 0], expected, rtol=1e-9, atol=1e-12)


def test_sparsegpt_inputs_never_seen_are_zeroed():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 6))
    x[:, 2] = 0.0
    w = rng.normal(size=(6, 3)) + 3.0
    mask, w_new = pt.sparsegpt(w, x.T @ x, 0.5)
    assert not mask[2].any() and not w_new[2].any()


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_nm_pattern_holds_exactly_with_segments(method):
    # in = 3 segments of 10 inputs (a Conv kernel [1, 3, 10, out] in 2-D):
    # groups of 4 along each segment, the engine's tail rule for the last 2.
    rng = np.random.default_rng(0)
    x = scaled_inputs(rng, 128, 30)
    w = rng.normal(size=(30, 7))
    g = kprune.NM(2, 4)
    if method == "magnitude":
        mask, w_new = pt.magnitude(w, 0.5, g, in_length=10)
    elif method == "wanda":
        mask, w_new = pt.wanda(w, (x ** 2).sum(0), 0.5, g, in_length=10)
    else:
        mask, w_new = pt.sparsegpt(w, x.T @ x, 0.5, g, block_size=8, in_length=10)
    segments = mask.reshape(3, 10, 7)
    for start, zeros in ((0, 2), (4, 2), (8, 1)):  # tail of 2: round(2 * 2 / 4) = 1
        stop = min(start + 4, 10)
        np.testing.assert_array_equal((~segments[:, start:stop]).sum(axis=1), zeros)
    assert not w_new[~mask].any()


def test_select_goes_through_the_mask_engine():
    rng = np.random.default_rng(0)
    s = rng.random((16, 4))
    np.testing.assert_array_equal(pt.select(s, 0.75), kprune.compute_mask(s, 0.75))
    np.testing.assert_array_equal(
        pt.select(s, 0.5, kprune.Block((4, 1))), kprune.compute_mask(s, 0.5, kprune.Block((4, 1))))


# --------------------------------------------------------------------------
# Views: im2col and EinsumDense give X2 @ W2 == the layer's output
# --------------------------------------------------------------------------


@pytest.mark.parametrize("layer, shape", [
    (keras.layers.Conv2D(4, 3, padding="same", use_bias=False), (2, 7, 6, 3)),
    (keras.layers.Conv2D(4, (3, 2), strides=2, padding="valid", use_bias=False), (2, 9, 8, 3)),
    (keras.layers.Conv2D(4, 3, dilation_rate=2, padding="same", use_bias=False), (1, 9, 9, 2)),
    (keras.layers.Conv1D(5, 3, padding="causal", use_bias=False), (2, 8, 3)),
    (keras.layers.Conv1D(5, 4, strides=3, padding="same", use_bias=False), (2, 10, 3)),
    (keras.layers.EinsumDense("abc,cde->abde", (None, 2, 3)), (2, 5, 4)),
    (keras.layers.EinsumDense("abcd,cde->abe", (None, 4)), (2, 5, 2, 3)),
    (keras.layers.EinsumDense("...b,bc->...c", 6), (2, 3, 5)),
    (keras.layers.Dense(3, use_bias=False), (2, 4, 5)),
], ids=["conv2d-same", "conv2d-stride", "conv2d-dilated", "conv1d-causal", "conv1d-stride-same",
        "einsum-qkv", "einsum-output", "einsum-ellipsis", "dense-3d"])
def test_views_reproduce_the_layer_output(layer, shape):
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    y = keras.ops.convert_to_numpy(layer(x))
    if getattr(layer, "bias", None) is not None:
        y = y - keras.ops.convert_to_numpy(layer.bias)
    view = pt.kernel_view(layer)
    w2 = view.to_2d(keras.ops.convert_to_numpy(layer.kernel))
    got = view.inputs_2d(x) @ w2
    if isinstance(layer, keras.layers.EinsumDense):
        np.testing.assert_allclose(got.reshape(y.shape), y, atol=1e-4)
    else:
        np.testing.assert_allclose(got, y.reshape(-1, y.shape[-1]), atol=1e-4)
    np.testing.assert_array_equal(view.from_2d(w2), keras.ops.convert_to_numpy(layer.kernel))


# --------------------------------------------------------------------------
# Capture
# --------------------------------------------------------------------------


class Block2(keras.layers.Layer):
    """A composite layer: its Dense layers are not in any model graph."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.up = keras.layers.Dense(8, activation="relu", name="up")
        self.down = keras.layers.Dense(4, name="down")
        self.unused = keras.layers.Dense(4, name="unused")

    def build(self, input_shape):
        self.up.build(input_shape)
        self.down.build(input_shape[:-1] + (8,))
        self.unused.build(input_shape)

    def call(self, x):
        return x + self.down(self.up(x))

    def get_config(self):
        return super().get_config()


class Sub(keras.Model):
    def __init__(self):
        super().__init__()
        self.block = Block2()
        self.head = keras.layers.Dense(3)

    def call(self, x):
        return self.head(self.block(x))


def test_capture_inputs_sees_nested_layers_of_a_subclassed_model_and_restores_call():
    model = Sub()
    x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    model(x)
    seen = {}
    with pt.capture_inputs([model.block.down, model.head], lambda l, t: seen.setdefault(l.name, t)):
        out = model(x)
    expected = keras.ops.convert_to_numpy(model.block.up(x))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(seen["down"]), expected, rtol=1e-6)
    assert "call" not in model.block.down.__dict__ and "call" not in model.head.__dict__
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), keras.ops.convert_to_numpy(model(x)))
    with pytest.raises(RuntimeError):
        with pt.capture_inputs([model.head], lambda l, t: None):
            raise RuntimeError("boom")
    assert "call" not in model.head.__dict__


def test_layer_inputs_sub_model_and_interception_agree():
    model = small_cnn()
    x = np.random.default_rng(0).random((6, 28, 28, 1)).astype("float32")
    layer = model.get_layer("fc1")
    assert capture.sub_model(model, layer) is not None
    via_graph = np.concatenate(list(pt.layer_inputs(model, layer, [x[:3], x[3:]])))
    got = []
    with pt.capture_inputs([layer], lambda l, t: got.append(keras.ops.convert_to_numpy(t)),
                           stop_after=layer):
        model(x, training=False)
    np.testing.assert_allclose(via_graph, got[0], rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------


def one_dense(seed, d=32, units=16):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((d,)), keras.layers.Dense(units, name="fc")])


@pytest.mark.parametrize("granularity", [None, kprune.NM(2, 4)], ids=["50%", "2:4"])
def test_driver_on_one_dense_matches_the_math_and_orders_the_errors(granularity):
    rng = np.random.default_rng(0)
    x = scaled_inputs(rng, 256, 32).astype("float32")
    model = one_dense(0)
    w = keras.ops.convert_to_numpy(model.layers[0].kernel).astype(np.float64)
    xf = x.astype(np.float64)
    errors = {}
    for method in ["magnitude", "wanda", "sparsegpt"]:
        pruned = kprune.prune_post_training(model, x, method, granularity=granularity,
                                            batch_size=64, verbose=0)
        wrapper = pruned.layers[0]
        assert isinstance(wrapper, kprune.PruneWrapper) and wrapper.pruning_schedule is None
        kernel = keras.ops.convert_to_numpy(wrapper.layer.kernel).astype(np.float64)
        if method == "wanda":
            mask, expected = pt.wanda(w, (xf ** 2).sum(0), 0.5, granularity)
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(wrapper.masks[0]).astype(bool), mask)
            np.testing.assert_allclose(kernel, expected, rtol=1e-6)
        if method == "sparsegpt":
            _, expected = pt.sparsegpt(w, xf.T @ xf, 0.5, granularity)
            np.testing.assert_allclose(kernel, expected, rtol=1e-4, atol=1e-5)
        errors[method] = output_error(xf, w, kernel)
    assert errors["sparsegpt"] < errors["wanda"] < errors["magnitude"]


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_cnn_nm_exact_caller_unchanged_and_finetunable(method):
    model = small_cnn()
    x = np.random.default_rng(0).random((32, 28, 28, 1)).astype("float32")
    before, config = weights_of(model), model.get_config()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # nothing is left dense here
        pruned = kprune.prune_post_training(model, x, method, granularity=kprune.NM(2, 4),
                                            ignore=["conv1"], batch_size=16, verbose=0)
    assert_unchanged(model, before, config)
    wrappers = {w.layer.name: w for w in kprune.core.model_tree.find_wrappers(pruned)}
    assert sorted(wrappers) == ["conv2", "fc1", "logits"]
    for wrapper in wrappers.values():
        kernel = keras.ops.convert_to_numpy(wrapper.layer.kernel)
        mask = keras.ops.convert_to_numpy(wrapper.masks[0]).astype(bool)
        assert not kernel[~mask].any()
        moved = np.moveaxis(mask, -2, -1)  # input axis last
        groups = moved.reshape(moved.shape[:-1] + (-1, 4))
        np.testing.assert_array_equal((~groups).sum(-1), 2)
    # fixed masks: fine-tuning keeps the zeros; strip gives a plain model
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x, np.zeros(32, "int64"), epochs=1, batch_size=16, verbose=0)
    plain = kprune.strip_pruning(pruned)
    assert plain.get_config()["layers"][1:] == config["layers"][1:]
    for name in wrappers:
        kernel = keras.ops.convert_to_numpy(plain.get_layer(name).kernel)
        moved = np.moveaxis(kernel, -2, -1)
        assert ((moved.reshape(moved.shape[:-1] + (-1, 4)) == 0).sum(-1) >= 2).all()


def test_sparsegpt_cnn_unstructured_sparsity_and_output_closer_than_magnitude():
    model = small_cnn()
    x = np.random.default_rng(0).random((64, 28, 28, 1)).astype("float32")
    ref = model.predict(x, verbose=0)
    err = {}
    for method in ["magnitude", "sparsegpt"]:
        pruned = kprune.prune_post_training(model, x, method, sparsity=0.5, verbose=0)
        report = {r.layer: r.sparsity for r in kprune.sparsity_report(pruned).rows}
        assert report == {"conv1": 0.5, "conv2": 0.5, "fc1": 0.5, "logits": 0.5}
        err[method] = float(np.abs(pruned.predict(x, verbose=0) - ref).mean())
    assert err["sparsegpt"] < err["magnitude"]


def test_multi_head_attention_is_one_wrapper_with_four_masks():
    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 8))
    h = keras.layers.MultiHeadAttention(2, 4, name="mha")(inp, inp)
    out = keras.layers.Dense(8, name="fc")(h)
    model = keras.Model(inp, out)
    x = np.random.default_rng(0).normal(size=(16, 6, 8)).astype("float32")
    pruned = kprune.prune_post_training(model, x, "sparsegpt", granularity=kprune.NM(2, 4), verbose=0)
    mha = pruned.get_layer("prune_low_magnitude_mha")
    assert isinstance(mha, kprune.PruneWrapper) and len(mha.masks) == 4
    for var, layout in zip(mha.prunable_weights, mha.layouts):
        zeros = keras.ops.convert_to_numpy(var) == 0
        moved = np.moveaxis(zeros, layout.in_axis, -1)
        assert (moved.reshape(moved.shape[:-1] + (-1, 4)).sum(-1) >= 2).all(), var.path


def test_nested_layers_get_fixed_masks_in_a_pruned_model_and_unseen_ones_named():
    inp = keras.Input((4,), name="x")
    ids = keras.Input((1,), dtype="int32", name="ids")
    emb = keras.layers.Flatten()(keras.layers.Embedding(3, 4, name="embedding")(ids))
    h = keras.layers.Add()([Block2(name="block")(inp), emb])
    model = keras.Model([inp, ids], keras.layers.Dense(2, name="head")(h))
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(32, 4)).astype("float32"), rng.integers(0, 3, size=(32, 1)).astype("int32")]
    before = weights_of(model)
    with pytest.warns(UserWarning) as record:
        pruned = kprune.prune_post_training(model, x, "wanda", verbose=0)
    message = " ".join(str(r.message) for r in record if r.category is UserWarning)
    assert "block/unused" in message and "not called" in message
    assert "embedding" in message
    assert isinstance(pruned, kprune.PrunedModel)
    groups = {g.label: g for g in kprune.core.model_tree.find_wrappers(pruned)}
    assert sorted(groups) == ["block/down", "block/up", "head"]
    for label in ("block/up", "block/down"):
        kernel = keras.ops.convert_to_numpy(groups[label].prunable_weights[0])
        assert (kernel == 0).mean() == 0.5
    block = pruned.model.get_layer("block")
    assert not (keras.ops.convert_to_numpy(block.unused.kernel) == 0).any()
    for a, b in zip(weights_of(model), before):
        np.testing.assert_array_equal(a, b)


def test_apply_accepts_masks_and_weights_by_variable_path():
    model = small_cnn()
    path = model.get_layer("fc1").kernel.path
    shape = tuple(model.get_layer("fc1").kernel.shape)
    mask = np.zeros(shape, bool)
    mask[:, 0] = True
    new = np.full(shape, 2.0, "float32")
    pruned = result.apply_updates(model, {path: (mask, new)})
    wrapper = pruned.get_layer("prune_low_magnitude_fc1")
    kernel = keras.ops.convert_to_numpy(wrapper.layer.kernel)
    np.testing.assert_array_equal(kernel, np.where(mask, 2.0, 0.0))
    with pytest.raises(ValueError, match="no variable"):
        result.apply_updates(model, {"nope/kernel": (mask, new)})


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(method="obs"), ValueError, "method"),
    (dict(method="wanda", calibration_data=None), ValueError, "calibration_data"),
    (dict(sparsity=1.0), ValueError, "sparsity"),
    (dict(granularity=kprune.Channel()), ValueError, "structured"),
    (dict(ignore=["nope"]), ValueError, "Unknown layer"),
    (dict(granularity=kprune.NM(2, 4)), ValueError, "conv1"),
    (dict(calibration_data="text"), TypeError, "calibration_data"),
    (dict(damping=-1.0), ValueError, "damping"),
])
def test_bad_arguments_raise_and_leave_the_model_unchanged(kwargs, error, match):
    model = small_cnn()
    before, config = weights_of(model), model.get_config()
    args = dict(calibration_data=np.zeros((4, 28, 28, 1), "float32"), method="sparsegpt", verbose=0)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        kprune.prune_post_training(model, **args)
    assert_unchanged(model, before, config)


def test_already_pruned_and_subclassed_models_are_refused():
    model = small_cnn()
    pruned = kprune.prune_post_training(model, method="magnitude", verbose=0)
    with pytest.raises(ValueError, match="already pruned"):
        kprune.prune_post_training(pruned, method="magnitude", verbose=0)
    sub = Sub()
    sub(np.zeros((1, 4), "float32"))
    with pytest.raises(ValueError, match="subclassed"):
        kprune.prune_post_training(sub, np.zeros((4, 4), "float32"), verbose=0)


def test_calibration_data_as_dataset_of_xy_pairs():
    tf = pytest.importorskip("tensorflow")
    model = one_dense(0)
    x = np.random.default_rng(0).normal(size=(64, 32)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, np.zeros(64))).batch(16)
    a = kprune.prune_post_training(model, ds, "wanda", verbose=0)
    b = kprune.prune_post_training(model, x, "wanda", batch_size=16, verbose=0)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(a.layers[0].masks[0]),
                                  keras.ops.convert_to_numpy(b.layers[0].masks[0]))


# --------------------------------------------------------------------------
# KerasHub
# --------------------------------------------------------------------------


PROJECTIONS = ("query/kernel", "key/kernel", "value/kernel", "attention_output/kernel",
               "feedforward_intermediate_dense/kernel", "feedforward_output_dense/kernel")


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_keras_hub_gpt2_backbone_prunes_strips_and_saves(method, tmp_path):
    keras_hub = pytest.importorskip("keras_hub")
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=64, num_layers=2, num_heads=2, hidden_dim=16,
        intermediate_dim=32, max_sequence_length=12)
    rng = np.random.default_rng(0)
    data = {"token_ids": rng.integers(0, 64, size=(16, 12)).astype("int32"),
            "padding_mask": np.ones((16, 12), "int32")}
    pruned = kprune.prune_post_training(backbone, data, method, batch_size=8, verbose=0)
    # The projections inside the TransformerDecoders get fixed masks where they are.
    assert isinstance(pruned, kprune.PrunedModel)
    assert len(kprune.core.model_tree.find_wrappers(pruned)) == 2 * 3  # attention, 2 MLP Dense per block
    plain = kprune.strip_pruning(pruned)
    path = str(tmp_path / "gpt2.keras")
    plain.save(path)
    loaded = keras.saving.load_model(path)
    kernels = {v.path: keras.ops.convert_to_numpy(v) for v in loaded.weights}
    checked = 0
    for path_, value in kernels.items():
        if path_.endswith(PROJECTIONS):
            assert (value == 0).mean() == 0.5, path_
            checked += 1
    assert checked == 12
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(data)), keras.ops.convert_to_numpy(pruned(data)), atol=1e-5)


def test_ignore_a_composite_layer_leaves_everything_inside_it_dense():
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(2, name="head")(Block2(name="block")(inp)))
    x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        pruned = kprune.prune_post_training(model, x, "sparsegpt", ignore=["block"], verbose=0)
    block = pruned.get_layer("block")
    for name in ("up", "down", "unused"):
        assert not (keras.ops.convert_to_numpy(getattr(block, name).kernel) == 0).any()
    assert [w.layer.name for w in kprune.core.model_tree.find_wrappers(pruned)] == ["head"]


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_block_granularity_prunes_whole_blocks(method):
    model = one_dense(0, d=32, units=8)
    x = scaled_inputs(np.random.default_rng(0), 128, 32).astype("float32")
    pruned = kprune.prune_post_training(model, x, method, granularity=kprune.Block((4, 1)),
                                        block_size=8, verbose=0)
    mask = keras.ops.convert_to_numpy(pruned.layers[0].masks[0]).astype(bool)
    blocks = mask.reshape(8, 4, 8)
    assert (blocks.all(axis=1) | ~blocks.any(axis=1)).all()
    assert mask.mean() == 0.5


def test_block_on_an_einsum_kernel_that_is_not_inputs_then_output_is_refused():
    inp = keras.Input((6, 8))
    out = keras.layers.EinsumDense("abc,cde->abde", (None, 2, 4), name="proj")(inp)
    model = keras.Model(inp, out)
    with pytest.raises(ValueError, match="proj"):
        kprune.prune_post_training(model, np.zeros((4, 6, 8), "float32"), "wanda",
                                   granularity=kprune.Block((4, 1)), verbose=0)


def test_wanda_layer_comparison_uses_one_threshold_per_kernel():
    model = one_dense(0)
    x = scaled_inputs(np.random.default_rng(0), 128, 32).astype("float32")
    pruned = kprune.prune_post_training(model, x, "wanda", comparison="layer", verbose=0)
    w = keras.ops.convert_to_numpy(model.layers[0].kernel).astype(np.float64)
    scores = pt.wanda_scores(w, (x.astype(np.float64) ** 2).sum(0))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(pruned.layers[0].masks[0]).astype(bool),
                                  kprune.compute_mask(scores, 0.5))
    with pytest.raises(ValueError, match="comparison"):
        kprune.prune_post_training(model, x, "wanda", comparison="row", verbose=0)
