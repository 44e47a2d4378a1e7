"""The returned model: fixed masks where the pruned layers are.

In a graph model whose pruned layers are nodes of the graph, every pruned
layer becomes a `kprune.PruneWrapper(layer, pruning_schedule=None)`
(`apply_updates`, a rebuilt copy). Where pruned layers sit inside composite
layers (KerasHub transformer blocks) or subclassed models, the model holding
the pruned weights becomes a `kprune.PrunedModel` with fixed masks
(`wrap_tree`, no further copy).
"""

from __future__ import annotations

import keras
import numpy as np

from kprune.core import model_tree
from kprune.core.pruned_model import PrunedModel, copy_model, prunable_layer_tree, tree_index
from kprune.core.wrapper import PruneWrapper, assign_masks, is_prunable, prunable_weights

__all__ = ["apply_updates", "apply_in_tree", "wrap_tree", "updates_nested_layers", "path_map",
           "tree_targets"]


def tree_targets(model, pruned_ids):
    """Labels of the prunable layers of `model` holding a variable in `pruned_ids`."""
    return [
        label for layer, label, _ in prunable_layer_tree(model)
        if any(id(w) in pruned_ids for w, _ in prunable_weights(layer))
    ]


def updates_nested_layers(model, updates):
    """Whether an updated weight belongs to a layer no `PruneWrapper` reaches."""
    if not isinstance(model, keras.Model):
        return False
    return any(
        not top and any(w.path in updates for w, _ in prunable_weights(layer))
        for layer, _, top in prunable_layer_tree(model)
    )


def apply_in_tree(model, updates):
    """`_apply` for models whose prunable layers sit inside composite layers
    (KerasHub transformer blocks) or subclassed models: a `kprune.PrunedModel`
    over a copy of `model`, with fixed masks on every layer that has an
    updated weight, so the result fine-tunes with exact zeros like any other."""
    paths = [v.path for v in model.weights]
    unknown = sorted(set(updates) - set(paths))
    if unknown:
        raise ValueError(f"apply_updates: no variable with path(s) {unknown} in model '{model.name}'.")
    targets = [
        label for layer, label, _ in prunable_layer_tree(model)
        if any(w.path in updates for w, _ in prunable_weights(layer))
    ]
    copy = copy_model(model)
    return wrap_tree(copy, model, {
        id(v): update for v, path in zip(copy.weights, paths)
        for update in [updates.get(path)] if update is not None
    }, targets)


def wrap_tree(work, model, updates, targets):
    """`kprune.PrunedModel(work)` with fixed masks, `work` itself (no copy).

    Args:
        work: the model the result is made of (a copy of `model`, or the
            driver's working copy that already holds the pruned weights).
        model: the model `targets` were read from (same layer tree).
        updates: `{id(variable of work): (mask, weight or None)}`; a None
            weight keeps the variable's value.
        targets: labels (`prunable_layer_tree`) of the layers to wrap.
    """
    pruned = PrunedModel(work, [{"layer": label, "index": tree_index(model, label),
                                 "pruning_schedule": None} for label in targets])
    masks = []
    for group in pruned.groups:
        group_masks = []
        for w in group.prunable_weights:
            update = updates.get(id(w))
            if update is None:
                group_masks.append(np.ones(tuple(w.shape), bool))
            else:
                mask, weight = update
                if weight is not None:
                    w.assign(np.asarray(weight, np.dtype(w.dtype)))
                group_masks.append(np.asarray(mask, bool))
        masks.append(group_masks)
    assign_masks(pruned.groups, masks)
    return pruned


def apply_updates(model, updates, with_unwrapped=False):
    """A copy of `model` with new masked kernels: `{variable.path: (mask, w)}`.

    Paths are those of `model`'s variables. In a graph model whose prunable
    layers are all nodes of the graph, each one goes into a fixed-mask
    `PruneWrapper` (its other pruned weights get all-ones masks). A model with
    prunable layers inside composite layers or subclassed models becomes a
    `kprune.PrunedModel` with fixed masks (`apply_in_tree`). `model` is not
    modified.

    Returns:
        The new model (and, with `with_unwrapped`, the sorted paths of the
        variables pruned without a wrapper).
    """
    if updates_nested_layers(model, updates):
        pruned = apply_in_tree(model, updates)
        return (pruned, []) if with_unwrapped else pruned
    leaves = model_tree.leaf_layers(model)
    where = {}
    for leaf in leaves:
        for index, variable in enumerate(leaf.weights):
            where[variable.path] = (leaf, index)
    unknown = sorted(set(updates) - set(where))
    if unknown:
        raise ValueError(f"apply_updates: no variable with path(s) {unknown} in model '{model.name}'.")
    wrap, unwrapped = set(), []
    for path, (leaf, index) in where.items():
        if path not in updates:
            continue
        if is_prunable(leaf) and any(w is leaf.weights[index] for w, _ in prunable_weights(leaf)):
            wrap.add(id(leaf))
        else:
            unwrapped.append(path)

    def clone_layer(layer):
        new = model_tree.fresh_copy(layer)
        return PruneWrapper(new, pruning_schedule=None) if id(layer) in wrap else new

    clone = model_tree.clone_layers(model, clone_layer)
    by_name = {}
    for leaf in model_tree.leaf_layers(clone):
        by_name[(leaf.layer if isinstance(leaf, PruneWrapper) else leaf).name] = leaf
    for leaf in leaves:
        if not any(v.path in updates for v in leaf.weights):
            continue
        new = by_name[leaf.name]
        inner = new.layer if isinstance(new, PruneWrapper) else new
        wrapped = {id(v) for v in new.prunable_weights} if isinstance(new, PruneWrapper) else set()
        for old_var, new_var in zip(leaf.weights, inner.weights):
            if old_var.path in updates and id(new_var) not in wrapped:
                mask, weight = updates[old_var.path]
                new_var.assign(np.where(mask, weight, 0).astype(new_var.dtype))
        if isinstance(new, PruneWrapper):
            position = {id(v): i for i, v in enumerate(inner.weights)}
            masks = []
            for var in new.prunable_weights:
                old_var = leaf.weights[position[id(var)]]
                if old_var.path in updates:
                    mask, weight = updates[old_var.path]
                    var.assign(np.asarray(weight).astype(var.dtype))
                    masks.append(mask)
                else:
                    masks.append(np.ones(tuple(var.shape), bool))
            new.assign_masks(masks)
    return (clone, sorted(unwrapped)) if with_unwrapped else clone


def path_map(model, work):
    """`{id(work variable): path of the matching variable of model}`."""
    old = model_tree.leaf_layers(model)
    new = {l.name: l for l in model_tree.leaf_layers(work)}
    out = {}
    for leaf in old:
        for a, b in zip(leaf.weights, new[leaf.name].weights):
            out[id(b)] = a.path
    paths = list(out.values())
    if len(set(paths)) != len(paths):
        raise ValueError(
            f"Model '{model.name}' has several variables with the same path; "
            f"give its layers unique names."
        )
    return out
