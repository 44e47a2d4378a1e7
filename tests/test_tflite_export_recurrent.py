"""LSTM and GRU models export to TFLite builtin ops only (tflite_export.recurrent)."""

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="TFLite export needs TensorFlow")
pytestmark = pytest.mark.tensorflow

import keras  # noqa: E402

import kprune  # noqa: E402
import tflite_export  # noqa: E402
from tflite_export.recurrent import recurrent_layers, with_static_batch  # noqa: E402


def _pruned_rnn(kind):
    keras.utils.set_random_seed(0)
    inp = keras.Input((20, 8))
    h = kind(32, name="rnn")(inp)
    model = keras.Model(inp, keras.layers.Dense(4, name="head")(h))
    pruned = kprune.prune_low_magnitude(model, kprune.ConstantSparsity(0.5, 0))
    kprune.Pruner(pruned).start()
    return pruned


@pytest.mark.parametrize("kind", [keras.layers.LSTM, keras.layers.GRU], ids=["lstm", "gru"])
def test_a_pruned_recurrent_model_exports_to_builtins_and_verifies(kind):
    pruned = _pruned_rnn(kind)
    assert pruned.inputs[0].shape[0] is None
    data = tflite_export.convert(pruned)
    ops = tflite_export.inspect(data).op_counts
    assert "WHILE" in ops and not any(o.startswith(("Flex", "CUSTOM")) for o in ops), ops
    assert pruned.inputs[0].shape[0] is None  # the caller's model is unchanged
    stripped = kprune.strip_pruning(pruned)
    x = np.random.default_rng(1).normal(size=(6, 20, 8)).astype("float32")
    scale, diff = tflite_export.compare_outputs(stripped, data, samples=x)
    assert diff <= tflite_export.tolerance(None, scale)
    assert tflite_export.verify(stripped, data) <= tflite_export.tolerance(None, scale) * 10


def test_static_batch_applies_only_to_recurrent_models_with_an_unknown_batch():
    dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    assert with_static_batch(dense) is dense and recurrent_layers(dense) == []
    inp = keras.Input((5, 3))
    rnn = keras.Model(inp, keras.layers.Bidirectional(keras.layers.GRU(4))(inp))
    fixed = with_static_batch(rnn)
    assert fixed is not rnn and fixed.inputs[0].shape[0] == 1
    assert len(recurrent_layers(rnn)) == 1
    assert fixed.weights[0] is rnn.weights[0]  # shared, not copied
