"""`prune_low_magnitude` and `strip_pruning`: put wrappers in, take them out.

Both return a **new** model built with `keras.models.clone_model`; the
caller's model is never modified, and weights are carried over layer by layer.
"""

from __future__ import annotations

import warnings

import keras

from kprune.core import checks, masking
from kprune.core import schedules as schedules_lib
from kprune.core.wrapper import PruneWrapper, is_prunable

__all__ = [
    "prune_low_magnitude", "strip_pruning", "find_wrappers", "unprunable_layers",
    "wrap_fixed", "clone_layers", "rebuild_layer",
]


def find_wrappers(model):
    """Every pruned layer's masks in `model` (`kprune.core.wrapper.MaskedWeights`):
    its `PruneWrapper` layers, nested models included, and the groups of any
    `kprune.PrunedModel` (the model itself or one nested in it)."""
    from kprune.core.pruned_model import PrunedModel  # noqa: PLC0415

    if isinstance(model, PruneWrapper):
        return [model]
    found = []
    layers = [model] + list(model._flatten_layers(include_self=False))
    for layer in layers:
        if isinstance(layer, PruneWrapper):
            found.append(layer)
        elif isinstance(layer, PrunedModel):
            found.extend(layer.groups)
    return found


def _leaf_layers(model):
    """Layers that hold computation (no models, no wrappers' inner layers)."""
    out = []
    for layer in model._flatten_layers(include_self=False, recursive=False):
        if not isinstance(layer, keras.layers.Layer):
            continue  # an ops node of a functional graph (GetItem, ...)
        if isinstance(layer, keras.Model):
            out.extend(_leaf_layers(layer))
        else:
            out.append(layer)
    return out


def _layers_in_subclassed(model, owner=None):
    """`(layer, subclassed_model)` for leaf layers nested in subclassed models."""
    out = []
    for layer in model._flatten_layers(include_self=False, recursive=False):
        if isinstance(layer, keras.Model):
            graph = isinstance(layer, keras.Sequential) or _is_functional(layer)
            out.extend(_layers_in_subclassed(layer, owner if graph else (owner or layer)))
        elif owner is not None:
            out.append((layer, owner))
    return out


def unprunable_layers(model):
    """Names and types of the layers with weights that kprune leaves dense."""
    return [
        (l.name, type(l).__name__)
        for l in _leaf_layers(model)
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


def _fresh_copy(layer):
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


def wrap_fixed(model, layers, scope="layer", prune_bias=False, layer_scopes=None):
    """A copy of `model` whose `layers` are fixed-mask `PruneWrapper`s.

    Fixed masks (`pruning_schedule=None`) never change during training and
    need no callback; set them with `wrapper.assign_masks`. Used by
    `prune_at_init` and the lottery-ticket loop (`kprune.methods.lottery`).

    Args:
        model: a built Sequential or functional model (not modified).
        layers: the layers of `model` to wrap (e.g. from `select_layers`).
        scope: the wrappers' scope, `"layer"` or `"global"`.
        prune_bias: also mask the wrapped layers' biases.
        layer_scopes: optional `{layer name: scope}` overriding `scope`.

    Returns:
        The new model, with the original weights and all-ones masks.
    """
    target_ids = {id(l) for l in layers}
    layer_scopes = layer_scopes or {}

    def clone_layer(layer):
        new = _fresh_copy(layer)
        if id(layer) not in target_ids:
            return new
        return PruneWrapper(new, pruning_schedule=None,
                            scope=layer_scopes.get(layer.name, scope), prune_bias=prune_bias)

    return _clone(model, clone_layer)


def _check_model(model, what):
    if isinstance(model, keras.layers.Layer) and not isinstance(model, keras.Model):
        return
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"{what} expects a Keras 3 layer or model (keras.Model, "
            f"keras.Sequential or a functional model), got "
            f"{type(model).__module__}.{type(model).__name__}."
        )
    is_graph = isinstance(model, keras.Sequential) or _is_functional(model)
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
    for layer in model._flatten_layers(include_self=False, recursive=False):
        kind = type(layer).__name__
        if isinstance(layer, PruneWrapper):
            wrapped.append(layer.name)
        elif isinstance(layer, keras.Model):
            if isinstance(layer, keras.Sequential) or _is_functional(layer):
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


def _is_functional(model):
    # Functional models (keras.Model(inputs, outputs)) are graphs of
    # operations that clone_model re-runs with `_run_through_graph`;
    # subclassed models have no such graph.
    return callable(getattr(model, "_run_through_graph", None))


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
        if isinstance(layer, keras.Sequential) or (
            isinstance(layer, keras.Model) and _is_functional(layer)
        ):
            new = _clone(layer, clone_layer, cache)
        else:
            new = clone_layer(layer)
            pairs.append((layer, new))
        cache[id(layer)] = new
        return new

    clone = keras.models.clone_model(
        model,
        input_tensors=_named_inputs(model),
        clone_function=clone_function,
    )
    for old, new in pairs:
        _copy_weights(old, new)
    return clone


def _named_inputs(model):
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


def _copy_weights(old, new):
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


_DEFAULT_SCHEDULE = schedules_lib.ConstantSparsity(0.5, begin_step=0, frequency=100)


def prune_low_magnitude(
    to_prune,
    pruning_schedule=None,
    granularity=None,
    scope="layer",
    sparsity=None,
    ignore=None,
    verbose=0,
    in_place=False,
    pruning_policy=None,
    existing_wrappers="raise",
    **wrapper_kwargs,
):
    """Wraps every prunable layer of a model for magnitude pruning during fit.

    Args:
        to_prune: a Keras layer, a list of Keras layers (each is wrapped; an
            `InputLayer` is copied as is), or any built Keras model:
            Sequential, functional (nested models are handled), subclassed,
            KerasHub. The caller's object is not modified. A single layer can
            also be wrapped inside
            `keras.models.clone_model(model, clone_function=...)`.
        pruning_schedule: a `kprune.ConstantSparsity` / `kprune.PolynomialDecay`
            (default `ConstantSparsity(0.5, begin_step=0, frequency=100)`).
        granularity: `"unstructured"` (default), `kprune.Block((r, c))`,
            `kprune.NM(n, m)` or `kprune.Channel(norm)`; the strings
            `"block"`, `"nm"` and `"channel"` mean `Block((4, 1))`,
            `NM(2, 4)` and `Channel("l2")` (docs/granularity.md).
        scope: `"layer"` (a threshold per weight tensor, like tfmot) or
            `"global"` (one threshold over all wrapped weights; see
            `kprune.PruningCallback` for LAMP normalisation).
        sparsity: optional per-layer overrides, `{layer_name: float or None}`.
            A float gives that layer its own `ConstantSparsity` with the
            schedule's steps (and layer scope); `None` leaves it dense.
        ignore: layer names (or paths) or layer classes to leave unwrapped.
        verbose: 1 prints which layers were wrapped and which were left dense.
        in_place: only for models that kprune cannot copy (a subclassed model
            without `get_config`): prune the given model object itself (its
            variables get kprune's mask constraints). Default False: the
            caller's model is never modified.
        pruning_policy: a `kprune.PruningPolicy`, e.g.
            `kprune.PruneForLatencyOnXNNPack()`, for a model: it first checks
            the whole model (raising `ValueError` naming the first layer that
            does not fit) and then chooses which layers are wrapped.
        existing_wrappers: for a model that already holds `PruneWrapper`
            layers: `"raise"` (default) refuses it; `"keep"` copies them as
            they are (schedule, masks and step) and wraps the other
            prunable layers (tfmot's behaviour, used by `kprune.tfmot`); a
            model with nothing left to wrap is then returned as a copy, with
            a warning, instead of raising.
        **wrapper_kwargs: for a single layer only: `PruneWrapper` layer
            arguments (`name=`, `input_shape=`).

    Returns:
        A new layer (a list of layers, for a list) or model. For a functional or Sequential model whose
        prunable layers are nodes of the graph: the same graph with
        `PruneWrapper`s around them. For any other model (layers inside
        composite layers such as KerasHub's `TransformerDecoder`, subclassed
        models): a `kprune.PrunedModel` holding a copy of the model, whose
        layers are pruned where they are. Either way the original weights
        are carried over, and sparsity/ignore keys may be layer names or paths
        (`"transformer_layer_0/self_attention"`).

    Raises:
        TypeError: `to_prune` is not a Keras layer or model, or an argument
            has the wrong type.
        ValueError: the model is unbuilt, subclassed, already pruned, has
            nothing to prune, or an override names an unknown layer.

    Example:
    ```python
    pruned = kprune.prune_low_magnitude(
        model, kprune.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=1000))
    pruned.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    pruned.fit(x, y, epochs=2, callbacks=[kprune.PruningCallback()])
    model = kprune.strip_pruning(pruned)
    ```
    """
    if pruning_schedule is None:
        pruning_schedule = _DEFAULT_SCHEDULE
    if not isinstance(pruning_schedule, schedules_lib.PruningSchedule):
        raise TypeError(
            "pruning_schedule must be a kprune schedule such as "
            f"kprune.ConstantSparsity(0.8), got {pruning_schedule!r}."
        )
    granularity = masking.get_granularity(granularity)
    checks.check_choice("scope", scope, ("layer", "global"))
    if scope == "global" and not granularity.supports_global:
        raise ValueError(f"{granularity!r} is a per-group pattern; use scope='layer'.")
    if isinstance(granularity, masking.NM):
        z = granularity.zeros_per_group(pruning_schedule.final_sparsity)
        if z != granularity.n or pruning_schedule.final_sparsity > granularity.n / granularity.m + 1e-9:
            warnings.warn(
                f"{granularity!r} with a schedule ending at sparsity "
                f"{pruning_schedule.final_sparsity} ends with {z} zero(s) per "
                f"group of {granularity.m} (sparsity {z / granularity.m:g}), not "
                f"the {granularity.n}:{granularity.m} pattern; end the schedule "
                f"at {granularity.n / granularity.m:g}.",
                stacklevel=2,
            )
    overrides = checks.check_name_map(
        "sparsity", sparsity,
        lambda name, v: None if v is None else checks.check_sparsity(name, v),
    )
    checks.check_choice("verbose", verbose, (0, 1, 2, False, True))
    checks.check_choice("existing_wrappers", existing_wrappers, ("raise", "keep"))

    is_model = isinstance(to_prune, keras.Model)
    if wrapper_kwargs and (is_model or isinstance(to_prune, list)):
        raise TypeError(
            f"prune_low_magnitude got unexpected keyword argument(s) "
            f"{sorted(wrapper_kwargs)}: layer arguments such as name= or "
            f"input_shape= apply to a single layer only, not to a "
            f"{'model' if is_model else 'list'}."
        )
    if pruning_policy is not None and not is_model:
        raise ValueError(
            f"pruning_policy={pruning_policy!r} checks a whole model's graph; "
            f"pass the Sequential or functional model, not a "
            f"{'list' if isinstance(to_prune, list) else 'single layer'}."
        )
    if isinstance(to_prune, list):
        return _prune_list(to_prune, pruning_schedule, granularity, scope)

    if isinstance(to_prune, keras.layers.Layer) and not isinstance(to_prune, keras.Model):
        if overrides or ignore:
            raise ValueError(
                f"sparsity= and ignore= name layers of a model, but to_prune is the "
                f"single layer '{to_prune.name}'; pass its schedule as "
                f"pruning_schedule (e.g. kprune.ConstantSparsity(0.8)) instead."
            )
        if isinstance(to_prune, PruneWrapper):
            raise ValueError(f"Layer '{to_prune.name}' is already pruned (a PruneWrapper).")
        wrapper_kwargs.setdefault("input_shape", getattr(to_prune, "_input_shape_arg", None))
        wrapper = PruneWrapper(
            _fresh_copy(to_prune), pruning_schedule, granularity, scope, **wrapper_kwargs
        )
        if to_prune.built:
            wrapper.build_from_config(to_prune.get_build_config())
            _copy_weights(to_prune, wrapper)
        return wrapper

    if pruning_policy is None and _needs_pruned_model(to_prune):
        from kprune.core.pruned_model import prune_layer_tree  # noqa: PLC0415

        return prune_layer_tree(to_prune, pruning_schedule, granularity, scope,
                                overrides, ignore, in_place, verbose)
    targets = select_layers(to_prune, overrides, ignore, "prune_low_magnitude",
                            existing_wrappers=existing_wrappers)
    if pruning_policy is not None:
        targets = _apply_policy(pruning_policy, to_prune, targets,
                                allow_none=existing_wrappers == "keep")
    if not targets:
        warnings.warn(
            f"prune_low_magnitude: model '{to_prune.name}' has no layer left "
            f"to wrap"
            + (f" that {type(pruning_policy).__name__} allows" if pruning_policy else "")
            + "; returned an unchanged copy.",
            stacklevel=2,
        )
    target_ids = {id(l) for l in targets}
    # Validate every granularity against every weight before cloning anything.
    for layer in targets:
        for weight, layout in _weights_of(layer):
            try:
                granularity.validate(
                    tuple(weight.shape), layout,
                    name=f"layer '{layer.name}' weight '{weight.name}'",
                )
            except ValueError as e:
                raise ValueError(
                    f"{e} Leave this layer dense with ignore=[{layer.name!r}] "
                    f"or sparsity={{{layer.name!r}: None}}."
                ) from None

    def clone_layer(layer):
        new = _fresh_copy(layer)
        if id(layer) not in target_ids:
            return new
        schedule, layer_scope = pruning_schedule, scope
        if layer.name in overrides:
            cfg = pruning_schedule.get_config()
            schedule = schedules_lib.ConstantSparsity(
                overrides[layer.name],
                begin_step=cfg["begin_step"],
                end_step=cfg["end_step"],
                frequency=cfg["frequency"],
            )
            layer_scope = "layer"
        return PruneWrapper(new, schedule, granularity, layer_scope)

    pruned = _clone(to_prune, clone_layer)
    if verbose:
        print(summary(pruned))
    return pruned


def _prune_list(layers, pruning_schedule, granularity, scope):
    """`prune_low_magnitude` on a list: each layer wrapped (InputLayers copied).

    Every item is checked before any is wrapped, so a bad item leaves nothing
    half-done.
    """
    for i, layer in enumerate(layers):
        if isinstance(layer, keras.Model) or not isinstance(layer, keras.layers.Layer):
            raise TypeError(
                f"prune_low_magnitude: item {i} of the list is "
                f"{type(layer).__name__}; a list holds Keras layers only "
                f"(prune a model by passing it on its own)."
            )
        if isinstance(layer, PruneWrapper):
            raise ValueError(
                f"prune_low_magnitude: item {i} of the list, layer "
                f"'{layer.name}', is already pruned (a PruneWrapper); leave it "
                f"out of the list."
            )
        if not isinstance(layer, keras.layers.InputLayer) and not is_prunable(layer):
            from kprune.core.wrapper import prunable_weights

            prunable_weights(layer)  # raises the descriptive error
    return [
        _fresh_copy(layer) if isinstance(layer, keras.layers.InputLayer)
        else prune_low_magnitude(layer, pruning_schedule, granularity, scope)
        for layer in layers
    ]


def _apply_policy(policy, model, targets, allow_none=False):
    """The targets a `PruningPolicy` allows, after it has checked the model."""
    from kprune.deploy.policy import PruningPolicy

    if not isinstance(policy, PruningPolicy):
        raise TypeError(
            f"pruning_policy must be a kprune.PruningPolicy such as "
            f"kprune.PruneForLatencyOnXNNPack(), got {policy!r}."
        )
    policy.ensure_model_supports_pruning(model)
    allowed = [l for l in targets if policy.allow_pruning(l)]
    if not allowed and not allow_none:
        raise ValueError(
            f"{type(policy).__name__} allows none of the prunable layers of "
            f"model '{model.name}' ({[l.name for l in targets]}); there is "
            f"nothing to prune."
        )
    return allowed


def _needs_pruned_model(model):
    """Whether `model` has prunable layers that no `PruneWrapper` can reach
    (inside composite layers or subclassed models): then it is pruned as a
    `kprune.PrunedModel`."""
    from kprune.core.pruned_model import prunable_layer_tree  # noqa: PLC0415

    if not isinstance(model, keras.Model) or not (model.built or model.weights):
        return False
    if any(isinstance(l, PruneWrapper) for l in model._flatten_layers(include_self=False)):
        return False  # already pruned: select_layers says so
    return any(not top for _, _, top in prunable_layer_tree(model))


def select_layers(model, overrides=None, ignore=None, caller="prune_low_magnitude",
                  overrides_arg="sparsity", existing_wrappers="raise"):
    """The layers of `model` to wrap: every prunable leaf layer, minus `ignore`
    and the layers whose override is None.

    Shared by `prune_low_magnitude` and `prune_at_init`, so both validate the
    model and the layer names the same way.

    Args:
        model: a built Sequential or functional model.
        overrides: dict `layer name -> sparsity or None`.
        ignore: layer names or layer classes.
        caller: the public function's name, for error messages.
        overrides_arg: the name of the overrides argument, for error messages.
        existing_wrappers: `"raise"`: a model holding `PruneWrapper` layers
            raises; `"keep"`: they are left out of the targets, and an empty
            list is returned rather than raising when nothing is left.

    Returns:
        The list of layers to wrap, in model order.

    Raises:
        TypeError / ValueError: not a usable model, already pruned, unknown
            layer names, or nothing left to prune.
    """
    _check_model(model, caller)
    overrides = overrides or {}
    ignore = _normalize_ignore(ignore)
    leaves = _leaf_layers(model)
    if existing_wrappers == "raise" and any(isinstance(l, PruneWrapper) for l in leaves):
        raise ValueError(
            f"Model '{model.name}' is already pruned (it contains PruneWrapper "
            f"layers). Call kprune.strip_pruning(model) first to re-prune it."
        )
    names = [l.name for l in leaves]
    owners = _owners(model)
    checks.check_layer_names(overrides_arg, list(overrides), names, owners)
    checks.check_layer_names("ignore", sorted(ignore["names"]), names, owners)

    def wanted(layer):
        if not is_prunable(layer) or layer.name in ignore["names"]:
            return False
        if ignore["types"] and isinstance(layer, ignore["types"]):
            return False
        return not (layer.name in overrides and overrides[layer.name] is None)

    # Layers inside a nested subclassed model are not reachable by cloning:
    # its call() is Python code. Say so instead of leaving them dense quietly.
    hidden = _layers_in_subclassed(model)
    hidden_ids = {id(l) for l, _ in hidden}
    skipped = [(l, owner) for l, owner in hidden if wanted(l)]
    if skipped:
        warnings.warn(
            "kprune: these prunable layers stay dense because they sit inside "
            "a subclassed model, whose call() kprune cannot rewrap: "
            + ", ".join(f"'{l.name}' ({type(l).__name__}) in '{o.name}'" for l, o in skipped)
            + ". Wrap them in that model's __init__ with kprune.PruneWrapper, "
            "or rebuild it as a functional or Sequential model.",
            stacklevel=3,
        )
    targets = [l for l in leaves if wanted(l) and id(l) not in hidden_ids]
    if targets or existing_wrappers == "keep":
        return targets
    excluded = [l.name for l in leaves if is_prunable(l)]
    if excluded:
        raise ValueError(
            f"Every prunable layer of model '{model.name}' is excluded by "
            f"ignore= or {overrides_arg}={{name: None}}: {excluded}; there is "
            f"nothing to prune. Remove some of them from ignore=/{overrides_arg}=."
        )
    raise ValueError(
        f"Model '{model.name}' has no layer kprune can prune (Dense, Conv*, "
        f"SeparableConv*, DepthwiseConv*, Embedding, EinsumDense, "
        f"MultiHeadAttention, SimpleRNN/LSTM/GRU, Bidirectional, "
        f"TimeDistributed, or layers with get_prunable_weights()): nothing to "
        f"prune. Layers: "
        f"{[(l.name, type(l).__name__) for l in leaves]}."
    )


def _weights_of(layer):
    from kprune.core.wrapper import prunable_weights

    return prunable_weights(layer)


def _owners(model, path=None):
    """`{leaf layer name: [the (nested) model each copy sits in]}`."""
    out = {}
    path = path or model.name
    for layer in model._flatten_layers(include_self=False, recursive=False):
        if isinstance(layer, keras.Model):
            for name, where in _owners(layer, f"{path}/{layer.name}").items():
                out.setdefault(name, []).extend(where)
        else:
            out.setdefault(layer.name, []).append(path)
    return out


def _normalize_ignore(ignore):
    names, types = set(), []
    if isinstance(ignore, str) or isinstance(ignore, type):
        ignore = [ignore]  # one name or class, not its characters
    elif ignore is not None and not isinstance(ignore, (list, tuple, set, frozenset)):
        raise TypeError(
            f"ignore must be a list of layer names (str) or Keras layer classes, "
            f"got {checks.describe(ignore)}."
        )
    for item in ignore or ():
        if isinstance(item, str):
            names.add(item)
        elif isinstance(item, type) and issubclass(item, keras.layers.Layer):
            types.append(item)
        else:
            raise TypeError(
                f"ignore takes layer names (str) or Keras layer classes, got {item!r}."
            )
    return {"names": names, "types": tuple(types)}


def summary(model):
    """A short text listing wrapped and unwrapped layers of a pruned model."""
    wrapped = [w.layer.name for w in find_wrappers(model)]
    skipped = unprunable_layers(model)
    lines = [f"kprune: wrapped {len(wrapped)} layer(s): {', '.join(wrapped) or '-'}"]
    if skipped:
        lines.append(
            "kprune: left dense (not prunable): "
            + ", ".join(f"{n} ({t})" for n, t in skipped)
        )
    return "\n".join(lines)


def strip_pruning(model):
    """Returns a plain Keras model with the masks baked into the weights.

    Args:
        model: a model (or a single `PruneWrapper`) from
            `prune_low_magnitude` or `prune_at_init`, or an unpruned model.

    Returns:
        A new model with no wrappers, whose `get_config()` equals the unpruned
        model's and whose pruned weights are exactly zero. An unpruned model
        gives an equal copy. The input model is not modified.

    Example:
    >>> plain = kprune.strip_pruning(pruned)
    >>> plain.save("model.keras")
    """
    from kprune.core.pruned_model import PrunedModel, copy_model  # noqa: PLC0415

    if isinstance(model, PruneWrapper):
        layer = _fresh_copy(model.layer)
        if model.built:
            layer.build_from_config(model.layer.get_build_config())
            _copy_weights(model, layer)
        return layer
    if isinstance(model, PrunedModel):
        # The stored pruned weights already are exactly zero: a plain copy of
        # the inner model is the stripped model.
        return copy_model(model.model)
    _check_model(model, "strip_pruning")
    if isinstance(model, keras.layers.Layer) and not isinstance(model, keras.Model):
        return _fresh_copy(model)

    def clone_layer(layer):
        if isinstance(layer, PruneWrapper):
            return _fresh_copy(layer.layer)
        return _fresh_copy(layer)

    return _clone(model, clone_layer)
