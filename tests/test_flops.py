"""Tests for kprune.reports.flops."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from structured_models import resnet_block_model  # noqa: E402

from kprune.reports.flops import count_flops, count_params, layer_widths, width_report  # noqa: E402
from kprune.structured import prune_channels  # noqa: E402

L = keras.layers


def test_count_flops_by_hand():
    x = keras.Input((8, 8, 3))
    h = L.Conv2D(4, 3, padding="same", name="c")(x)  # 8*8*3*3*3*4 MACs
    h = L.DepthwiseConv2D(3, name="dw")(h)  # 6*6*3*3*4
    h = L.SeparableConv2D(5, 1, name="sep")(h)  # 6*6*(1*4*1 + 4*5)
    h = L.Flatten()(h)
    out = L.Dense(2, name="d")(h)  # 180*2
    model = keras.Model(x, out)
    per = count_flops(model, per_layer=True)
    assert per == {"c": 2 * 6912, "dw": 2 * 1296, "sep": 2 * 864, "d": 2 * 360}
    assert count_flops(model) == sum(per.values())


def test_count_params_and_widths():
    model = resnet_block_model()
    assert count_params(model) == model.count_params()
    assert layer_widths(model)["b2_c1"] == 10


def test_width_report_before_after():
    model = resnet_block_model()
    thin = prune_channels(model, pruning_ratio=0.5)
    text = width_report(model, thin)
    assert "b2_c1" in text and "10 -> 5" in text and "TOTAL" in text
    assert count_flops(thin) < count_flops(model)
    lines = []
    assert width_report(model, thin, print_fn=lines.append) is None and lines


def test_count_flops_with_keras_ops_nodes():
    x = keras.Input((8, 8, 3))
    h = L.Conv2D(4, 1, name="c")(x)  # 8*8*3*4 MACs
    h = keras.ops.relu(h + 3.0) * (1.0 / 6.0)
    out = L.Dense(2, name="d")(keras.ops.mean(h, axis=(1, 2)))  # 4*2
    assert count_flops(keras.Model(x, out), per_layer=True) == {"c": 2 * 768, "d": 2 * 8}


def test_count_flops_unknown_spatial_needs_input_shape():
    import pytest

    x = keras.Input((None, None, 3))
    h = L.Conv2D(4, 3, padding="same", name="c")(x)
    model = keras.Model(x, L.GlobalAveragePooling2D()(h))
    with pytest.raises(ValueError, match="input_shape="):
        count_flops(model)
    assert count_flops(model, input_shape=(8, 8, 3)) == 2 * 8 * 8 * 3 * 3 * 3 * 4
    assert count_flops(model, input_shape=(16, 16, 3)) == 4 * 2 * 8 * 8 * 3 * 3 * 3 * 4


def test_count_flops_attention_and_lstm():
    x = keras.Input((5, 8))
    a = L.MultiHeadAttention(2, 4, name="mha")(x, x)
    h = L.LSTM(3, name="lstm")(a)
    per = count_flops(keras.Model(x, h), per_layer=True)
    # q, k, v, out projections 4*5*8*8, scores and weighted sum 5*5*2*(4+4)
    assert per["mha"] == 2 * (4 * 5 * 64 + 5 * 5 * 2 * 8)
    assert per["lstm"] == 2 * 5 * (8 * 12 + 3 * 12)
