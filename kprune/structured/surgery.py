"""Model surgery: a plan's thinner model, or its channel-zeroed twin.

Both are rebuilt from the model's config (so they save as `.keras` like the
original): every layer whose channels change gets the config its handler
writes (`filters`, `units`, `num_heads`, a Reshape's target shape, ...), and
every layer gets its weights, sliced (`build_thin_model`) or with the removed
channels zeroed (`build_masked_model`). Nested functional/Sequential models
are edited recursively. Lambda layers are cloned from the live layer (its
Python function), never deserialized from bytecode.
"""

from __future__ import annotations

import copy

import keras
import numpy as np

from kprune.structured import handlers as handlers_lib
from kprune.core.model_tree import leaf_layer_paths
from kprune.structured.graph import accepts_argument

__all__ = ["sliced_weights", "build_thin_model", "build_masked_model", "channel_masks"]


def _kept(removed_ids, ids):
    return int((~removed_ids[np.asarray(ids, dtype=np.int64)]).sum()) if len(ids) else 0


def sliced_weights(graph, plan, zero_only=False):
    """New weights and layer configs for a plan.

    Args:
        graph: the `DependencyGraph`.
        plan: a `PruningPlan` of that graph.
        zero_only: zero the removed channels instead of slicing them out.

    Returns:
        `(weights, configs)`: `{layer path: list of arrays}` (in
        `layer.weights` order) and `{layer path: (handler, layer, out_widths,
        in_widths, inner)}` for the layers whose config changes.
    """
    removed_ids = graph.removed_ids(plan.removed)
    weights, configs = {}, {}
    for node in graph.nodes:
        layer = node.operation
        path = graph.node_path[id(node)]
        handler = graph.node_handler[id(node)]
        if handler is not None and not zero_only:
            outs = [graph.tensor_ids[id(t)] for t in node.output_tensors]
            ins = [graph.tensor_ids[id(t)] for t in node.input_tensors]
            ow = [_kept(removed_ids, o) for o in outs]
            iw = [_kept(removed_ids, i) for i in ins]
            inner = {k: _kept(removed_ids, v) for k, v in graph.node_inner[id(node)].items()}
            if (ow != [len(o) for o in outs] or iw != [len(i) for i in ins]
                    or any(inner[k] != len(v) for k, v in graph.node_inner[id(node)].items())):
                configs[path] = (handler, layer, ow, iw, inner)
        slots = graph.node_slots[id(node)]
        if not slots:
            continue
        keys = [handlers_lib.weight_key(layer, v) for v in layer.weights]
        arrays = [keras.ops.convert_to_numpy(v).copy() for v in layer.weights]
        for s in slots:
            drop = removed_ids[s.ids]
            if not drop.any():
                continue
            i = keys.index(s.weight)
            if zero_only:
                if s.role == "stat":
                    continue
                index = [slice(None)] * arrays[i].ndim
                index[s.axis] = np.flatnonzero(drop)
                arrays[i][tuple(index)] = 0
            else:
                arrays[i] = np.compress(~drop, arrays[i], axis=s.axis)
        weights[path] = arrays
    if not zero_only:
        for path, ids in graph.nested_inputs.items():
            kept = _kept(removed_ids, ids)
            if kept != len(ids):
                configs[path] = (_INPUT_LAYER, None, [kept], [], {})
    return weights, configs


class _InputLayerConfig:
    """New `batch_shape` of a nested model's InputLayer."""

    @staticmethod
    def new_config(layer, config, out_widths):
        for key in ("batch_shape", "batch_input_shape"):
            if config.get(key):
                config[key] = list(config[key][:-1]) + [int(out_widths[0])]
        return config


_INPUT_LAYER = _InputLayerConfig()


def _new_config(handler, layer, config, out_widths, in_widths, inner):
    kwargs = {}
    if accepts_argument(handler.new_config, "in_widths"):
        kwargs["in_widths"] = in_widths
    if accepts_argument(handler.new_config, "inner"):
        kwargs["inner"] = inner
    return handler.new_config(layer, config, out_widths, **kwargs)


class _LambdaClone:
    """Stands in for a Lambda's class while a config is deserialized."""

    def __init__(self, layer):
        self.layer = layer

    def from_config(self, config):
        src = self.layer
        return keras.layers.Lambda(
            src.function, output_shape=getattr(src, "_output_shape", None),
            mask=getattr(src, "mask", None), arguments=getattr(src, "arguments", None),
            name=config.get("name", src.name), dtype=config.get("dtype"),
        )


def _edit(config, prefix, configs, layers, custom):
    for entry in config.get("layers", []):
        lc = entry.get("config", {})
        name = lc.get("name", entry.get("name"))
        path = prefix + name
        entry.pop("build_config", None)
        if isinstance(lc, dict) and "layers" in lc:  # a nested functional/Sequential model
            _edit(lc, path + "/", configs, layers, custom)
            continue
        _drop_build_configs(lc)
        if path in configs:
            handler, layer, ow, iw, inner = configs[path]
            entry["config"] = _new_config(handler, layer, lc, ow, iw, inner)
        if entry.get("class_name") == "Lambda" and path in layers:
            key = f"kprune>LambdaClone_{len(custom)}"
            entry["registered_name"] = key
            custom[key] = _LambdaClone(layers[path])


def _drop_build_configs(config):
    """Removes `build_config` of wrapped layers (Bidirectional, TimeDistributed)."""
    if isinstance(config, dict):
        config.pop("build_config", None)
        for v in config.values():
            _drop_build_configs(v)
    elif isinstance(config, list):
        for v in config:
            _drop_build_configs(v)


def _get(model, path):
    target = model
    for part in path.split("/"):
        target = target.get_layer(part)
    return target


def _rebuild(model, weights, configs, custom_objects=None):
    config = copy.deepcopy(model.get_config())
    if "layers" not in config:
        raise ValueError(
            f"Channel pruning cannot rebuild model {model.name!r} "
            f"({type(model).__name__}): its get_config() holds constructor arguments "
            f"(e.g. a KerasHub backbone), not the layer graph, so a thinner layer cannot be "
            f"described. Rebuild it as a plain functional model first: "
            f"`keras.Model(model.inputs, model.outputs)`.")
    layers = leaf_layer_paths(model)
    custom = {}
    _edit(config, "", configs, layers, custom)
    # The live classes of custom layers (e.g. keras.applications' LayerScale):
    # the model is rebuilt in this process, so no registration is needed.
    live = {}
    for layer in layers.values():
        cls = type(layer)
        if not cls.__module__.startswith("keras.src.layers"):
            live[cls.__name__] = cls
            live[keras.saving.get_registered_name(cls)] = cls
    scope = {**live, **(custom_objects or {}), **custom}
    try:
        with keras.saving.custom_object_scope(scope):
            if isinstance(model, keras.Sequential):
                new = keras.Sequential.from_config(config)
            else:
                new = keras.Model.from_config(config)
    except Exception as e:  # noqa: BLE001 - re-raised with kprune's context
        raise ValueError(
            f"Channel pruning could not rebuild model {model.name!r} from its config "
            f"({type(e).__name__}: {e}). Custom layers must implement get_config() and be "
            f"passed as custom_objects={{'Name': cls}} (or registered with "
            f"keras.saving.register_keras_serializable)."
        ) from e
    for path, layer in layers.items():
        if not layer.weights:
            continue
        target = _get(new, path)
        values = weights.get(path)
        if values is None:
            values = layer.get_weights()
        try:
            target.set_weights(values)
        except ValueError as e:  # pragma: no cover - internal consistency
            raise RuntimeError(
                f"Channel surgery made inconsistent weights for layer {path!r}: {e}"
            ) from e
    return new


def build_thin_model(graph, plan, custom_objects=None):
    """The physically thinner model of `plan` (a new model).

    Example:
    >>> thin = build_thin_model(pruner.graph, pruner.plan())
    """
    weights, configs = sliced_weights(graph, plan)
    return _rebuild(graph.model, weights, configs, custom_objects)


def build_masked_model(graph, plan, custom_objects=None):
    """A copy of the model with the plan's channels zeroed, not removed.

    Example:
    >>> masked = build_masked_model(pruner.graph, pruner.plan())
    """
    weights, _ = sliced_weights(graph, plan, zero_only=True)
    return _rebuild(graph.model, weights, {}, custom_objects)


def channel_masks(graph, plan):
    """Keep-masks `{(layer path, weight key): float array}` of a plan."""
    removed_ids = graph.removed_ids(plan.removed)
    out = {}
    for node in graph.nodes:
        layer = node.operation
        path = graph.node_path[id(node)]
        for s in graph.node_slots[id(node)]:
            drop = removed_ids[s.ids]
            if not drop.any() or s.role == "stat":
                continue
            var = handlers_lib.find_weight(layer, s.weight)
            key = (path, s.weight)
            m = out.get(key)
            if m is None:
                m = np.ones(tuple(var.shape), dtype=np.float32)
            index = [slice(None)] * m.ndim
            index[s.axis] = np.flatnonzero(drop)
            m[tuple(index)] = 0
            out[key] = m
    return out
