import keras
import numpy as np
import pytest

import kprune
from conftest import small_cnn


def _pruned_cnn(sparsity=0.75):
    pruned = kprune.prune_low_magnitude(small_cnn(), kprune.ConstantSparsity(sparsity))
    kprune.Pruner(pruned).start()
    return pruned


def test_report_rows_on_a_wrapped_model():
    report = kprune.sparsity_report(_pruned_cnn())
    assert [r.layer for r in report] == ["conv1", "conv2", "fc1", "logits"]
    conv1 = report.rows[0]
    assert conv1.weight == "kernel" and conv1.shape == (3, 3, 1, 8) and conv1.params == 72
    assert conv1.zeros == 72 - 18 and conv1.sparsity == pytest.approx(0.75)
    assert report.sparsity == pytest.approx(0.75, abs=1e-3)
    assert set(report.as_dicts()[0]) == {"layer", "weight", "shape", "zeros", "params", "sparsity"}
    assert report.by_layer()["conv1"] == pytest.approx(0.75)


def test_stripped_and_wrapped_reports_agree():
    pruned = _pruned_cnn()
    a = kprune.sparsity_report(pruned).as_dicts()
    b = kprune.sparsity_report(kprune.strip_pruning(pruned)).as_dicts()
    assert a == b


def test_report_prints_a_table():
    text = str(kprune.sparsity_report(_pruned_cnn(0.5)))
    lines = text.splitlines()
    assert lines[0].split() == ["layer", "weight", "shape", "zeros", "sparsity", "params"]
    assert any(line.startswith("conv2") and "50.00%" in line for line in lines)
    assert lines[-1].startswith("total")


def test_report_on_a_dense_model_and_bad_input():
    report = kprune.sparsity_report(small_cnn())
    assert report.zeros == 0 and len(report) == 4
    with pytest.raises(TypeError, match="Keras model or layer"):
        kprune.sparsity_report({"a": 1})


def test_weights_of_multi_weight_layers_are_named_by_their_path():
    inp = keras.Input((4, 8))
    x = keras.layers.MultiHeadAttention(2, 4, name="mha")(inp, inp)
    x = keras.layers.Bidirectional(keras.layers.LSTM(3), name="bi")(x)
    model = keras.Model(inp, keras.layers.Dense(2, name="d")(x))
    report = kprune.sparsity_report(kprune.prune_low_magnitude(model))
    assert [(r.layer, r.weight) for r in report] == [
        ("mha", "query/kernel"), ("mha", "key/kernel"), ("mha", "value/kernel"),
        ("mha", "attention_output/kernel"),
        ("bi", "forward_lstm/lstm_cell/kernel"), ("bi", "forward_lstm/lstm_cell/recurrent_kernel"),
        ("bi", "backward_lstm/lstm_cell/kernel"), ("bi", "backward_lstm/lstm_cell/recurrent_kernel"),
        ("d", "kernel"),
    ]
