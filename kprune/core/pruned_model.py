"""`PrunedModel`: pruning for any Keras model, whatever its layers nest in.

`kprune.PruneWrapper` replaces a layer of a functional or Sequential graph by a
wrapper around it. That is impossible for a layer inside a composite layer
(the attention and MLP of a KerasHub `TransformerDecoder`, a ViT encoder
block, a custom block) or inside a subclassed model: their `call()` is Python
code that refers to the layer itself. Since kprune's masks act only after the
optimizer step (see `kprune/wrapper.py`), they need no place in the forward
pass at all, so such layers are pruned where they are:

* `PrunedModel(model, targets)` is a `keras.Model` that holds `model` and runs
  it unchanged. For every target layer, found anywhere in the layer tree by
  its label (the chain of layer names down to it), it owns the masks and the step counter as its own
  non-trainable variables (so they are saved, loaded and, on JAX, part of the
  train step's state) and puts a `MaskConstraint` on each pruned weight.
* Each target is a `MaskedGroup`, which has the same interface as a
  `PruneWrapper` (`kprune.core.wrapper.MaskedWeights`): `Pruner`,
  `PruningCallback`, `strip_pruning` and the reports treat both alike, with
  one mask engine and one update path.
* `kprune.prune_low_magnitude` returns a `PrunedModel` when the model has
  prunable layers that a wrapper cannot reach; the caller's model is copied
  first (`get_config` / `from_config`, then the weights) and never modified,
  unless the caller asks for `in_place=True`.

Example:
```python
backbone = keras_hub.models.GPT2Backbone(vocabulary_size=1000, num_layers=2,
    num_heads=2, hidden_dim=64, intermediate_dim=128, max_sequence_length=64)
pruned = kprune.prune_low_magnitude(backbone, kprune.ConstantSparsity(0.5))
# pruned is a kprune.PrunedModel: every EinsumDense / Dense inside the
# TransformerDecoders is pruned during fit, with the callback as usual.
```
"""

from __future__ import annotations

import keras

from kprune.core import masking
from kprune.core import schedules as schedules_lib
from kprune.core.wrapper import MaskedWeights, PruneWrapper, is_prunable

__all__ = [
    "PrunedModel",
    "MaskedGroup",
    "prunable_layer_tree",
    "select_tree_targets",
    "find_layers",
    "tree_index",
    "copy_model",
]


def _sublayers(layer):
    """Direct sublayers of `layer` (Keras layers only, not ops nodes)."""
    return [
        sub for sub in layer._flatten_layers(include_self=False, recursive=False)
        if isinstance(sub, keras.layers.Layer)
    ]


def prunable_layer_tree(model):
    """The outermost prunable layers anywhere in `model`'s layer tree.

    A prunable layer is not descended into (a `MultiHeadAttention` is one
    target, not four `EinsumDense`s); layers used twice are listed once.

    Returns:
        A list of `(layer, label, is_top_level)` in traversal order. `label`
        is the chain of layer names from the model down to the layer
        (`"transformer_layer_0/self_attention"`): Keras' own `layer.path`
        where the model was built in one go, but stable for a copy, a loaded
        model and a model built by `build_from_config` alike.
        `is_top_level` says whether a `PruneWrapper` could replace the layer
        in a functional or Sequential graph (a node of `model` or of a graph
        model nested in it).
    """
    out = []
    for layer, label, graph in _walk(model):
        if is_prunable(layer):
            out.append((layer, label, graph))
    return out


def _walk(model, with_index=False):
    """`(layer, label, in_graph)` for the layer tree, not descending into
    prunable layers or `PruneWrapper`s; each layer once. With `with_index`,
    also the layer's position in the tree (`"0.2.1"`): the same for a copy or
    a loaded model, whose layers Keras may have named anew (`dense_3` for
    `dense`), so it is what a `PrunedModel` finds its layers by."""
    seen = set()

    def visit(layer, prefix, index, graph):
        for position, sub in enumerate(_sublayers(layer)):
            if id(sub) in seen or isinstance(sub, PruneWrapper):
                continue
            seen.add(id(sub))
            label = f"{prefix}{sub.name}"
            where = f"{index}{position}"
            yield (sub, label, graph, where) if with_index else (sub, label, graph)
            if not is_prunable(sub):
                nested_graph = graph and isinstance(sub, keras.Model) and _is_graph(sub)
                yield from visit(sub, f"{label}/", f"{where}.", nested_graph)

    yield from visit(model, "", "", _is_graph(model))


def _find_layers(model, labels):
    """`{label: layer}` for the given labels (see `prunable_layer_tree`)."""
    wanted = set(labels)
    return {label: layer for layer, label, _ in _walk(model) if label in wanted}


def tree_index(model, label):
    """The tree position (see `_walk`) of the layer labelled `label`."""
    for _, found, _, where in _walk(model, with_index=True):
        if found == label:
            return where
    return None


def _find_by_index(model, indices):
    wanted = set(indices)
    return {where: layer for layer, _, _, where in _walk(model, with_index=True) if where in wanted}


def _is_built(model):
    """Built, or holding its weights (Keras leaves `built` False on some
    subclassed models built by `build_from_config`)."""
    return bool(model.built or model.weights)


def _is_graph(model):
    return isinstance(model, keras.Sequential) or callable(getattr(model, "_run_through_graph", None))


def copy_model(model):
    """A new model of the same class and config, with copies of the weights.

    Works for functional and Sequential models, KerasHub models and subclassed
    models that implement `get_config` (Keras records a subclassed model's
    constructor arguments). Raises a ValueError saying how to proceed when the
    model cannot be rebuilt from its config.
    """
    what = f"model '{model.name}' ({type(model).__name__})"
    if type(model) in (keras.Model, keras.Sequential) or (
            type(model).__name__ == "Functional" and _is_graph(model)):
        # A plain graph: cloned layer by layer (each layer's own class, no
        # registration needed), weights copied.
        from kprune.core.wrapping import clone_layers, _fresh_copy  # noqa: PLC0415

        return clone_layers(model, _fresh_copy)
    try:
        new = model.__class__.from_config(model.get_config())
        if not _is_built(new):
            build = model.get_build_config()
            if not build:
                raise ValueError("it records no build config (build it by calling it on data)")
            new.build_from_config(build)
    except Exception as e:  # the model's own code: any error means "cannot copy"
        raise ValueError(
            f"kprune cannot copy {what} to prune the copy: rebuilding it from "
            f"get_config() failed ({type(e).__name__}: {e}). Implement "
            f"get_config()/from_config() for it, or prune the model object "
            f"itself with in_place=True (its variables then get kprune's mask "
            f"constraints)."
        ) from e
    old_weights, new_weights = model.weights, new.weights
    if [tuple(w.shape) for w in old_weights] != [tuple(w.shape) for w in new_weights]:
        raise ValueError(
            f"kprune cannot copy {what}: the copy rebuilt from get_config() "
            f"has other weights ({len(new_weights)} vs {len(old_weights)}). "
            f"Prune the model object itself with in_place=True."
        )
    for new_w, old_w in zip(new_weights, old_weights):
        new_w.assign(keras.ops.convert_to_numpy(old_w))
    return new


class MaskedGroup(MaskedWeights):
    """The masks of one layer inside a `PrunedModel` (owned by the model).

    Args:
        owner: the `PrunedModel` whose variables hold the masks.
        layer: the pruned layer.
        label: its label in the model (see `prunable_layer_tree`), the key
            of the saved config.
        pruning_schedule: a schedule, or None for fixed masks.
        granularity: a `kprune.core.masking.Granularity`.
        scope: `"layer"` or `"global"`.
        prune_bias: also mask the layer's bias.
    """

    def __init__(self, owner, layer, label, pruning_schedule, granularity, scope, prune_bias):
        self.layer = layer
        self._label = label
        self.name = label
        self.pruning_schedule = pruning_schedule
        self.granularity = granularity
        self.scope = scope
        self.prune_bias = prune_bias
        self.built = True
        prefix = label.replace("/", "__") + "__"
        self._create_mask_state(owner, layer, granularity, prune_bias, prefix=prefix)

    @property
    def label(self):
        return self._label

    def __repr__(self):
        return f"<MaskedGroup {self.label!r} of {type(self.layer).__name__}>"


@keras.saving.register_keras_serializable(package="kprune")
class PrunedModel(keras.Model):
    """A model whose layers are pruned where they are, however deeply nested.

    Args:
        model: the Keras model to run (any kind: functional, Sequential,
            subclassed, KerasHub). Used as is: `kprune.prune_low_magnitude`
            passes a copy unless asked to prune in place.
        targets: one dict per pruned layer: `{"layer": label (layer names
            from the model down, e.g. "block/attention"),
            "pruning_schedule": schedule or None, "granularity": ...,
            "scope": "layer" | "global", "prune_bias": bool}` (schedules and
            granularities as objects or in their serialized form).
        **kwargs: `name` and other `keras.Model` arguments.

    Returns:
        A model with the inputs and outputs of `model`; train it with
        `callbacks=[kprune.PruningCallback()]` like any pruned model.

    Example:
    ```python
    pruned = kprune.PrunedModel(model, [
        {"layer": "block/attention/query", "pruning_schedule": kprune.ConstantSparsity(0.5)},
    ])
    ```
    """

    def __init__(self, model, targets, **kwargs):
        if isinstance(model, dict):
            model = keras.saving.deserialize_keras_object(model)
        if not isinstance(model, keras.Model):
            raise TypeError(f"PrunedModel wraps a keras.Model, got {type(model).__name__}.")
        kwargs.setdefault("name", f"pruned_{model.name}")
        super().__init__(**kwargs)
        self.model = model
        self._targets = [self._normalize(t) for t in targets]
        self.groups = []
        if _is_built(model):
            self._attach()

    @staticmethod
    def _normalize(target):
        target = dict(target)
        schedule = target.get("pruning_schedule")
        if isinstance(schedule, dict):
            schedule = keras.saving.deserialize_keras_object(schedule)
        return {
            "layer": target["layer"],
            "index": target.get("index"),
            "pruning_schedule": schedules_lib.get_schedule(schedule),
            "granularity": masking.get_granularity(target.get("granularity")),
            "scope": target.get("scope", "layer"),
            "prune_bias": bool(target.get("prune_bias", False)),
        }

    def _attach(self):
        if self.groups:
            return
        for t in self._targets:
            if t["index"] is None:
                t["index"] = tree_index(self.model, t["layer"])
        by_index = _find_by_index(self.model, [t["index"] for t in self._targets if t["index"]])
        found = {t["layer"]: by_index[t["index"]] for t in self._targets if t["index"] in by_index}
        missing = [t["layer"] for t in self._targets if t["layer"] not in found]
        if missing:
            raise ValueError(
                f"PrunedModel: model '{self.model.name}' has no layer(s) at "
                f"{missing}; its prunable layers are "
                f"{[label for _, label, _ in prunable_layer_tree(self.model)]}."
            )
        self.groups = [
            MaskedGroup(self, found[t["layer"]], t["layer"], t["pruning_schedule"],
                        t["granularity"], t["scope"], t["prune_bias"])
            for t in self._targets
        ]
        self.built = True

    def build(self, input_shape=None):
        if not _is_built(self.model):
            self.model.build(input_shape)
        self._attach()

    def get_build_config(self):
        return {"model": self.model.get_build_config()}

    def build_from_config(self, config):
        if not _is_built(self.model) and config and config.get("model"):
            self.model.build_from_config(config["model"])
        self._attach()

    def call(self, inputs, training=None, **kwargs):
        from kprune.core.wrapper import check_trainable  # noqa: PLC0415

        if training:
            for group in self.groups:
                check_trainable(group)
        return self.model(inputs, training=training, **kwargs)

    def compute_output_spec(self, inputs, *args, **kwargs):
        return self.model.compute_output_spec(inputs, *args, **kwargs)

    def get_config(self):
        return {
            "name": self.name,
            "model": keras.saving.serialize_keras_object(self.model),
            "targets": [
                {
                    "layer": t["layer"],
                    "index": t["index"],
                    "pruning_schedule": None if t["pruning_schedule"] is None
                    else keras.saving.serialize_keras_object(t["pruning_schedule"]),
                    "granularity": masking.serialize_granularity(t["granularity"]),
                    "scope": t["scope"],
                    "prune_bias": t["prune_bias"],
                }
                for t in self._targets
            ],
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        model = keras.saving.deserialize_keras_object(config.pop("model"))
        return cls(model, **config)


def select_tree_targets(model, overrides=None, ignore=None, overrides_arg="sparsity"):
    """The layers of `model`'s layer tree to prune, for any model kind.

    Every outermost prunable layer (see `prunable_layer_tree`), minus
    `ignore` and the layers whose override is None. Keys of `overrides` and
    names in `ignore` are labels (`"block/attention"`) or unambiguous layer
    names.

    Returns:
        A list of `(layer, label, override)`, where `override` is the
        layer's value in `overrides` (a sparsity) or `None` when it has none.
    """
    from kprune.core.wrapping import _normalize_ignore  # noqa: PLC0415

    found = prunable_layer_tree(model)
    if not found:
        raise ValueError(
            f"Model '{model.name}' has no layer kprune can prune anywhere in its "
            f"layer tree: nothing to prune."
        )
    overrides = dict(overrides or {})
    ignore = _normalize_ignore(ignore)
    labels = [label for _, label, _ in found]
    label_of = {id(l): label for l, label, _ in found}
    names = {}
    for layer, _, _ in found:
        names.setdefault(layer.name, []).append(layer)
    keys = set(overrides) | set(ignore["names"])
    unknown = sorted(k for k in keys if k not in labels and k not in names)
    if unknown:
        raise ValueError(
            f"Unknown layer name(s) or path(s) {unknown} in {overrides_arg}/ignore; "
            f"the prunable layers of model '{model.name}' are {labels}."
        )
    ambiguous = sorted(k for k in keys if k not in labels and len(names.get(k, ())) > 1)
    if ambiguous:
        raise ValueError(
            f"Layer name(s) {ambiguous} in {overrides_arg}/ignore match several "
            f"layers of model '{model.name}'; use their paths instead: "
            f"{[label_of[id(l)] for k in ambiguous for l in names[k]]}."
        )
    out = []
    for layer, label, _ in found:
        key = label if (label in overrides or label in ignore["names"]) else layer.name
        if key in ignore["names"] or (ignore["types"] and isinstance(layer, ignore["types"])):
            continue
        if key in overrides and overrides[key] is None:
            continue
        out.append((layer, label, overrides.get(key)))
    if not out:
        raise ValueError(
            f"Every prunable layer of model '{model.name}' is excluded by ignore= "
            f"or {overrides_arg}={{name: None}}: {labels}; there is nothing to prune."
        )
    return out


def prune_layer_tree(model, pruning_schedule, granularity, scope, overrides, ignore,
                     in_place=False, verbose=0):
    """`kprune.prune_low_magnitude` for models a wrapper cannot reach: a
    `PrunedModel` over a copy of `model` (or `model` itself, `in_place`)."""
    from kprune.core.wrapper import prunable_weights  # noqa: PLC0415

    targets = []
    for layer, label, override in select_tree_targets(model, overrides, ignore):
        schedule, layer_scope = pruning_schedule, scope
        if override is not None:
            cfg = pruning_schedule.get_config()
            schedule = schedules_lib.ConstantSparsity(
                override, begin_step=cfg["begin_step"], end_step=cfg["end_step"],
                frequency=cfg["frequency"])
            layer_scope = "layer"
        for weight, layout in prunable_weights(layer):
            try:
                granularity.validate(tuple(weight.shape), layout,
                                     name=f"layer '{label}' weight '{weight.name}'")
            except ValueError as e:
                raise ValueError(
                    f"{e} Leave this layer dense with ignore=[{label!r}] or "
                    f"sparsity={{{label!r}: None}}."
                ) from None
        targets.append({"layer": label, "index": tree_index(model, label),
                        "pruning_schedule": schedule,
                        "granularity": granularity, "scope": layer_scope})
    inner = model if in_place else copy_model(model)
    pruned = PrunedModel(inner, targets)
    if verbose:
        where = "the model itself (in_place=True)" if in_place else "a copy of the model"
        print(f"kprune: pruning {len(targets)} layer(s) of '{model.name}' where they "
              f"are, in {where}: {', '.join(t['layer'] for t in targets)}")
    return pruned


def find_layers(model, labels, like=None):
    """`{label: layer}` in `model` for labels from `prunable_layer_tree`.

    With `like` (the model `model` was copied from, whose layers the labels
    name), layers are matched by their position in the tree, so a copy whose
    layers Keras named anew is found all the same."""
    if like is None:
        return _find_layers(model, labels)
    where = {label: tree_index(like, label) for label in labels}
    by_index = _find_by_index(model, [w for w in where.values() if w is not None])
    return {label: by_index[w] for label, w in where.items() if w in by_index}
