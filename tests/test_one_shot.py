"""Block-by-block one-shot pruning (kprune.methods.one_shot.driver): the same
result as layer-by-layer passes, work linear in depth, resumable runs, the
memory check before any work, in-place pruning."""

import os

import keras
import numpy as np
import pytest

import kprune
from kprune.methods.one_shot import blocks, capture, driver
from conftest import assert_unchanged, weights_of


@keras.saving.register_keras_serializable("test_one_shot")
class Block(keras.layers.Layer):
    """A residual MLP block with a keyword argument, like a transformer layer."""

    def __init__(self, dim, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        self.up = keras.layers.Dense(2 * dim, activation="relu", name="up")
        self.gate = keras.layers.Dense(2 * dim, name="gate")
        self.down = keras.layers.Dense(dim, name="down")

    def build(self, input_shape):
        self.up.build(input_shape)
        self.gate.build(input_shape)
        self.down.build(input_shape[:-1] + (2 * self.dim,))

    def call(self, x, padding_mask=None):
        h = self.down(self.up(x) * self.gate(x))
        if padding_mask is not None:
            h = h * keras.ops.cast(padding_mask, h.dtype)[..., None]
        return x + h

    def get_config(self):
        return {**super().get_config(), "dim": self.dim}


def block_model(depth, dim=16, seed=0):
    keras.utils.set_random_seed(seed)
    x = keras.Input((6, 8), name="x")
    pm = keras.Input((6,), name="padding_mask")
    h = keras.layers.Dense(dim, name="stem")(x)
    for i in range(depth):
        h = Block(dim, name=f"block_{i}")(h, padding_mask=pm)
    return keras.Model({"x": x, "padding_mask": pm}, keras.layers.Dense(4, name="head")(h))


def calib(n=24, seed=0):
    rng = np.random.default_rng(seed)
    pm = np.ones((n, 6), "float32")
    pm[:, -2:] = 0
    return {"x": rng.normal(size=(n, 6, 8)).astype("float32"), "padding_mask": pm}


def kernels(model):
    return {v.path: keras.ops.convert_to_numpy(v) for v in model.weights if v.path.endswith("kernel")}


def test_blocks_of_a_functional_chain_are_found_with_pre_and_post_layers():
    model = block_model(3)
    candidates, _ = blocks.find_units(model, None)
    plan = blocks.discover(model, candidates, blocks.find_blocks(model), calib(4))
    assert [b.name for b in plan.blocks] == ["block_0", "block_1", "block_2"]
    assert [[l.name for l, _ in units] for units in plan.block_units] == [["up", "gate", "down"]] * 3
    assert [l.name for l, _ in plan.pre] == ["stem"] and [l.name for l, _ in plan.post] == ["head"]
    # up and gate read the same tensor: one capture pass serves both
    assert [[l.name for l in g] for g in blocks.groups(plan.block_units[0], plan.counts)] == [
        ["up", "gate"], ["down"]]


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_block_by_block_equals_layer_by_layer_and_caller_unchanged(method, monkeypatch):
    model = block_model(3)
    before, config = weights_of(model), model.get_config()
    by_block = kernels(kprune.prune_post_training(model, calib(), method, batch_size=8, verbose=0))
    assert_unchanged(model, before, config)
    monkeypatch.setattr(driver, "find_blocks", lambda m: [])
    by_layer = kernels(kprune.prune_post_training(model, calib(), method, batch_size=8, verbose=0))
    assert by_block.keys() == by_layer.keys()
    for path, value in by_block.items():
        np.testing.assert_array_equal(value == 0, by_layer[path] == 0, err_msg=path)
        np.testing.assert_allclose(value, by_layer[path], rtol=1e-4, atol=1e-5, err_msg=path)
        assert (value == 0).mean() == 0.5


def count_block_calls(model, method):
    counts = {}

    def before(layer, args, kwargs):
        counts[layer.name] = counts.get(layer.name, 0) + 1

    copy = block_model(len(blocks.find_blocks(model)))
    with capture.intercept(blocks.find_blocks(copy), before=before):
        kprune.prune_post_training(copy, calib(), method, batch_size=8, in_place=True, verbose=0)
    return counts


def test_every_block_runs_the_same_number_of_times_whatever_the_depth():
    """The work per block does not grow with depth (time linear in depth)."""
    shallow = count_block_calls(block_model(2), "sparsegpt")
    deep = count_block_calls(block_model(5), "sparsegpt")
    # per batch: capture passes of its 2 layer groups, one pass for its
    # outputs, and (for the layers after the blocks) one whole-model pass;
    # block 0 also caches its inputs, the last one gives no outputs
    assert set(deep.values()) == set(shallow.values())
    assert sorted(deep.values())[1:-1] == [deep["block_1"]] * 3
    assert max(deep.values()) <= 1 + 3 * (2 + 1 + 1) + 3


def test_checkpoint_dir_resumes_without_redoing_finished_blocks(tmp_path, monkeypatch):
    model = block_model(3)
    first = kernels(kprune.prune_post_training(model, calib(), "sparsegpt", batch_size=8,
                                               checkpoint_dir=tmp_path, verbose=0))
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith(".npz")) == [
        "block_0000.npz", "block_0001.npz", "block_0002.npz"]
    os.remove(tmp_path / "block_0002.npz")  # as if interrupted during the last block
    calls = []
    original = driver.prune_layer
    monkeypatch.setattr(driver, "prune_layer", lambda layer, *a, **k: (
        calls.append(layer.path), original(layer, *a, **k))[1])
    second = kernels(kprune.prune_post_training(model, calib(), "sparsegpt", batch_size=8,
                                                checkpoint_dir=tmp_path, verbose=0))
    assert sorted(p.split("/")[-1] for p in calls if "block" in p) == ["down", "gate", "up"]
    assert all("block_2" in p for p in calls if "block" in p)
    for path, value in first.items():
        np.testing.assert_allclose(second[path], value, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="other settings"):
        kprune.prune_post_training(model, calib(), "wanda", batch_size=8,
                                   checkpoint_dir=tmp_path, verbose=0)


def test_memory_estimate_refuses_before_any_work(tmp_path):
    model = block_model(2)
    before, config = weights_of(model), model.get_config()
    with pytest.raises(MemoryError, match="in_place=True"):
        kprune.prune_post_training(model, calib(), "sparsegpt", max_memory=1000,
                                   checkpoint_dir=tmp_path / "ckpt", in_place=True, verbose=0)
    assert_unchanged(model, before, config)
    assert not (tmp_path / "ckpt").exists()


def test_in_place_writes_into_the_model_and_returns_it():
    model = block_model(2)
    expected = kernels(kprune.prune_post_training(model, calib(), "wanda", batch_size=8, verbose=0))
    same = kprune.prune_post_training(model, calib(), "wanda", batch_size=8, in_place=True,
                                      verbose=0)
    assert same is model
    got = kernels(model)
    for path, value in expected.items():
        np.testing.assert_array_equal(got[path.replace("prune_low_magnitude_", "")] == 0, value == 0)


# --------------------------------------------------------------------------
# Sparse and quantized: SparseGPT's joint mode
# --------------------------------------------------------------------------


def test_joint_sweep_puts_kept_weights_on_the_channel_grid():
    from kprune.methods.one_shot.sparsegpt import channel_scales, sparsegpt

    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 32))
    w = rng.normal(size=(32, 8))
    mask, new = sparsegpt(w, x.T @ x, 0.5, quantize="int4")
    scales = channel_scales(w.T, "int4")
    q = new * scales[None, :]
    np.testing.assert_allclose(q, np.round(q), atol=1e-6)
    assert q.min() >= -8 - 1e-6 and q.max() <= 7 + 1e-6
    assert (new[~mask] == 0).all() and mask.mean() == 0.5
    # rounding inside the sweep beats rounding after it (the OBS update absorbs both errors)
    _, sparse = sparsegpt(w, x.T @ x, 0.5)
    after = np.clip(np.round(sparse * scales), -8, 7) / scales
    assert np.linalg.norm(x @ (w - new)) < np.linalg.norm(x @ (w - after))


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_joint_mode_gives_keras_quantized_layers_with_the_zeros(mode):
    model = block_model(2)
    data = calib()
    sparse = kprune.prune_post_training(model, data, "sparsegpt", batch_size=8, verbose=0)
    joint = kprune.prune_post_training(model, data, "sparsegpt", batch_size=8, quantize=mode,
                                       verbose=0)
    assert not isinstance(joint, kprune.PrunedModel)
    inner = {l.path: l for l in joint._flatten_layers() if isinstance(l, keras.layers.Dense)}
    for name in ("block_0/up", "block_1/down", "stem", "head"):
        layer = inner[name]
        assert layer.quantization_mode == mode
        q = keras.ops.convert_to_numpy(layer._kernel)
        if mode == "int4":
            q = keras.ops.convert_to_numpy(keras.quantizers.unpack_int4(
                layer._kernel, layer.units, axis=-1))
        assert (q == 0).mean() >= 0.5
    dense = keras.ops.convert_to_numpy(model(data))
    err_sparse = np.linalg.norm(keras.ops.convert_to_numpy(sparse(data)) - dense)
    err_joint = np.linalg.norm(keras.ops.convert_to_numpy(joint(data)) - dense)
    # rounding costs little on top of pruning (on this tiny random model,
    # where a small change of a layer's inputs changes later masks)
    assert err_joint < (1.25 if mode == "int8" else 1.5) * err_sparse
    with pytest.raises(ValueError, match="joint mode"):
        kprune.prune_post_training(model, data, "wanda", quantize=mode, verbose=0)


# --------------------------------------------------------------------------
# Sharded models: keras.distribution.ModelParallel on JAX
# --------------------------------------------------------------------------


MODEL_PARALLEL = """
import json
import jax, keras, numpy as np
import kprune

assert len(jax.devices()) == 2, jax.devices()
rng = np.random.default_rng(0)
x = rng.normal(size=(32, 8, 16)).astype("float32")

def transformer():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 16))
    a = keras.layers.MultiHeadAttention(4, 8, name="attn")(inp, inp, use_causal_mask=True)
    h = keras.layers.LayerNormalization(name="ln")(inp + a)
    m = keras.layers.Dense(64, activation="gelu", name="up")(h)
    h = h + keras.layers.Dense(16, name="down")(m)
    return keras.Model(inp, keras.layers.Dense(8, name="head")(h))

def run(distribution, method):
    keras.distribution.set_distribution(distribution)
    model = transformer()
    kprune.prune_post_training(model, x, method, batch_size=16, in_place=True, verbose=0)
    kernels = {v.path: v for v in model.weights if v.path.endswith("kernel")}
    masks = {p: (keras.ops.convert_to_numpy(v) != 0).tolist() for p, v in kernels.items()}
    layout = {p: [len(v.value.sharding.device_set), list(v.value.sharding.spec)]
              for p, v in kernels.items() if hasattr(v.value.sharding, "spec")}
    keras.distribution.set_distribution(None)
    return masks, layout

mesh = keras.distribution.DeviceMesh((1, 2), ["batch", "model"], devices=jax.devices())
layout_map = keras.distribution.LayoutMap(mesh)
layout_map["attn/(query|key|value)/kernel"] = (None, "model", None)
layout_map["attn/attention_output/kernel"] = ("model", None, None)
layout_map["up/kernel"] = (None, "model")
layout_map["down/kernel"] = ("model", None)
out = {}
for method in ["magnitude", "wanda", "sparsegpt"]:
    single, _ = run(None, method)
    sharded, layout = run(keras.distribution.ModelParallel(layout_map=layout_map,
                                                           batch_dim_name="batch"), method)
    out[method] = {"equal": single == sharded, "layout": layout,
                   "sparsity": float(1 - np.mean(np.asarray(sharded["up/kernel"])))}
print(json.dumps(out))
"""


@pytest.mark.backends("jax", reason="keras.distribution.ModelParallel over 2 host devices is "
                                     "JAX's (XLA_FLAGS=--xla_force_host_platform_device_count=2)")
def test_model_parallel_masks_equal_one_device_and_layout_is_kept():
    import json
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, KERAS_BACKEND="jax",
               XLA_FLAGS="--xla_force_host_platform_device_count=2",
               PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", MODEL_PARALLEL], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for method in ("magnitude", "wanda", "sparsegpt"):
        assert result[method]["equal"], method
        assert result[method]["sparsity"] == 0.5
        layout = result[method]["layout"]
        assert layout["up/kernel"] == [2, [None, "model"]], layout
        assert layout["down/kernel"] == [2, ["model", None]], layout
        assert layout["attn/query/kernel"] == [2, [None, "model", None]], layout


# --------------------------------------------------------------------------
# KerasHub: the blocks Keras' GPTQ uses
# --------------------------------------------------------------------------


def test_keras_hub_causal_lm_is_pruned_block_by_block_like_layer_by_layer(monkeypatch):
    keras_hub = pytest.importorskip("keras_hub")
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.Gemma3Backbone(
        vocabulary_size=64, image_size=16, num_layers=2, num_query_heads=2,
        num_key_value_heads=1, hidden_dim=16, intermediate_dim=32, head_dim=8)
    model = keras_hub.models.Gemma3CausalLM(backbone=backbone, preprocessor=None)
    rng = np.random.default_rng(0)
    data = {"token_ids": rng.integers(0, 64, size=(8, 12)).astype("int32"),
            "padding_mask": np.ones((8, 12), "int32")}
    structure = model.get_quantization_layer_structure("gptq")
    assert blocks.find_blocks(model) == list(structure["sequential_blocks"])
    with pytest.warns(UserWarning, match="token_embedding"):
        by_block = kernels(kprune.prune_post_training(model, data, "wanda", batch_size=4,
                                                      in_place=False, verbose=0))
    monkeypatch.setattr(driver, "find_blocks", lambda m: [])
    with pytest.warns(UserWarning, match="token_embedding"):
        by_layer = kernels(kprune.prune_post_training(model, data, "wanda", batch_size=4,
                                                      verbose=0))
    pruned = [p for p, v in by_block.items() if (v == 0).mean() == 0.5]
    assert len(pruned) == 2 * 7  # q, k, v, o and three MLP projections per block
    for path, value in by_block.items():
        np.testing.assert_array_equal(value == 0, by_layer[path] == 0, err_msg=path)
