"""Walking and cloning a model's layer tree: the one place kprune does it.

Every module that looks into a model (wrapping and stripping, `PrunedModel`,
at-init scoring, one-shot pruning, reports, callbacks) uses these functions,
so "a layer of the model" means the same everywhere:

* Walking: `sublayers` (direct children), `all_layers` (every nested layer),
  `leaf_layers` (the computing layers, descending into nested models),
  `walk` (the tree with labels and positions, stopping at prunable layers),
  `prunable_layer_tree`, `find_layers`, `tree_index`, `layer_owners`,
  `layers_in_subclassed`, `unprunable_layers`, `find_wrappers`.
* Model kinds: `is_graph_model` (Sequential or functional), `is_built`,
  `check_clonable`, `needs_pruned_model`.
* Cloning: `fresh_copy` (a layer from its config), `clone_layers` (the one
  cloning route for graph models: layers replaced, inputs' names kept,
  weights copied), `copy_weights`, `named_inputs`, `copy_model` (any model
  that has a config).

Keras' private traversal (`Layer._flatten_layers`, `KerasTensor._keras_history`)
is used here and nowhere else in kprune's core.

Example:
>>> for layer, label, in_graph in walk(model):
...     print(label, type(layer).__name__)
>>> copy = clone_layers(model, fresh_copy)   # an equal copy, weights included
"""

from __future__ import annotations

import keras

from kprune import backend
from kprune.core.wrapper import MaskedWeights, PruneWrapper, check_trainable, is_prunable

__all__ = [
    "all_layers",
    "check_pruned_layers",
    "check_clonable",
    "clone_layers",
    "copy_model",
    "copy_weights",
    "find_by_index",
    "find_layers",
    "find_wrappers",
    "fresh_copy",
    "is_built",
    "is_graph_model",
    "layer_owners",
    "layers_in_subclassed",
    "leaf_layer_paths",
    "leaf_layers",
    "named_inputs",
    "needs_pruned_model",
    "prunable_layer_tree",
    "rebuild_layer",
    "sublayers",
    "tree_index",
    "unprunable_layers",
    "walk",
]


def find_wrappers(model):
    """Every pruned layer's masks in `model` (`kprune.core.wrapper.MaskedWeights`).

    Its `PruneWrapper` layers, nested models included, and the mask groups of
    any `kprune.PrunedModel` (the model itself or one nested in it: a model
    whose `groups` are `MaskedWeights`).

    Args:
        model: a Keras model or layer (a `PruneWrapper` gives `[model]`).

    Returns:
        A list of `MaskedWeights`, in layer order.

    Example:
    >>> [w.name for w in find_wrappers(pruned)]
    """
    if isinstance(model, PruneWrapper):
        return [model]
    found = []
    for layer in [model, *all_layers(model)]:
        if isinstance(layer, PruneWrapper):
            found.append(layer)
        elif isinstance(layer, keras.Model) and _masked_groups(layer):
            found.extend(layer.groups)
    return found


def _masked_groups(layer):
    """True for a model that owns mask groups (a `kprune.PrunedModel`)."""
    groups = getattr(layer, "groups", None)
    return isinstance(groups, list) and bool(groups) and all(
        isinstance(g, MaskedWeights) for g in groups)


def all_layers(model):
    """Every layer nested in `model` (recursively, each once, not `model`).

    Keras' own traversal (`Layer._flatten_layers`), kept in this one place.
    """
    return list(model._flatten_layers(include_self=False))


def leaf_layers(model):
    """Layers that hold computation (no models, no wrappers' inner layers)."""
    out = []
    for layer in sublayers(model):
        if not isinstance(layer, keras.layers.Layer):
            continue  # an ops node of a functional graph (GetItem, ...)
        if isinstance(layer, keras.Model):
            out.extend(leaf_layers(layer))
        else:
            out.append(layer)
    return out


def leaf_layer_paths(model, prefix=""):
    """`{path: layer}` for the layers of `model`, nested graph models opened.

    The path is the chain of layer names (`"block/conv"`); a nested
    Sequential or functional model is replaced by its own layers (an empty one
    stays a leaf). Used to edit a graph model's config layer by layer
    (`kprune.structured.surgery`).

    Example:
    >>> sorted(leaf_layer_paths(model))
    ['dense', 'encoder/conv', 'encoder/norm']
    """
    out = {}
    for layer in model.layers:
        path = prefix + layer.name
        if is_graph_model(layer):
            sub = leaf_layer_paths(layer, path + "/")
            if sub:
                out.update(sub)
                continue
        out[path] = layer
    return out


def layers_in_subclassed(model, owner=None):
    """`(layer, subclassed_model)` for leaf layers nested in subclassed models."""
    out = []
    for layer in sublayers(model):
        if isinstance(layer, keras.Model):
            graph = is_graph_model(layer)
            out.extend(layers_in_subclassed(layer, owner if graph else (owner or layer)))
        elif owner is not None:
            out.append((layer, owner))
    return out


def unprunable_layers(model):
    """Names and types of the layers with weights that kprune leaves dense."""
    return [
        (l.name, type(l).__name__)
        for l in leaf_layers(model)
        if not isinstance(l, (PruneWrapper, keras.layers.InputLayer))
        and not is_prunable(l)
        and l.weights
    ]


def rebuild_layer(layer, config=None):
    """A new, unbuilt layer of `layer`'s class from `config` (default: its own).

    The one way kprune re-creates a layer to build a pruned copy of a model
    (the caller's model is never modified):

    * a `keras.layers.Lambda` holding a Python lambda is rebuilt without
      Keras' safe-mode check: that check guards *files*, and here the
      function is the caller's own object in memory;
    * a layer whose `get_config()` does not give back its constructor
      arguments gets kprune's message naming the layer and the fix, instead
      of Keras' deserialization error.

    Args:
        layer: a Keras layer.
        config: the config to build from (default `layer.get_config()`), for
            callers that change an argument.

    Returns:
        The new layer.

    Raises:
        TypeError: the layer cannot be rebuilt from its config.

    Example:
    >>> twin = rebuild_layer(model.get_layer("scale"))
    """
    config = layer.get_config() if config is None else config
    cls = layer.__class__
    try:
        if isinstance(layer, keras.layers.Lambda):
            return cls.from_config(config, safe_mode=False)
        return cls.from_config(config)
    except Exception as e:  # the layer's own code: any error means "cannot rebuild"
        detail = str(e).strip().splitlines()
        detail = next((d for d in reversed(detail) if d.strip()), type(e).__name__)
        raise TypeError(
            f"kprune cannot copy layer '{layer.name}' ({cls.__name__}): "
            f"{cls.__name__}.from_config(layer.get_config()) fails ({detail[:300]}). "
            f"kprune builds the pruned model from copies of your layers, so each "
            f"layer's get_config() must return every __init__ argument. Fix: add them "
            f"in {cls.__name__}.get_config(), e.g. `return {{**super().get_config(), "
            f"'units': self.units}}` (or do not override get_config: Keras then records "
            f"the arguments itself)."
        ) from e


def fresh_copy(layer):
    """A new, unbuilt layer of the same class and config (`rebuild_layer`)."""
    return rebuild_layer(layer)


def clone_layers(model, clone_layer):
    """A new model with every leaf layer replaced by `clone_layer(layer)`.

    The one cloning route of kprune (what `prune_low_magnitude`,
    `strip_pruning` and `wrap_fixed` use): nested Sequential/functional models
    are cloned too, input names are kept, and weights are copied layer by
    layer afterwards. The caller's model is not modified.

    Args:
        model: a built Sequential or functional model.
        clone_layer: `layer -> new unbuilt layer` (for example
            `layer.__class__.from_config(changed_config)`).

    Returns:
        The new model.
    """
    return _clone(model, clone_layer)


def check_clonable(model, what):
    """Checks that `model` is a layer or a built Sequential/functional model.

    Args:
        model: what the caller got.
        what: the caller's public name, for the messages.

    Raises:
        TypeError: not a Keras layer or model.
        ValueError: a subclassed model (the message lists its layers and
            how to prune them), or a model that is not built.
    """
    if isinstance(model, keras.layers.Layer) and not isinstance(model, keras.Model):
        return
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"{what} expects a Keras 3 layer or model (keras.Model, "
            f"keras.Sequential or a functional model), got "
            f"{type(model).__module__}.{type(model).__name__}."
        )
    is_graph = is_graph_model(model)
    if not is_graph:
        raise ValueError(_subclassed_message(model, what))
    if not model.built:
        raise ValueError(
            f"Model '{model.name}' is not built. Build it first, for example "
            f"with a keras.Input layer or model.build(input_shape)."
        )


def _subclassed_message(model, what):
    """Why a subclassed model cannot be rewrapped, layer by layer, and what to do."""
    lines = [
        f"{what}: model '{model.name}' is a subclassed keras.Model "
        f"({type(model).__name__}). Its call() is Python code that kprune "
        f"cannot copy and rewire, so it cannot put wrappers in (or take them "
        f"out of) a copy of it, and it never modifies your model in place."
    ]
    wrapped, rows = [], []
    for layer in sublayers(model):
        kind = type(layer).__name__
        if isinstance(layer, PruneWrapper):
            wrapped.append(layer.name)
        elif isinstance(layer, keras.Model):
            if is_graph_model(layer):
                rows.append(
                    f"  - '{layer.name}' ({kind}): a nested model; prune it in "
                    f"__init__ with kprune.prune_low_magnitude(...)"
                )
            else:
                rows.append(
                    f"  - '{layer.name}' ({kind}): a nested subclassed model; "
                    f"wrap its layers in its own __init__"
                )
        elif is_prunable(layer):
            rows.append(
                f"  - '{layer.name}' ({kind}): prunable; wrap it in __init__ "
                f"with kprune.PruneWrapper({kind}(...), schedule)"
            )
        elif layer.weights or not layer.built:
            rows.append(f"  - '{layer.name}' ({kind}): not prunable, stays dense")
    if wrapped and what == "prune_low_magnitude":
        lines.append(
            f"It already holds PruneWrapper layers {wrapped}: train it "
            f"directly with callbacks=[kprune.PruningCallback()] (or "
            f"kprune.Pruner in a custom loop); no prune_low_magnitude needed."
        )
    elif wrapped:
        lines.append(
            f"It holds PruneWrapper layers {wrapped}. Their stored pruned "
            f"weights are already exactly zero; to drop the wrappers, build the "
            f"model without them and copy the weights layer by layer."
        )
    if rows:
        lines.append("Layers found in it:")
        lines.extend(rows)
    lines.append(
        "To prune it, either create the layers wrapped in __init__, e.g. "
        "self.fc = kprune.PruneWrapper(keras.layers.Dense(10), "
        "kprune.ConstantSparsity(0.8)), and train with "
        "callbacks=[kprune.PruningCallback()]; or rebuild the model as a "
        "keras.Sequential or functional model and call "
        "kprune.prune_low_magnitude on it."
    )
    return "\n".join(lines)


def _clone(model, clone_layer, cache=None):
    """Clones `model` (recursively) with `clone_layer`, then copies weights.

    Nested Sequential/functional models are cloned by this function too, so
    their inputs keep their names (`keras.models.clone_model(recursive=True)`
    would rename them); `cache` keeps layers shared between them shared.
    """
    pairs = []
    cache = {} if cache is None else cache

    def clone_function(layer):
        if id(layer) in cache:
            return cache[id(layer)]
        if not isinstance(layer, keras.layers.Layer):
            return layer  # an ops node (GetItem, ...): stateless, reused as is
        if isinstance(layer, keras.Model) and is_graph_model(layer):
            new = _clone(layer, clone_layer, cache)
        else:
            new = clone_layer(layer)
            pairs.append((layer, new))
        cache[id(layer)] = new
        return new

    clone = keras.models.clone_model(
        model,
        input_tensors=named_inputs(model),
        clone_function=clone_function,
    )
    for old, new in pairs:
        copy_weights(old, new)
    return clone


def named_inputs(model):
    """Fresh Inputs that keep the original input layers' names and specs.

    `keras.models.clone_model` names new inputs after the KerasTensors, which
    would change `get_config()`; the InputLayer is found through
    `KerasTensor._keras_history` (private, pinned by tests/test_prune.py).
    """
    if isinstance(model, keras.Sequential) or not hasattr(model, "_inputs_struct"):
        return None

    def fresh(tensor):
        layer = tensor._keras_history[0]
        return keras.Input(
            batch_shape=layer.batch_shape, dtype=layer.dtype,
            sparse=layer.sparse, name=layer.name,
        )

    return keras.tree.map_structure(fresh, model._inputs_struct)


def copy_weights(old, new):
    """Copies `old`'s weights into `new` (layers or `PruneWrapper`s).

    Wrapper to plain layer (stripping) bakes the masks in; wrapper to wrapper
    also copies the masks and the pruning step.
    """
    old_inner = old.layer if isinstance(old, PruneWrapper) else old
    new_inner = new.layer if isinstance(new, PruneWrapper) else new
    if not old_inner.weights:
        return
    values = [keras.ops.convert_to_numpy(v) for v in old_inner.weights]
    if isinstance(old, PruneWrapper) and not isinstance(new, PruneWrapper):
        # Stripping: bake the masks in.
        masked = {id(w): m for w, m in zip(old.prunable_weights, old.masks)}
        values = [
            val * keras.ops.convert_to_numpy(masked[id(w)]).astype(val.dtype)
            if id(w) in masked else val
            for w, val in zip(old_inner.weights, values)
        ]
    for var, val in zip(new_inner.weights, values):
        var.assign(val)
    if isinstance(old, PruneWrapper) and isinstance(new, PruneWrapper):
        for a, b in zip(old.masks, new.masks):
            b.assign(keras.ops.convert_to_numpy(a))
        new.pruning_step.assign(keras.ops.convert_to_numpy(old.pruning_step))


def layer_owners(model, path=None):
    """For error messages: `{leaf layer name: [the (nested) model each copy sits in]}`."""
    out = {}
    path = path or model.name
    for layer in sublayers(model):
        if isinstance(layer, keras.Model):
            for name, where in layer_owners(layer, f"{path}/{layer.name}").items():
                out.setdefault(name, []).extend(where)
        else:
            out.setdefault(layer.name, []).append(path)
    return out


def needs_pruned_model(model):
    """Whether `model` has prunable layers that no `PruneWrapper` can reach
    (inside composite layers or subclassed models): then it is pruned as a
    `kprune.PrunedModel`."""
    if not isinstance(model, keras.Model) or not (model.built or model.weights):
        return False
    if any(isinstance(l, PruneWrapper) for l in all_layers(model)):
        return False  # already pruned: select_layers says so
    return any(not top for _, _, top in prunable_layer_tree(model))


def sublayers(layer):
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
    for layer, label, graph in walk(model):
        if is_prunable(layer):
            out.append((layer, label, graph))
    return out


def walk(model, with_index=False):
    """`(layer, label, in_graph)` for the layer tree, not descending into
    prunable layers or `PruneWrapper`s; each layer once. With `with_index`,
    also the layer's position in the tree (`"0.2.1"`): the same for a copy or
    a loaded model, whose layers Keras may have named anew (`dense_3` for
    `dense`), so it is what a `PrunedModel` finds its layers by."""
    seen = set()

    def visit(layer, prefix, index, graph):
        for position, sub in enumerate(sublayers(layer)):
            if id(sub) in seen or isinstance(sub, PruneWrapper):
                continue
            seen.add(id(sub))
            label = f"{prefix}{sub.name}"
            where = f"{index}{position}"
            yield (sub, label, graph, where) if with_index else (sub, label, graph)
            if not is_prunable(sub):
                nested_graph = graph and isinstance(sub, keras.Model) and is_graph_model(sub)
                yield from visit(sub, f"{label}/", f"{where}.", nested_graph)

    yield from visit(model, "", "", is_graph_model(model))


def _find_by_label(model, labels):
    """`{label: layer}` for the given labels (see `prunable_layer_tree`)."""
    wanted = set(labels)
    return {label: layer for layer, label, _ in walk(model) if label in wanted}


def tree_index(model, label):
    """The tree position (see `walk`) of the layer labelled `label`."""
    for _, found, _, where in walk(model, with_index=True):
        if found == label:
            return where
    return None


def find_by_index(model, indices):
    wanted = set(indices)
    return {where: layer for layer, _, _, where in walk(model, with_index=True) if where in wanted}


def is_built(model):
    """Built, or holding its weights (Keras leaves `built` False on some
    subclassed models built by `build_from_config`)."""
    return bool(model.built or model.weights)


def is_graph_model(model):
    """True for a Sequential or functional model (a graph Keras can clone).

    Subclassed models have no graph: their `call()` is Python code.
    """
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
            type(model).__name__ == "Functional" and is_graph_model(model)):
        # A plain graph: cloned layer by layer (each layer's own class, no
        # registration needed), weights copied.
        return clone_layers(model, fresh_copy)
    try:
        new = model.__class__.from_config(model.get_config())
        if not is_built(new):
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


def find_layers(model, labels, like=None):
    """`{label: layer}` in `model` for labels from `prunable_layer_tree`.

    With `like` (the model `model` was copied from, whose layers the labels
    name), layers are matched by their position in the tree, so a copy whose
    layers Keras named anew is found all the same.

    Example:
    >>> find_layers(copy, ["block/attention"], like=model)
    """
    if like is None:
        return _find_by_label(model, labels)
    where = {label: tree_index(like, label) for label in labels}
    by_index = find_by_index(model, [w for w in where.values() if w is not None])
    return {label: by_index[w] for label, w in where.items() if w in by_index}


def check_pruned_layers(model):
    """The missing-callback check of every pruned layer in `model`.

    Raises the wrapper's error (`kprune.core.wrapper.check_trainable`) when a
    pruned layer would train without `kprune.PruningCallback`. The JAX train
    step runs it (see `kprune.backend.add_train_step_check`).
    """
    for masked in find_wrappers(model):
        check_trainable(masked)


backend.add_train_step_check(check_pruned_layers)
