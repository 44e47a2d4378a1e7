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

from kprune.core import checks, masking
from kprune.core import schedules as schedules_lib
from kprune.core.model_tree import (  # noqa: F401 - find_layers: its old public path
    copy_model,
    find_by_index,
    find_layers,
    is_built,
    prunable_layer_tree,
    tree_index,
)
from kprune.core.wrapper import MaskedWeights, check_trainable, prunable_weights

__all__ = ["PrunedModel", "MaskedGroup", "select_tree_targets", "prune_layer_tree"]

# The layer-tree walkers (`prunable_layer_tree`, `find_layers`, `tree_index`,
# `copy_model`) live in `kprune.core.model_tree`.


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
        if is_built(model):
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
        by_index = find_by_index(self.model, [t["index"] for t in self._targets if t["index"]])
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
        if not is_built(self.model):
            self.model.build(input_shape)
        self._attach()

    def get_build_config(self):
        return {"model": self.model.get_build_config()}

    def build_from_config(self, config):
        if not is_built(self.model) and config and config.get("model"):
            self.model.build_from_config(config["model"])
        self._attach()

    def call(self, inputs, training=None, **kwargs):

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

    found = prunable_layer_tree(model)
    if not found:
        raise ValueError(
            f"Model '{model.name}' has no layer kprune can prune anywhere in its "
            f"layer tree: nothing to prune."
        )
    overrides = dict(overrides or {})
    ignore = checks.normalize_ignore(ignore)
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
