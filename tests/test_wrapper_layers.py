"""Layer coverage: attention, EinsumDense, recurrent, container and nested models.

Every case trains with `kprune.PruningCallback` on tiny data and must reach
its target exactly: each pruned tensor keeps `round(n * (1 - s))` weights and
every stored pruned weight is exactly zero.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import kprune  # noqa: E402
from kprune.core import masking  # noqa: E402
from kprune.core.model_tree import find_wrappers  # noqa: E402
from kprune.core.wrapper import is_prunable, prunable_weights  # noqa: E402

L = keras.layers
SEQ, FEAT = 6, 8


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _data(input_shape, outputs=3, n=32):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n,) + tuple(input_shape)).astype("float32")
    y = rng.normal(size=(n, outputs)).astype("float32")
    return x, y


def _expected_kept(granularity, shape, layout, target):
    if granularity is None:
        return masking.kept_count(int(np.prod(shape)), target)
    # Structured: the engine's group count rule, whatever the scores.
    scores = np.random.default_rng(0).random(shape)
    return int(masking.compute_mask(scores, target, granularity, layout).sum())


def _assert_exact_target(model, target, granularity=None):
    wrappers = find_wrappers(model)
    assert wrappers, "nothing was wrapped"
    for w in wrappers:
        for var, mask, layout in zip(w.prunable_weights, w.masks, w.layouts):
            m, v = _np(mask), _np(var)
            assert m.dtype == v.dtype
            expected = _expected_kept(granularity, m.shape, layout, target)
            assert int(np.count_nonzero(m)) == expected, (var.path, m.size)
            # exact-zero invariant: pruned stored weights are exactly 0
            assert np.all(v[m == 0] == 0), var.path


def _prune_train_check(model, target=0.75, granularity=None, epochs=2, outputs=3):
    x, y = _data(model.input_shape[1:], outputs)
    pruned = kprune.prune_low_magnitude(
        model,
        kprune.PolynomialDecay(0.0, target, begin_step=0, end_step=6, frequency=2),
        granularity=granularity,
    )
    pruned.compile(keras.optimizers.Adam(1e-2), "mse")
    history = pruned.fit(
        x, y, batch_size=8, epochs=epochs, verbose=0, callbacks=[kprune.PruningCallback()]
    )
    assert np.all(np.isfinite(history.history["loss"]))
    _assert_exact_target(pruned, target, granularity)
    # The stripped model computes what the pruned one computes.
    plain = kprune.strip_pruning(pruned)
    np.testing.assert_allclose(
        _np(plain.predict(x, verbose=0)), _np(pruned.predict(x, verbose=0)), rtol=1e-5, atol=1e-5
    )
    return pruned


def _seq_model(*layers, name=None):
    return keras.Sequential([keras.Input((SEQ, FEAT)), *layers], name=name)


# ---------------------------------------------------------------------------
# Registry: which weights, which layout
# ---------------------------------------------------------------------------


def test_mha_weights_and_layouts():
    mha = L.MultiHeadAttention(num_heads=2, key_dim=4, name="mha")
    x = np.zeros((1, SEQ, FEAT), "float32")
    mha(x, x)
    pairs = prunable_weights(mha)
    assert [v.path for v, _ in pairs] == [
        "mha/query/kernel", "mha/key/kernel", "mha/value/kernel", "mha/attention_output/kernel"
    ]
    # [d_model, heads, head_dim]: input d_model, "channel" = whole head.
    assert [lay for _, lay in pairs[:3]] == [masking.Layout(0, 1)] * 3
    # [heads, head_dim, d_model]: NM groups along head_dim, channels = features.
    assert pairs[3][1] == masking.Layout(1, 2)


@pytest.mark.parametrize(
    "equation, kernel_rank, layout",
    [
        ("ab,bc->ac", 2, masking.Layout(0, 1)),
        ("abc,cd->abd", 2, masking.Layout(0, 1)),
        ("abc,cde->abde", 3, masking.Layout(0, 2)),
        ("abcd,cde->abe", 3, masking.Layout(1, 2)),
        ("...b,bc->...c", 2, masking.Layout(0, 1)),
    ],
)
def test_einsum_layout_from_equation(equation, kernel_rank, layout):
    from kprune.core.wrapper import _einsum_layout

    assert _einsum_layout(equation, kernel_rank) == layout


def test_recurrent_and_container_weights():
    x = np.zeros((1, SEQ, FEAT), "float32")
    lstm = L.LSTM(3)
    lstm(x)
    assert [v.path for v, _ in prunable_weights(lstm)] == [
        lstm.cell.kernel.path, lstm.cell.recurrent_kernel.path
    ]
    bi = L.Bidirectional(L.GRU(3))
    bi(x)
    assert len(prunable_weights(bi)) == 4
    assert {id(v) for v, _ in prunable_weights(bi)} == {
        id(bi.forward_layer.cell.kernel), id(bi.forward_layer.cell.recurrent_kernel),
        id(bi.backward_layer.cell.kernel), id(bi.backward_layer.cell.recurrent_kernel),
    }
    td = L.TimeDistributed(L.Dense(4))
    td(x)
    assert [v for v, _ in prunable_weights(td)] == [td.layer.kernel]


def test_containers_of_unprunable_layers_are_not_prunable():
    assert not is_prunable(L.TimeDistributed(L.Dropout(0.1)))
    assert not is_prunable(L.TimeDistributed(kprune.PruneWrapper(L.Dense(2))))
    assert is_prunable(L.TimeDistributed(L.Dense(2)))
    assert is_prunable(L.Bidirectional(L.SimpleRNN(2)))
    with pytest.raises(ValueError, match="not prunable"):
        kprune.PruneWrapper(L.TimeDistributed(L.Dropout(0.1)))


# ---------------------------------------------------------------------------
# The forward pass really uses the masked weights
# ---------------------------------------------------------------------------


def _random_masks_keep_weights(wrapper, seed=0):
    """Sets random masks with `assign_masks`, which zeroes the pruned weights
    (the forward pass then computes with the masked weights)."""
    rng = np.random.default_rng(seed)
    masks = [(rng.random(tuple(var.shape)) < 0.5) for var in wrapper.prunable_weights]
    wrapper.assign_masks(masks)
    return [m.astype("float32") for m in masks]


@pytest.mark.parametrize(
    "make",
    [
        lambda: L.LSTM(5, return_sequences=True),
        lambda: L.GRU(5),
        lambda: L.SimpleRNN(5),
        lambda: L.Bidirectional(L.LSTM(4)),
        lambda: L.TimeDistributed(L.Dense(4)),
        lambda: L.EinsumDense("abc,cd->abd", output_shape=(SEQ, 4), bias_axes="d"),
        lambda: L.RNN(L.StackedRNNCells([L.LSTMCell(3), L.GRUCell(4)])),
    ],
    ids=["lstm", "gru", "simple_rnn", "bidirectional", "time_distributed", "einsum", "stacked"],
)
def test_masked_forward_equals_layer_with_masked_weights(make):
    x = np.random.default_rng(1).normal(size=(4, SEQ, FEAT)).astype("float32")
    layer = make()
    wrapper = kprune.PruneWrapper(layer)
    before = _np(wrapper(x))
    _random_masks_keep_weights(wrapper)
    masked = _np(wrapper(x))
    assert not np.allclose(before, masked)
    # The same layer type with the masked weights assigned.
    reference = make()
    reference(x)
    masked_ids = {id(v): m for v, m in zip(wrapper.prunable_weights, wrapper.masks)}
    for ref_var, var in zip(reference.weights, layer.weights):
        value = _np(var)
        if id(var) in masked_ids:
            value = value * _np(masked_ids[id(var)])
        ref_var.assign(value)
    np.testing.assert_allclose(masked, _np(reference(x)), rtol=1e-5, atol=1e-6)


def test_masked_forward_mha_and_masked_gradients():
    from conftest import gradients

    x = np.random.default_rng(2).normal(size=(3, SEQ, FEAT)).astype("float32")
    layer = L.MultiHeadAttention(num_heads=2, key_dim=4)
    wrapper = kprune.PruneWrapper(layer)
    wrapper(x, x)
    masks = _random_masks_keep_weights(wrapper)
    reference = L.MultiHeadAttention(num_heads=2, key_dim=4)
    reference(x, x)
    masked_ids = {id(v): m for v, m in zip(wrapper.prunable_weights, masks)}
    for ref_var, var in zip(reference.weights, layer.weights):
        ref_var.assign(_np(var) * masked_ids.get(id(var), 1.0))
    np.testing.assert_allclose(
        _np(wrapper(x, x)), _np(reference(x, x)), rtol=1e-5, atol=1e-6
    )
    # An optimizer step leaves the masked-out weights exactly zero.
    grads = gradients(lambda: keras.ops.sum(keras.ops.square(wrapper(x, x))),
                      wrapper.prunable_weights)
    keras.optimizers.Adam(0.1).apply([keras.ops.convert_to_tensor(g) for g in grads],
                                     wrapper.prunable_weights)
    for v, m in zip(wrapper.prunable_weights, masks):
        assert np.all(_np(v)[m == 0] == 0)


# ---------------------------------------------------------------------------
# Each case trains with the callback and reaches its target exactly
# ---------------------------------------------------------------------------


def _mha_model(dropout=0.0):
    inp = keras.Input((SEQ, FEAT))
    mem = keras.Input((SEQ + 2, FEAT))
    # Keyword call with a distinct value tensor: cross-attention.
    h = L.MultiHeadAttention(num_heads=2, key_dim=4, dropout=dropout, name="cross")(
        query=inp, value=mem
    )
    h = L.MultiHeadAttention(num_heads=2, key_dim=4, dropout=dropout, name="self")(h, h)
    out = L.Dense(3, name="head")(L.GlobalAveragePooling1D()(h))
    return keras.Model([inp, mem], out)


def test_mha_trains_to_target_with_dropout():
    model = _mha_model(dropout=0.2)
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(32, SEQ, FEAT)).astype("float32"),
         rng.normal(size=(32, SEQ + 2, FEAT)).astype("float32")]
    y = rng.normal(size=(32, 3)).astype("float32")
    pruned = kprune.prune_low_magnitude(
        model, kprune.ConstantSparsity(0.75, begin_step=0, frequency=2)
    )
    wrapper = next(w for w in find_wrappers(pruned) if w.layer.name == "self")
    seeds = [v for v in wrapper.layer.variables if "seed" in v.path]
    assert seeds, "MHA dropout should own a seed generator state"
    seed_before = _np(seeds[0]).copy()
    pruned.compile(keras.optimizers.Adam(1e-2), "mse")
    pruned.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[kprune.PruningCallback()])
    _assert_exact_target(pruned, 0.75)
    # The dropout seed state advanced: the wrapped layer's own state updates
    # happen as usual (Keras' torch backend draws dropout from torch's own
    # generator and leaves the seed state as it is).
    if keras.backend.backend() != "torch":
        assert not np.array_equal(_np(seeds[0]), seed_before)
    plain = kprune.strip_pruning(pruned)
    np.testing.assert_allclose(
        _np(plain.predict(x, verbose=0)), _np(pruned.predict(x, verbose=0)), rtol=1e-5, atol=1e-5
    )
    assert plain.get_config() == model.get_config()


def test_mha_channel_granularity_prunes_whole_heads():
    inp = keras.Input((SEQ, FEAT))
    h = L.MultiHeadAttention(num_heads=4, key_dim=2, name="mha")(inp, inp)
    model = keras.Model(inp, L.Dense(3)(L.Flatten()(h)))
    pruned = _prune_train_check(model, 0.5, granularity=kprune.Channel("l2"), epochs=1)
    wrapper = next(w for w in find_wrappers(pruned) if w.layer.name == "mha")
    for mask in wrapper.masks[:3]:
        m = _np(mask)  # [d_model, heads, head_dim]
        per_head = m.reshape(FEAT, 4, 2).sum(axis=(0, 2))
        assert sorted(per_head.tolist()) == [0, 0, FEAT * 2, FEAT * 2]


@pytest.mark.parametrize(
    "layer",
    [
        lambda: L.LSTM(6, dropout=0.1, recurrent_dropout=0.1),
        lambda: L.GRU(6),
        lambda: L.SimpleRNN(6),
        lambda: L.RNN(L.StackedRNNCells([L.LSTMCell(4), L.SimpleRNNCell(5)])),
    ],
    ids=["lstm", "gru", "simple_rnn", "stacked_cells"],
)
def test_recurrent_trains_to_target(layer):
    model = _seq_model(layer(), L.Dense(3))
    pruned = _prune_train_check(model, 0.7)
    # kernel + recurrent_kernel of the recurrent layer are both wrapped.
    assert len(find_wrappers(pruned)[0].prunable_weights) >= 2


def test_bidirectional_trains_to_target():
    model = _seq_model(
        L.Bidirectional(L.LSTM(4, return_sequences=True)),
        L.Bidirectional(L.GRU(3), backward_layer=L.GRU(3, go_backwards=True)),
        L.Dense(3),
    )
    pruned = _prune_train_check(model, 0.6)
    assert [len(w.prunable_weights) for w in find_wrappers(pruned)] == [4, 4, 1]


def test_time_distributed_trains_to_target():
    model = keras.Sequential([
        keras.Input((SEQ, 6, 6, 1)),
        L.TimeDistributed(L.Conv2D(4, 3)),
        L.TimeDistributed(L.Flatten()),
        L.TimeDistributed(L.Dense(5)),
        L.Flatten(),
        L.Dense(3),
    ])
    pruned = _prune_train_check(model, 0.8)
    assert [w.layer.name for w in find_wrappers(pruned)][:2] == [
        model.layers[0].name, model.layers[2].name
    ]


def test_einsum_dense_trains_to_target():
    model = _seq_model(
        L.EinsumDense("abc,cd->abd", output_shape=(SEQ, 5), bias_axes="d", activation="relu"),
        L.Flatten(),
        L.EinsumDense("ab,bc->ac", output_shape=3),
    )
    _prune_train_check(model, 0.5, granularity=kprune.NM(2, 4))
    _prune_train_check(model, 0.75)


def test_nested_models_train_to_target():
    inner = keras.Sequential(
        [keras.Input((FEAT,)), L.Dense(16, activation="relu", name="inner_d1"),
         L.Dense(8, name="inner_d2")],
        name="inner",
    )
    i2 = keras.Input((8,))
    mid = keras.Model(i2, L.Dense(8, name="mid_d")(i2), name="mid")
    inp = keras.Input((FEAT,))
    # functional > (Sequential, functional) and Sequential > functional
    outer = keras.Sequential([keras.Input((8,)), mid], name="outer")
    out = L.Dense(3, name="out")(outer(inner(inp)))
    model = keras.Model(inp, out)
    pruned = kprune.prune_low_magnitude(model, kprune.ConstantSparsity(0.6, frequency=1))
    assert sorted(w.layer.name for w in find_wrappers(pruned)) == [
        "inner_d1", "inner_d2", "mid_d", "out"
    ]
    x, y = _data((FEAT,))
    pruned.compile("adam", "mse")
    pruned.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[kprune.PruningCallback()])
    _assert_exact_target(pruned, 0.6)
    assert kprune.strip_pruning(pruned).get_config() == model.get_config()
    # the caller's model keeps its dense weights
    assert all(np.all(_np(l.kernel) != 0) for l in inner.layers)


def test_channel_on_embedding_is_a_clear_error():
    model = keras.Sequential([
        keras.Input((5,), dtype="int32"), L.Embedding(20, 4, name="emb"),
        L.Flatten(), L.Dense(2, name="fc"),
    ])
    with pytest.raises(ValueError, match=r"(?s)Channel.*'emb'.*ignore"):
        kprune.prune_low_magnitude(model, granularity=kprune.Channel())
    # the suggested fix works
    pruned = kprune.prune_low_magnitude(
        model, granularity=kprune.Channel(), ignore=[L.Embedding]
    )
    assert [w.layer.name for w in find_wrappers(pruned)] == ["fc"]


def test_save_and_load_attention_and_recurrent(tmp_path):
    model = _mha_model()
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(8, SEQ, FEAT)).astype("float32"),
         rng.normal(size=(8, SEQ + 2, FEAT)).astype("float32")]
    pruned = kprune.prune_low_magnitude(model, kprune.ConstantSparsity(0.5))
    kprune.Pruner(pruned).start()
    path = str(tmp_path / "pruned.keras")
    pruned.save(path)
    loaded = keras.models.load_model(path)
    for a, b in zip(find_wrappers(pruned), find_wrappers(loaded)):
        for ma, mb in zip(a.masks, b.masks):
            np.testing.assert_array_equal(_np(ma), _np(mb))
    np.testing.assert_allclose(
        _np(loaded.predict(x, verbose=0)), _np(pruned.predict(x, verbose=0)), rtol=1e-5, atol=1e-6
    )
    rnn = _seq_model(L.Bidirectional(L.LSTM(3)), L.Dense(2))
    pruned = kprune.prune_low_magnitude(rnn, kprune.ConstantSparsity(0.5))
    kprune.Pruner(pruned).start()
    pruned.save(path)
    loaded = keras.models.load_model(path)
    xs = rng.normal(size=(4, SEQ, FEAT)).astype("float32")
    np.testing.assert_allclose(
        _np(loaded.predict(xs, verbose=0)), _np(pruned.predict(xs, verbose=0)), rtol=1e-5, atol=1e-6
    )


def test_prune_a_built_attention_layer():
    mha = L.MultiHeadAttention(num_heads=2, key_dim=4)
    q = np.random.default_rng(0).normal(size=(2, SEQ, FEAT)).astype("float32")
    v = np.random.default_rng(1).normal(size=(2, SEQ + 1, FEAT)).astype("float32")
    ref = _np(mha(q, v))
    wrapper = kprune.prune_low_magnitude(mha, kprune.ConstantSparsity(0.5))
    np.testing.assert_allclose(_np(wrapper(q, v)), ref, rtol=1e-5, atol=1e-6)
    assert len(wrapper.masks) == 4
    plain = kprune.strip_pruning(wrapper)
    np.testing.assert_allclose(_np(plain(q, v)), ref, rtol=1e-5, atol=1e-6)
