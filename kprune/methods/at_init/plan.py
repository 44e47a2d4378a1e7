"""At-init scoring: the validated plan (targets, weight keys, batches) and masks.

`make_plan` checks the arguments and the model and lists what is scored:
the target layers (wrappable ones, or layers deep in the tree for a
`kprune.PrunedModel`), one key `(layer label, weight path)` per scored
weight, and the data batches (`kprune.core.calibration.as_batches`).
`check_data` checks the data and the initial weights before any scoring;
`select_masks` turns keep-scores into masks through the mask engine.
"""

from __future__ import annotations

import keras
import numpy as np

from kprune.core import calibration, checks, masking, model_tree
from kprune.core import wrapping as prune_lib
from kprune.core.pruned_model import select_tree_targets
from kprune.core.wrapper import prunable_weights, weight_path


#: Scoring methods, and whether each needs data.
METHODS = {"snip": True, "grasp": True, "synflow": False, "magnitude": False, "random": False}


#: GraSP's temperature on the outputs (the reference's `T = 200`).
GRASP_TEMPERATURE = 200.0


DEFAULT_BATCH_SIZE = 100  # SNIP's MNIST batch; GraSP's 10 per class.


class Plan:
    """What to score: validated arguments, target layers and weight keys."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def make_plan(model, data, method, bn_mode, include_bias, ignore, overrides,
          batches, iterations, verbose, batch_size):
    if not isinstance(method, str) or method.lower() not in METHODS:
        raise ValueError(
            f"Unknown method {method!r}; expected one of {sorted(METHODS)}."
        )
    method = method.lower()
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"pruning at initialisation needs a Keras model (Sequential or "
            f"functional), got {type(model).__module__}.{type(model).__name__}."
        )
    checks.check_choice("bn_mode", bn_mode, ("inference", "train"))
    batches = checks.check_int("batches", batches, lo=1)
    iterations = checks.check_int("iterations", iterations, lo=1)
    batch_size = checks.check_int("batch_size", batch_size, lo=1)
    checks.check_choice("verbose", verbose, (0, 1, 2, False, True))
    include_bias = checks.check_bool("include_bias", include_bias)

    tree = model_tree.needs_pruned_model(model)
    if tree:
        # Layers inside composite layers or subclassed models: keyed by their
        # label (path of layer names), pruned in a kprune.PrunedModel.
        found = select_tree_targets(model, overrides, ignore, "sparsity_overrides")
        targets = [layer for layer, _, _ in found]
        labels = {id(layer): label for layer, label, _ in found}
        overrides = {label: v for _, label, v in found if v is not None}
    else:
        targets = prune_lib.select_layers(
            model, overrides, ignore, caller="prune_at_init", overrides_arg="sparsity_overrides"
        )
        labels = {id(layer): layer.name for layer in targets}
    target_names = list(labels.values())
    if len(set(target_names)) != len(target_names):
        raise ValueError(
            f"Prunable layer names must be unique to key the scores, got "
            f"{target_names}; rename the layers of nested models."
        )
    keys, layouts = [], {}
    for layer in targets:
        for weight, layout in prunable_weights(layer, include_bias):
            key = (labels[id(layer)], weight_path(layer.name, weight))
            keys.append(key)
            layouts[key] = layout

    batch_list = None
    if METHODS[method]:
        if data is None:
            raise ValueError(
                f"method={method!r} scores weights with gradients of the loss "
                f"and needs data: pass data=(x, y) (e.g. 100 training examples) "
                f"or an iterable of (x, y) batches. Data-free methods: "
                f"'synflow', 'magnitude', 'random'."
            )
        batch_list = calibration.as_batches(data, batch_size=batch_size, max_batches=batches,
                                            model=model, check_model_inputs=True)
    elif method == "synflow" and data is not None:
        batch_list = calibration.as_batches(data, batch_size=batch_size, max_batches=1,
                                            model=model, check_model_inputs=True)

    return Plan(model=model, method=method, bn_mode=bn_mode, targets=targets,
                 labels=labels, tree=tree, overrides=overrides,
                 target_ids={id(l) for l in targets}, keys=keys, layouts=layouts,
                 include_bias=include_bias, batches=batch_list, verbose=int(bool(verbose)))


def check_data(plan, data, loss, seed, temperature):
    """Data, labels, weights and scoring options, checked before any scoring.

    SNIP/GraSP: every batch's x and y have the same number of examples, x is
    numeric and finite, and (for the default cross-entropy loss and for the
    named Keras cross-entropies) the labels fit the model's output classes.
    Every method: the scored weights are finite.
    """
    if plan.method == "random" and seed is not None:
        checks.check_int("seed", seed, lo=0)
    if plan.method == "grasp":
        checks.check_float("temperature", temperature, lo=0, lo_inclusive=False,
                           fix="GraSP divides the outputs by it; the paper uses 200.")
    for (layer, weight), variable in original_variables(plan).items():
        checks.check_finite_array(
            f"The initial weights of layer '{layer}' ({weight})", numpy_value(variable)
        )
    if not METHODS[plan.method]:
        return
    label_form = calibration.label_form(plan.model, loss)
    outputs = symbolic_outputs(plan.model)
    classes = outputs[0].shape[-1] if len(outputs) == 1 and outputs[0].shape else None
    for i, (x, y) in enumerate(plan.batches):
        where = "" if len(plan.batches) == 1 else f" (batch {i})"
        for j, array in enumerate(keras.tree.flatten(x)):
            name = "data's x" if j == 0 and len(keras.tree.flatten(x)) == 1 else f"data's x[{j}]"
            checks.check_finite_array(name + where, array)
        if y is None:
            if loss is None:
                raise ValueError(
                    f"data's y is None{where}; {plan.method} needs labels for the "
                    f"loss: pass data=(x, y)."
                )
            continue
        nx, ny = calibration.num_examples(x), calibration.num_examples(y)
        if nx != ny:
            raise ValueError(
                f"data's x has {nx} examples but its y has {ny}{where}; give one "
                f"label per example."
            )
        if classes is None or label_form is None:
            if all(np.asarray(a).dtype.kind in "fiub" for a in keras.tree.flatten(y)):
                for a in keras.tree.flatten(y):
                    checks.check_finite_array("data's y" + where, a)
            continue
        array = np.asarray(y)
        out_rank = len(outputs[0].shape)
        one_hot = label_form == "one_hot" or (
            label_form == "auto" and array.ndim == out_rank and classes not in (None, 1)
        )
        checks.check_labels("data's y" + where, array, classes, one_hot=one_hot)


def symbolic_outputs(model):
    """The model's symbolic outputs, or [] (a subclassed model has none)."""
    try:
        return keras.tree.flatten(model.outputs) if getattr(model, "outputs", None) else []
    except (AttributeError, ValueError):
        return []


def original_variables(plan):
    out = {}
    for layer in plan.targets:
        for weight, _ in prunable_weights(layer, plan.include_bias):
            out[(plan.labels[id(layer)], weight_path(layer.name, weight))] = weight
    return out


def numpy_value(variable):
    return np.array(keras.ops.convert_to_numpy(variable))


def select_masks(keep_scores, sparsity, per_key, scope, min_keep, keys, previous=None):
    """Masks from keep-scores with `masking.compute_masks` (global or layer).

    `previous` masks (SynFlow's earlier rounds) rank below every score, so a
    weight pruned in an earlier round is never revived by the tie rule.
    """
    scores = {}
    for k in keys:
        s = np.asarray(keep_scores[k], dtype=np.float64)
        if previous is not None:
            s = np.where(previous[k], s, -np.inf)
        scores[k] = s
    if scope == "layer":
        sparsity_arg = {k: per_key.get(k, sparsity) for k in keys}
        return masking.compute_masks(scores, sparsity_arg, scope="layer")
    # Global scope: overridden tensors get their own layer-scope masks.
    out = {}
    rest = [k for k in keys if k not in per_key]
    if per_key:
        out.update(masking.compute_masks({k: scores[k] for k in per_key}, dict(per_key), scope="layer"))
    if rest:
        out.update(masking.compute_masks({k: scores[k] for k in rest}, sparsity,
                                         scope="global", min_keep=min_keep))
    return {k: out[k] for k in keys}
