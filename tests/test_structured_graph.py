"""Tests for kprune.structured.graph: groups of coupled channels."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from structured_models import (  # noqa: E402
    L,
    check_equivalent,
    inception_model,
    inverted_residual_model,
    randomize,
    resnet_block_model,
    sequential_cnn,
)

from kprune.structured import DependencyGraph, model_nodes  # noqa: E402


def _group_of(graph, producer):
    return [g for g in graph.groups if producer in g.producers][0]


def test_private_keras_surface():
    """Pins the private Keras attributes the graph relies on."""
    model = resnet_block_model()
    out = model.outputs[0]
    op, node_index, tensor_index = out._keras_history
    assert op is model.get_layer("head") and tensor_index == 0
    node = op._inbound_nodes[node_index]
    assert node.operation is op
    assert node.output_tensors[0] is out
    assert len(node.input_tensors) == 1
    add = model.get_layer("b1_add")._inbound_nodes[0]
    assert len(add.input_tensors) == 2
    assert all(hasattr(t, "_keras_history") for t in add.input_tensors)
    # Node.arguments (args/kwargs of the call) and the path of a variable:
    # read by the keras.ops and MultiHeadAttention handlers.
    x = keras.Input((4, 8))
    y = x * 3.0
    op_node = y._keras_history[0]._inbound_nodes[0]
    assert op_node.arguments.args[0] is x and op_node.arguments.args[1] == 3.0
    assert isinstance(y._keras_history[0], keras.Operation)
    mha = L.MultiHeadAttention(2, 4, name="mha")
    mha(x, x)
    assert mha.path == "mha" and mha.weights[0].path == "mha/query/kernel"


def test_model_nodes_topological():
    model = resnet_block_model()
    names = [n.operation.name for n in model_nodes(model)]
    assert names.index("stem") < names.index("b1_add") < names.index("head")
    assert len(names) == len(model.layers) - 1  # no InputLayer


def test_add_ties_producers():
    graph = DependencyGraph(resnet_block_model())
    g = _group_of(graph, "stem")
    assert set(g.producers) == {"stem", "b1_c2"}
    g2 = _group_of(graph, "b2_proj")
    assert set(g2.producers) == {"b2_proj", "b2_c2"}
    layers = {m.layer.name for m in g2.members}
    assert {"b2_proj_bn", "head"} <= layers
    assert _group_of(graph, "head").prunable is False


def test_concatenate_maps_index_ranges():
    graph = DependencyGraph(inception_model())
    bn = [m for g in graph.groups for m in g.members
          if m.layer.name == "cat_bn" and m.weight == "gamma"]
    # three groups each own their slice of the concatenated BN
    spans = sorted((np.flatnonzero(m.channel >= 0).min(), np.flatnonzero(m.channel >= 0).max())
                   for m in bn)
    assert spans == [(0, 3), (4, 8), (9, 11)]


def test_flatten_maps_channel_to_positions():
    graph = DependencyGraph(sequential_cnn())
    g = _group_of(graph, "c2")
    fc = [m for m in g.members if m.layer.name == "fc"][0]
    assert fc.role == "in"
    np.testing.assert_array_equal(fc.channel[:24], np.tile(np.arange(12), 2))


def test_depthwise_multiplier():
    x = keras.Input((8, 8, 3))
    h = L.Conv2D(4, 1, name="a")(x)
    h = L.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(h)
    h = L.Conv2D(5, 1, name="b")(h)
    out = L.Dense(2, name="head")(L.GlobalAveragePooling2D()(h))
    model = randomize(keras.Model(x, out))
    graph = DependencyGraph(model)
    g = _group_of(graph, "a")
    b = [m for m in g.members if m.layer.name == "b"][0]
    np.testing.assert_array_equal(b.channel, np.repeat(np.arange(4), 2))
    check_equivalent(model, pruning_ratio=0.5)


def test_unknown_layer_freezes_and_is_reported():
    x = keras.Input((8, 8, 3))
    h = L.Conv2D(6, 1, name="a")(x)
    h = L.Reshape((8, 12, 4), name="reshape")(h)  # 6 channels -> 4: no index map
    h = L.Conv2D(6, 1, name="b")(h)
    out = L.Dense(2, name="head")(L.Flatten()(h))
    graph = DependencyGraph(keras.Model(x, out))
    assert "moves the channel axis" in graph.unknown_layers["reshape"]
    assert "Reshape" in graph.unknown_layers["reshape"]
    assert not _group_of(graph, "a").prunable
    assert _group_of(graph, "b").prunable
    assert "reshape" in graph.report()


def test_shared_layer_is_frozen():
    x = keras.Input((8, 8, 4))
    shared = L.Conv2D(4, 1, name="shared")
    h = shared(shared(L.Conv2D(4, 1, name="a")(x)))
    out = L.Dense(2, name="head")(L.GlobalAveragePooling2D()(h))
    graph = DependencyGraph(keras.Model(x, out))
    assert "called 2 times (shared weights)" in graph.unknown_layers["shared"]
    assert not _group_of(graph, "a").prunable


def test_softmax_mixes_channels():
    x = keras.Input((8,))
    h = L.Dense(6, activation="softmax", name="a")(x)
    h = L.Dense(6, name="b")(h)
    h = L.Softmax(name="sm")(h)
    out = L.Dense(2, name="head")(h)
    graph = DependencyGraph(keras.Model(x, out))
    assert not _group_of(graph, "a").prunable
    assert "sm" in graph.unknown_layers


def test_model_outputs_are_frozen():
    x = keras.Input((8, 8, 3))
    a = L.Conv2D(4, 1, name="a")(x)
    b = L.Conv2D(4, 1, name="b")(a)
    model = keras.Model(x, [a, b])
    graph = DependencyGraph(model, ignored_layers=[])
    assert not _group_of(graph, "a").prunable
    assert "model output" in _group_of(graph, "b").reasons


def test_default_ignored_layers_are_output_layers():
    graph = DependencyGraph(inverted_residual_model())
    assert graph.ignored == {"head"}


def test_channels_first_is_not_understood():
    x = keras.Input((3, 8, 8))
    h = L.Conv2D(4, 1, data_format="channels_first", name="a")(x)
    h = L.Conv2D(4, 1, data_format="channels_first", name="b")(h)
    out = L.Dense(2, name="head")(L.Flatten()(h))
    graph = DependencyGraph(keras.Model(x, out))
    assert "channels_first" in graph.unknown_layers["a"]


def test_nested_functional_model_is_walked_and_pruned():
    inner_in = keras.Input((8, 8, 4))
    inner = keras.Model(inner_in, L.Conv2D(4, 1, name="ic")(inner_in), name="inner")
    x = keras.Input((8, 8, 3))
    h = L.Conv2D(4, 1, name="a")(x)
    h = inner(h)
    h = L.Conv2D(6, 1, name="b")(h)
    out = L.Dense(2, name="head")(L.GlobalAveragePooling2D()(h))
    model = randomize(keras.Model(x, out))
    graph = DependencyGraph(model)
    assert not graph.unknown_layers
    assert _group_of(graph, "a").prunable and _group_of(graph, "inner/ic").prunable
    _, thin, _ = check_equivalent(model, pruning_ratio=0.5)
    assert thin.get_layer("inner").get_layer("ic").filters == 2
    assert thin.get_layer("a").filters == 2


def test_nested_model_called_twice_is_frozen():
    inner_in = keras.Input((8, 8, 4))
    inner = keras.Model(inner_in, L.Conv2D(4, 1, name="ic")(inner_in), name="inner")
    x = keras.Input((8, 8, 3))
    h = inner(inner(L.Conv2D(4, 1, name="a")(x)))
    h = L.Conv2D(6, 1, name="b")(h)
    out = L.Dense(2, name="head")(L.GlobalAveragePooling2D()(h))
    graph = DependencyGraph(randomize(keras.Model(x, out)))
    assert "called more than once" in graph.unknown_layers["inner"]
    assert not _group_of(graph, "a").prunable and _group_of(graph, "b").prunable


def test_inverted_residual_groups():
    graph = DependencyGraph(inverted_residual_model())
    g = _group_of(graph, "b1_expand")
    assert {m.layer.name for m in g.members} >= {"b1_dw", "b1_dw_bn", "b1_project"}
    assert set(_group_of(graph, "stem").producers) == {"stem", "b1_project", "b2_project"}


def test_subclassed_and_non_model():
    with pytest.raises(TypeError, match="keras.Model"):
        DependencyGraph(object())
