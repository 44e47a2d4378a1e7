"""KerasHub backbones (small configs, random weights, nothing downloaded):
pruning during fit, at initialisation, save/load/resume and strip reach the
attention and MLP kernels inside their transformer layers."""

import keras
import keras_hub
import numpy as np

import kprune
from conftest import ExactZeros
from kprune.core.model_tree import find_wrappers
from kprune.core.pruned_model import PrunedModel


def _np(x):
    return keras.ops.convert_to_numpy(x)




def _gpt2():
    return keras_hub.models.GPT2Backbone(
        vocabulary_size=64, num_layers=2, num_heads=2, hidden_dim=16,
        intermediate_dim=32, max_sequence_length=16)


def _text_batch(n=16, length=8, vocab=64, seed=0):
    rng = np.random.default_rng(seed)
    return {"token_ids": rng.integers(0, vocab, (n, length)),
            "padding_mask": np.ones((n, length), bool)}


def _projection_kernels(model):
    """Every attention and MLP kernel of the transformer layers."""
    return {w.path: w for w in model.weights
            if w.path.startswith("transformer_layer") and w.path.endswith("kernel")}


def _fit(pruned, x, y, epochs=1):
    pruned.compile(keras.optimizers.Adam(1e-2), "mse")
    pruned.fit(x, y, batch_size=4, epochs=epochs, verbose=0, shuffle=False,
               callbacks=[kprune.PruningCallback(), ExactZeros()])


def test_gpt2_prunes_every_projection_during_fit_and_saves_loads_resumes_strips(tmp_path):
    backbone = _gpt2()
    x = _text_batch()
    y = np.random.default_rng(1).normal(size=(16, 8, 16)).astype("float32")
    pruned = kprune.prune_low_magnitude(backbone, kprune.ConstantSparsity(0.5, frequency=2))
    assert isinstance(pruned, PrunedModel)
    _fit(pruned, x, y)
    kernels = _projection_kernels(pruned)
    assert len(kernels) == 2 * 6  # q, k, v, attention output, 2 MLP kernels per layer
    for path, w in kernels.items():
        assert np.count_nonzero(_np(w) == 0) == _np(w).size // 2, path
    # The caller's backbone is unchanged.
    assert all(w.constraint is None for w in backbone.weights)
    path = str(tmp_path / "gpt2.keras")
    pruned.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(_np(loaded(x)), _np(pruned(x)), atol=1e-6)
    loaded.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False,
               callbacks=[kprune.PruningCallback(), ExactZeros()])
    assert {g.step for g in find_wrappers(loaded)} == {8}
    plain = kprune.strip_pruning(loaded)
    assert type(plain) is keras_hub.models.GPT2Backbone
    np.testing.assert_allclose(_np(plain(x)), _np(loaded(x)), atol=1e-6)


def test_gpt2_per_path_overrides():
    pruned = kprune.prune_low_magnitude(
        _gpt2(), kprune.ConstantSparsity(0.5),
        sparsity={"transformer_layer_0/self_attention": 0.75, "token_embedding": None})
    schedules = {g.label: g.pruning_schedule.final_sparsity for g in find_wrappers(pruned)}
    assert "token_embedding" not in schedules
    assert schedules["transformer_layer_0/self_attention"] == 0.75
    assert schedules["transformer_layer_1/self_attention"] == 0.5


def test_gpt2_prune_at_init():
    x = _text_batch()
    y = np.random.default_rng(1).normal(size=(16, 8, 16)).astype("float32")
    pruned = kprune.prune_at_init(_gpt2(), (x, y), method="snip", sparsity=0.5,
                                  loss="mse", verbose=0)
    assert isinstance(pruned, PrunedModel)
    weights = [w for g in find_wrappers(pruned) for w in g.prunable_weights]
    zeros = sum(int(np.count_nonzero(_np(w) == 0)) for w in weights)
    assert zeros == round(sum(_np(w).size for w in weights) * 0.5)
    pruned.compile("adam", "mse")
    pruned.fit(x, y, epochs=1, verbose=0, callbacks=[ExactZeros()])


def test_bert_with_ops_nodes_prunes_during_fit():
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=64, num_layers=1, num_heads=2, hidden_dim=16,
        intermediate_dim=32, max_sequence_length=16)
    x = {**_text_batch(), "segment_ids": np.zeros((16, 8), "int32")}
    y = {"sequence_output": np.zeros((16, 8, 16), "float32"),
         "pooled_output": np.zeros((16, 16), "float32")}
    pruned = kprune.prune_low_magnitude(backbone, kprune.ConstantSparsity(0.5, frequency=2))
    _fit(pruned, x, y)
    kernels = _projection_kernels(pruned)
    assert kernels
    for path, w in kernels.items():
        assert np.count_nonzero(_np(w) == 0) == _np(w).size // 2, path


def test_vit_prunes_its_encoder_blocks():
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(16, 16, 3), patch_size=8, num_layers=1, num_heads=2,
        hidden_dim=16, mlp_dim=32)
    x = np.random.default_rng(0).normal(size=(8, 16, 16, 3)).astype("float32")
    y = np.zeros((8, 5, 16), "float32")
    pruned = kprune.prune_low_magnitude(backbone, kprune.ConstantSparsity(0.5, frequency=2))
    labels = [g.label for g in find_wrappers(pruned)]
    assert any("encoder" in label for label in labels), labels
    _fit(pruned, x, y)
    for g in find_wrappers(pruned):
        for w in g.prunable_weights:
            assert np.count_nonzero(_np(w) == 0) == _np(w).size // 2, g.label
