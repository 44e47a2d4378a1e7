"""At-init scoring: copies of the model (scoring never touches the caller's model).

`scoring_copy` clones the model (optionally in float64 with linear
softmaxes, for SynFlow) and returns the copy's scored variables by key;
`fixed_mask_model` builds the returned model with fixed-mask wrappers (or a
`kprune.PrunedModel` for layers a wrapper cannot reach).
"""

from __future__ import annotations

import warnings

import keras

from kprune.core import model_tree
from kprune.core import wrapping as prune_lib
from kprune.core.model_tree import copy_model, find_layers, tree_index
from kprune.core.pruned_model import PrunedModel
from kprune.core.wrapper import prunable_weights, weight_path


def scoring_copy(plan, float64=False, linear_softmax=False):
    """A plain clone of the model; returns `(clone, {key: variable})`."""
    if plan.tree:
        return tree_scoring_copy(plan, float64, linear_softmax)

    def clone_layer(layer):
        config = layer.get_config()
        if float64 and "dtype" in config:
            config["dtype"] = "float64"
        if linear_softmax:
            if isinstance(layer, keras.layers.Softmax):
                return keras.layers.Identity(name=layer.name, dtype=config.get("dtype"))
            if is_softmax(config.get("activation")):
                config["activation"] = "linear"
        return model_tree.rebuild_layer(layer, config)

    clone = model_tree.clone_layers(plan.model, clone_layer)
    by_name = {l.name: l for l in model_tree.leaf_layers(clone)}
    variables = {}
    for name in dict.fromkeys(k[0] for k in plan.keys):
        for weight, _ in prunable_weights(by_name[name], plan.include_bias):
            variables[(name, weight_path(name, weight))] = weight
    return clone, variables


def tree_scoring_copy(plan, float64, linear_softmax):
    """`scoring_copy` for models pruned as a `PrunedModel`: a copy through
    `get_config`; layer configs inside composite layers cannot be rewritten,
    so SynFlow runs in the model's own dtype there (and says so)."""
    if float64 or linear_softmax:
        warnings.warn(
            f"kprune: SynFlow on model '{plan.model.name}', whose prunable layers "
            f"sit inside composite layers, scores a plain copy in the model's "
            f"own dtype: no float64 and no linear softmax, so very deep models "
            f"may overflow (a ValueError then says so).",
            stacklevel=4,
        )
    clone = copy_model(plan.model)
    found = find_layers(clone, list(plan.labels.values()), like=plan.model)
    variables = {}
    for label in dict.fromkeys(k[0] for k in plan.keys):
        layer = found[label]
        for weight, _ in prunable_weights(layer, plan.include_bias):
            variables[(label, weight_path(layer.name, weight))] = weight
    return clone, variables


def is_softmax(activation):
    if activation is None:
        return False
    if isinstance(activation, str):
        return activation == "softmax"
    if isinstance(activation, dict):
        return activation.get("config") == "softmax" or activation.get("class_name") == "softmax"
    return getattr(activation, "__name__", "") == "softmax"


def fixed_mask_model(plan, scope, overrides, include_bias):
    """The caller's model cloned with fixed-mask PruneWrappers on the targets
    (or, for layers inside composite layers, a `PrunedModel` of a copy)."""
    if plan.tree:
        return PrunedModel(copy_model(plan.model), [
            {"layer": label, "index": tree_index(plan.model, label),
             "pruning_schedule": None, "prune_bias": include_bias,
             "scope": "layer" if label in plan.overrides else scope}
            for label in plan.labels.values()
        ])
    return prune_lib.wrap_fixed(plan.model, plan.targets, scope=scope, prune_bias=include_bias,
                                layer_scopes={name: "layer" for name in overrides})
