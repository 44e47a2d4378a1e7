"""kprune.llm on tiny random KerasHub decoders (Gemma3, Llama3, Qwen3, GPT-2; nothing downloaded).

Width and depth pruning give a backbone of the same class with exactly the
requested config; where removal is exact (heads, KV groups, MLP units, whole
blocks) its outputs equal the original with the removed parts zeroed within
1e-5; configs round-trip; `*CausalLM(backbone=pruned).generate()` runs; the
caller's model is unchanged. KerasHub installs TensorFlow: TensorFlow leg only.
"""

import warnings

import keras
import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub", reason="keras-hub (which installs TensorFlow) is "
                                "tested on the TensorFlow leg")

from kprune import llm
from kprune.llm.architectures import axes_of, block_index, family_of

pytestmark = pytest.mark.tensorflow

VOCAB, SEQ = 40, 8
_COMMON = {"vocabulary_size": VOCAB, "num_layers": 2, "intermediate_dim": 12}


def _gemma3(**kw):
    cfg = dict(_COMMON, image_size=16, num_query_heads=4, num_key_value_heads=2, head_dim=4,
               hidden_dim=16, use_post_ffw_norm=True, use_post_attention_norm=True,
               use_sliding_window_attention=True, sliding_window_size=4)
    cfg.update(kw)
    return keras_hub.models.Gemma3Backbone(**cfg)


def _llama3(**kw):
    cfg = dict(_COMMON, num_query_heads=4, num_key_value_heads=2, hidden_dim=16)
    cfg.update(kw)
    return keras_hub.models.Llama3Backbone(**cfg)


def _qwen3(**kw):
    cfg = dict(_COMMON, num_query_heads=4, num_key_value_heads=2, head_dim=4, hidden_dim=16)
    cfg.update(kw)
    return keras_hub.models.Qwen3Backbone(**cfg)


def _gpt2(**kw):
    cfg = dict(_COMMON, num_heads=4, hidden_dim=16, max_sequence_length=16, dropout=0.0)
    cfg.update(kw)
    return keras_hub.models.GPT2Backbone(**cfg)


BUILDERS = {"gemma3": _gemma3, "llama3": _llama3, "qwen3": _qwen3, "gpt2": _gpt2}
CAUSAL_LM = {"gemma3": "Gemma3CausalLM", "llama3": "Llama3CausalLM", "qwen3": "Qwen3CausalLM",
             "gpt2": "GPT2CausalLM"}


def _randomize(model, seed=0):
    """Non-trivial norm scales and biases (they start at 0/1) so slicing errors show."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        v.assign(rng.normal(0, 0.3, tuple(v.shape)).astype("float32"))
    return model


def _tokens(n=4, seed=1):
    rng = np.random.default_rng(seed)
    return rng.integers(0, VOCAB, (n, SEQ)).astype("int32")


def _batch(ids):
    return {"token_ids": ids, "padding_mask": np.ones_like(ids)}


def _out(model, ids):
    return keras.ops.convert_to_numpy(model(_batch(ids)))


def _snapshot(model):
    return model.get_config(), [keras.ops.convert_to_numpy(v).copy() for v in model.weights]


def _assert_unchanged(model, snap):
    config, values = snap
    assert model.get_config() == config
    for v, before in zip(model.weights, values):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(v), before)


def _masked(backbone, zero):
    """A copy with `zero(path, axes, value)` applied to every weight."""
    copy = type(backbone).from_config(backbone.get_config())
    family = family_of(backbone)
    for v, src in zip(copy.weights, backbone.weights):
        value = keras.ops.convert_to_numpy(src).copy()
        zero(v.path, axes_of(family, v.path, v.shape), value)
        v.assign(value)
    return copy


def _removed(n, kept):
    return sorted(set(range(n)) - {int(k) for k in kept})


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_head_and_mlp_removal_equals_the_zeroed_original(name):
    backbone = _randomize(BUILDERS[name]())
    family = family_of(backbone)
    snap = _snapshot(backbone)
    ids = _tokens()
    if family.head_dim_key is None:  # derived head size: heads alone would change it
        kw = {}
    else:
        kw = {"num_query_heads": 2}
    scores = llm.width_importance(backbone, ids)
    cfg = backbone.get_config()
    sizes = {"Q": 4, "K": cfg.get("num_key_value_heads", 4), "I": 12, "H": 16}
    for kind, n in sizes.items():  # every structure was seen by the recording passes
        assert scores[kind].shape == (n,) and np.all(scores[kind] > 0), kind
    pruned = llm.prune_width(backbone, ids, intermediate_dim=5, **kw)
    assert type(pruned) is type(backbone)
    cfg = pruned.get_config()
    assert cfg["intermediate_dim"] == 5 and cfg["hidden_dim"] == 16
    if kw:
        assert cfg["num_query_heads"] == 2 and cfg["num_key_value_heads"] == 2
    kept_units = np.sort(np.argsort(-scores["I"], kind="stable")[:5])
    kept_heads = None
    if kw:  # one head from each of the 2 groups: the better one
        q = scores["Q"].reshape(2, 2)
        kept_heads = [g * 2 + int(np.argmax(q[g])) for g in range(2)]

    def zero(path, axes, value):
        if axes == "IH":
            value[_removed(12, kept_units)] = 0
        if kept_heads is not None and path.endswith("attention_output/kernel"):
            value[_removed(4, kept_heads)] = 0

    reference = _masked(backbone, zero)
    np.testing.assert_allclose(_out(pruned, ids), _out(reference, ids), atol=1e-5, rtol=1e-5)
    _assert_unchanged(backbone, snap)


@pytest.mark.parametrize("name", ["gemma3", "qwen3", "llama3"])
def test_kv_group_removal_keeps_whole_groups_exactly(name):
    backbone = _randomize(BUILDERS[name](), seed=2)
    ids = _tokens()
    scores = llm.width_importance(backbone, ids)
    kw = {"num_key_value_heads": 1}
    if name == "llama3":  # 2 query heads x head size 4 = hidden 8; hidden pruning is approximate
        kw["hidden_dim"] = 8
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pruned = llm.prune_width(backbone, ids, **kw)
    # only hidden-size pruning (Llama3's coupled heads) is flagged approximate
    flagged = sum("approximate" in str(w.message) for w in caught)
    assert flagged == (1 if name == "llama3" else 0)
    cfg = pruned.get_config()
    assert (cfg["num_query_heads"], cfg["num_key_value_heads"]) == (2, 1)
    assert type(pruned) is type(backbone)
    if name == "llama3":
        assert cfg["hidden_dim"] == 8
        return
    group = int(np.argmax(scores["K"]))
    kept = [2 * group, 2 * group + 1]

    def zero(path, axes, value):
        if path.endswith("attention_output/kernel"):
            value[_removed(4, kept)] = 0

    np.testing.assert_allclose(_out(pruned, ids), _out(_masked(backbone, zero), ids), atol=1e-5)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_hidden_pruning_gives_exact_widths_round_trips_and_generates(name):
    backbone = _randomize(BUILDERS[name](), seed=3)
    snap = _snapshot(backbone)
    family = family_of(backbone)
    ids = _tokens()
    kw = {"hidden_dim": 8}
    if family.head_dim_key is None:
        kw["num_query_heads"] = 2
    causal_lm = getattr(keras_hub.models, CAUSAL_LM[name])(backbone=backbone, preprocessor=None)
    with pytest.warns(UserWarning, match="hidden_dim 16 -> 8 is approximate"):
        small = llm.prune_width(causal_lm, ids, importance="taylor", intermediate_dim=6, **kw)
    assert type(small) is type(causal_lm)
    pruned = small.backbone
    assert type(pruned) is type(backbone)
    assert pruned.get_config()["hidden_dim"] == 8
    assert pruned.token_embedding.embeddings.shape == (VOCAB, 8)
    again = type(pruned).from_config(pruned.get_config())
    assert again.get_config() == pruned.get_config()
    again.set_weights(pruned.get_weights())
    np.testing.assert_allclose(_out(again, ids), _out(pruned, ids), atol=1e-6)
    # No tokenizer offline: generate on token ids (a 4-token prompt, 4 positions to fill).
    prompt = {"token_ids": ids[:2] * (np.arange(SEQ) < 4),
              "padding_mask": np.broadcast_to(np.arange(SEQ) < 4, (2, SEQ))}
    if name == "gemma3":  # text only: zero images (KerasHub's generate needs the key)
        prompt["images"] = np.zeros((2, 0, 16, 16, 3), "float32")
    small.jit_compile = False  # XLA compilation would be most of this test's time
    out = small.generate(prompt, stop_token_ids=None)
    generated = np.asarray(out["token_ids"])
    assert generated.shape == (2, SEQ)
    np.testing.assert_array_equal(generated[:, :4], ids[:2, :4])
    assert np.all((generated >= 0) & (generated < VOCAB))
    assert np.all(np.isfinite(_out(pruned, ids)))
    _assert_unchanged(backbone, snap)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_depth_removal_equals_the_original_with_identity_blocks(name):
    kw = {"num_layers": 3}
    if name == "gemma3":
        kw["use_sliding_window_attention"] = False
    backbone = _randomize(BUILDERS[name](**kw), seed=4)
    family = family_of(backbone)
    snap = _snapshot(backbone)
    ids = _tokens()
    influence = llm.block_influence(backbone, ids)
    assert influence.shape == (3,) and np.all(influence >= 0)
    pruned = llm.prune_depth(backbone, ids, num_layers=2)
    assert type(pruned) is type(backbone) and pruned.get_config()["num_layers"] == 2
    removed = int(np.argmin(influence))

    def zero(path, axes, value):
        index, rest = block_index(family, path)
        output = rest.endswith(("attention_output/kernel", "attention_output/bias")) or axes == "IH" \
            or rest == "feedforward_output_dense/bias"
        if index == removed and output:
            value[...] = 0

    np.testing.assert_allclose(_out(pruned, ids), _out(_masked(backbone, zero), ids), atol=1e-5)
    _assert_unchanged(backbone, snap)


def test_gemma3_depth_removes_whole_periods_and_says_what_else_does():
    backbone = _randomize(_gemma3(num_layers=7), seed=5)
    ids = _tokens()
    with pytest.raises(ValueError, match=r"whole periods of 6.*num_layers=1"):
        llm.prune_depth(backbone, ids, num_layers=5)
    pruned = llm.prune_depth(backbone, scores=np.arange(7.0), num_layers=1)
    assert pruned.get_config()["num_layers"] == 1
    # blocks 0..5 removed: block 6 (local) becomes block 0 (local): exact.
    one = _masked(backbone, lambda p, a, v: v.__setitem__(Ellipsis, 0) if (
        block_index(family_of(backbone), p)[0] in range(6)
        and (p.endswith("attention_output/kernel") or a == "IH")) else None)
    np.testing.assert_allclose(_out(pruned, ids), _out(one, ids), atol=1e-5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        llm.prune_depth(backbone, remove=[0], pattern="any")
    assert any("block 5 (now 4) global->local" in str(w.message) for w in caught)
    with pytest.raises(ValueError, match="no decoder"):
        llm.prune_depth(backbone, remove=list(range(7)), pattern="any")


def test_bad_widths_name_the_coupling_and_the_nearest_valid_widths():
    llama, qwen, gpt2 = _llama3(), _qwen3(), _gpt2()
    snap = _snapshot(llama)
    with pytest.raises(ValueError, match=r"coupled to the hidden size.*hidden_dim=8"):
        llm.prune_width(llama, importance="magnitude", num_query_heads=2)
    with pytest.raises(ValueError, match=r"head size.*hidden_dim=16 with num_query_heads=4|num_query_heads=2 with"):
        llm.prune_width(llama, importance="magnitude", hidden_dim=8)
    with pytest.raises(ValueError, match=r"num_query_heads=3 does not divide into 2 KV groups.*2 or 4"):
        llm.prune_width(qwen, importance="magnitude", num_query_heads=3)
    with pytest.raises(ValueError, match="more than the model's"):
        llm.prune_width(qwen, importance="magnitude", intermediate_dim=13)
    with pytest.raises(ValueError, match="no grouped-query attention"):
        llm.prune_width(gpt2, importance="magnitude", num_key_value_heads=2)
    with pytest.raises(ValueError, match="needs calibration"):
        llm.prune_width(qwen, intermediate_dim=4)
    with pytest.raises(TypeError, match="supports|prunes a KerasHub"):
        llm.prune_width(keras.Sequential([keras.layers.Dense(2)]), intermediate_dim=1)
    with pytest.raises(ValueError, match="integer token ids"):
        llm.prune_width(qwen, np.zeros((2, 3), "float32"), intermediate_dim=4)
    _assert_unchanged(llama, snap)


def test_tied_and_untied_embeddings_save_load_and_the_config_report(tmp_path):
    untied = _randomize(_llama3(tie_word_embeddings=False))
    with pytest.warns(UserWarning, match="approximate"):
        pruned = llm.prune_width(untied, importance="magnitude", num_query_heads=2, hidden_dim=8)
    path = str(tmp_path / "pruned.keras")
    pruned.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(pruned) and loaded.get_config() == pruned.get_config()
    np.testing.assert_allclose(_out(loaded, _tokens()), _out(pruned, _tokens()), atol=1e-6)
    assert pruned.token_embedding.reverse_embeddings.shape == (8, VOCAB)
    emb = keras.ops.convert_to_numpy(untied.token_embedding.embeddings)
    rev = keras.ops.convert_to_numpy(untied.token_embedding.reverse_embeddings)
    new_emb = keras.ops.convert_to_numpy(pruned.token_embedding.embeddings)
    new_rev = keras.ops.convert_to_numpy(pruned.token_embedding.reverse_embeddings)
    kept = [int(np.where(np.all(emb == col[:, None], axis=0))[0][0]) for col in new_emb.T]
    np.testing.assert_array_equal(new_rev, rev[kept])  # the same hidden channels in both
    report = llm.config_report(untied, pruned)
    assert "hidden_dim" in report and "0.50x" in report and "non-embedding parameters" in report
    total, non_embedding = llm.parameter_counts(pruned)
    assert total - non_embedding == 2 * VOCAB * 8
