"""`prune_low_magnitude` and `strip_pruning`: put wrappers in, take them out.

Both return a **new** model built with `keras.models.clone_model`; the
caller's model is never modified, and weights are carried over layer by layer.
"""

from __future__ import annotations

import warnings

import keras

from kprune.core import checks, masking
from kprune.core import schedules as schedules_lib
from kprune.core.model_tree import (
    check_clonable,
    clone_layers,
    copy_model,
    copy_weights,
    find_wrappers,
    fresh_copy,
    layer_owners,
    layers_in_subclassed,
    leaf_layers,
    needs_pruned_model,
    unprunable_layers,
)
from kprune.core.pruned_model import PrunedModel, prune_layer_tree
from kprune.core.wrapper import PruneWrapper, is_prunable, prunable_weights

__all__ = ["prune_low_magnitude", "strip_pruning", "select_layers", "summary", "wrap_fixed"]

# `find_wrappers`, `unprunable_layers` and `clone_layers` live in
# `kprune.core.model_tree`; imported above, they stay reachable here.


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
        new = fresh_copy(layer)
        if id(layer) not in target_ids:
            return new
        return PruneWrapper(new, pruning_schedule=None,
                            scope=layer_scopes.get(layer.name, scope), prune_bias=prune_bias)

    return clone_layers(model, clone_layer)


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
            fresh_copy(to_prune), pruning_schedule, granularity, scope, **wrapper_kwargs
        )
        if to_prune.built:
            wrapper.build_from_config(to_prune.get_build_config())
            copy_weights(to_prune, wrapper)
        return wrapper

    if pruning_policy is None and needs_pruned_model(to_prune):

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
        for weight, layout in prunable_weights(layer):
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
        new = fresh_copy(layer)
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

    pruned = clone_layers(to_prune, clone_layer)
    if verbose:
        print(summary(pruned))
    return pruned


def _prune_list(layers, pruning_schedule, granularity, scope):
    """`prune_low_magnitude` on a list: each layer wrapped (InputLayers copied).

    Every item is checked before any is wrapped, so a bad item leaves nothing
    half-done.
    """
    checks.check_layer_list(layers, "prune_low_magnitude")
    for i, layer in enumerate(layers):
        if isinstance(layer, PruneWrapper):
            raise ValueError(
                f"prune_low_magnitude: item {i} of the list, layer "
                f"'{layer.name}', is already pruned (a PruneWrapper); leave it "
                f"out of the list."
            )
        if not isinstance(layer, keras.layers.InputLayer) and not is_prunable(layer):
            prunable_weights(layer)  # raises the descriptive error
    return [
        fresh_copy(layer) if isinstance(layer, keras.layers.InputLayer)
        else prune_low_magnitude(layer, pruning_schedule, granularity, scope)
        for layer in layers
    ]


def _apply_policy(policy, model, targets, allow_none=False):
    """The targets a `PruningPolicy` allows, after it has checked the model."""
    # Duck-typed (kprune.PruningPolicy lives in kprune.deploy, above the core).
    if not all(callable(getattr(policy, m, None))
               for m in ("allow_pruning", "ensure_model_supports_pruning")):
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
    check_clonable(model, caller)
    overrides = overrides or {}
    ignore = checks.normalize_ignore(ignore)
    leaves = leaf_layers(model)
    if existing_wrappers == "raise" and any(isinstance(l, PruneWrapper) for l in leaves):
        raise ValueError(
            f"Model '{model.name}' is already pruned (it contains PruneWrapper "
            f"layers). Call kprune.strip_pruning(model) first to re-prune it."
        )
    names = [l.name for l in leaves]
    owners = layer_owners(model)
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
    hidden = layers_in_subclassed(model)
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

    if isinstance(model, PruneWrapper):
        layer = fresh_copy(model.layer)
        if model.built:
            layer.build_from_config(model.layer.get_build_config())
            copy_weights(model, layer)
        return layer
    if isinstance(model, PrunedModel):
        # The stored pruned weights already are exactly zero: a plain copy of
        # the inner model is the stripped model.
        return copy_model(model.model)
    check_clonable(model, "strip_pruning")
    if isinstance(model, keras.layers.Layer) and not isinstance(model, keras.Model):
        return fresh_copy(model)

    def clone_layer(layer):
        if isinstance(layer, PruneWrapper):
            return fresh_copy(layer.layer)
        return fresh_copy(layer)

    return clone_layers(model, clone_layer)
