"""Pruning at initialisation: SNIP, GraSP, SynFlow, magnitude and random.

Score every prunable weight of a freshly initialised model, fix the mask, then
train the sparse network. Scores always mean "higher = keep" when they reach
the mask engine (`kprune.core.masking.compute_masks`), which is the only place
where scores become masks (global or per-layer scope).

Definitions (and the choices made where the reference code leaves room):

* **SNIP** (Lee et al., ICLR 2019; `namhoonlee/snip-public`):
  `score = |g * theta|` with `g = dL/dtheta`. Over several batches, `g` is the
  mean of the per-batch gradients (the paper uses a single batch of 100
  MNIST examples). Keep the highest scores.
* **GraSP** (Wang et al., ICLR 2020; `alecwangcq/GraSP`): model outputs are
  divided by a temperature `T = 200` before the loss. First pass:
  `g = dL/dtheta` (summed over batches). Second pass: the Hessian-vector
  product `Hg = d<stop_gradient(g), dL/dtheta>/dtheta` by double
  backpropagation (summed over batches). The **paper's score** is
  `S = -theta * Hg` and GraSP **removes the weights with the highest S**.
  `init_scores` returns `S` exactly as in the paper; the keep-score handed to
  the mask engine is its negation, `theta * Hg`. (Some re-implementations
  flip this sign or take `|S|`; `tests/test_at_init.py` pins the paper's
  sign on a 2-weight model where the choices disagree.) If the model ends in
  a softmax, the temperature is applied to `log(p)`, which equals the logits
  up to a per-example constant, so `softmax(log(p) / T) = softmax(z / T)`.
* **SynFlow** (Tanaka et al., NeurIPS 2020): data-free. On a float64 copy of
  the model, every floating weight is replaced by its absolute value (as the
  reference's `linearize` does), softmax activations are replaced by linear
  ones (a softmax output would make `R` constant), batch normalisation runs in
  inference mode and the input is all ones. `R = sum(outputs)` and
  `score = |theta * dR/dtheta|`. Pruning is iterative: round `k` of `n`
  prunes to density `rho^(k/n)` (`rho = 1 - sparsity`) through the mask
  engine. float64 keeps `R` finite in deep nets where float32 overflows; if
  even float64 overflows, a ValueError says so. The caller's signed weights
  are never replaced: all of this happens on the copy.
* **magnitude**: `|theta|` at initialisation. **random**: i.i.d. uniform
  scores drawn with `seed`.

By default the kernels of Dense, Conv*, DepthwiseConv* and SeparableConv*
(pointwise) layers are scored (what `kprune.PruneWrapper` prunes); biases
only with `include_bias=True`; batch normalisation never.

The caller's model is never modified: scoring runs on a clone, and
`prune_at_init` returns a new model whose prunable layers are
`PruneWrapper(layer, pruning_schedule=None)`, i.e. with **fixed masks**: no
callback is needed, and the wrapper's `MaskConstraint` keeps pruned weights at
exactly zero after every optimizer update.

Gradients and Hessian-vector products come from the backend seam
(`kprune.backend.grad_fn` / `hvp_fn`: `tf.GradientTape`, `jax.grad` or
`torch.autograd`), so the same code scores on every Keras backend; SynFlow's
float64 copy runs in `kprune.backend.float64_scope()` (JAX's x64 mode).
"""

from __future__ import annotations

import os
import warnings
import weakref

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from kprune import backend  # noqa: E402
from kprune.core import calibration, checks, masking, model_tree  # noqa: E402
from kprune.utils import progress  # noqa: E402
from kprune.core import wrapping as prune_lib  # noqa: E402
from kprune.core.model_tree import copy_model, find_layers, tree_index  # noqa: E402
from kprune.core.pruned_model import PrunedModel, select_tree_targets  # noqa: E402
from kprune.core.wrapper import assign_masks, prunable_weights, weight_path  # noqa: E402

__all__ = ["METHODS", "init_scores", "prune_at_init"]

#: Scoring methods, and whether each needs data.
METHODS = {"snip": True, "grasp": True, "synflow": False, "magnitude": False, "random": False}

#: GraSP's temperature on the outputs (the reference's `T = 200`).
GRASP_TEMPERATURE = 200.0

_DEFAULT_BATCH_SIZE = 100  # SNIP's MNIST batch; GraSP's 10 per class.


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def init_scores(
    model,
    data=None,
    method="snip",
    batches=1,
    iterations=100,
    sparsity=None,
    bn_mode="inference",
    include_bias=False,
    loss=None,
    seed=None,
    ignore=None,
    batch_size=_DEFAULT_BATCH_SIZE,
    temperature=GRASP_TEMPERATURE,
    verbose=1,
):
    """Raw pruning-at-initialisation scores of every prunable weight.

    Args:
        model: a built `keras.Sequential` or functional model (not modified).
        data: `(x, y)` arrays (split into batches of `batch_size`), or an
            iterable / `tf.data.Dataset` of `(x, y)` batches. Needed for
            `"snip"` and `"grasp"`; SynFlow only uses it for the input shape
            when the model's is not fully defined.
        method: `"snip"`, `"grasp"`, `"synflow"`, `"magnitude"` or `"random"`.
        batches: number of batches of `data` to use (SNIP, GraSP).
        iterations: SynFlow rounds (used only when `sparsity` is given).
        sparsity: SynFlow only. `None` returns the one-shot scores of the
            dense net. A float runs the `iterations` rounds towards that
            sparsity (global scope) and returns the scores of the last round,
            from which the final mask is selected (weights pruned in earlier
            rounds score 0).
        bn_mode: `"inference"` (default; BN uses its moving statistics) or
            `"train"` (batch statistics; note that dropout is then active too).
            SNIP and GraSP only: SynFlow always uses inference mode.
        include_bias: also score the biases of the prunable layers.
        loss: a Keras loss (name, instance or `fn(y_true, y_pred)`). Default:
            the model's compiled loss if any, else (sparse) categorical
            cross-entropy, `from_logits` unless the model ends in a softmax.
        seed: seed of the `"random"` scores.
        ignore: layer names or classes not to score.
        batch_size: batch size when `data` is given as arrays.
        temperature: GraSP's temperature `T` (default 200, as the paper).
        verbose: 1 shows progress (`kprune.utils.progress`), 0 is silent.

    Returns:
        A dict `{(layer_name, weight_name): numpy array}` in model order, with
        weight names such as `"kernel"`, `"pointwise_kernel"` or `"bias"`.
        Higher means "keep", except for GraSP, which returns the paper's
        `-theta * Hg` where the highest scores are removed.

    Example:
    >>> scores = kprune.init_scores(model, (x[:100], y[:100]), method="snip")
    >>> {k: v.shape for k, v in scores.items()}
    {('dense', 'kernel'): (784, 300), ...}
    """
    plan = _plan(model, data, method, bn_mode, include_bias, ignore, None,
                 batches, iterations, verbose, batch_size)
    _check_data(plan, data, loss, seed, temperature)
    if sparsity is not None:
        sparsity = _check_sparsity("sparsity", sparsity)
    if plan.method == "synflow" and sparsity is not None:
        raw, _ = _synflow(plan, sparsity, {}, "global", 0, iterations)
        return raw
    return _score(plan, loss, seed, temperature)


def prune_at_init(
    model,
    data=None,
    method="snip",
    sparsity=0.9,
    batches=1,
    iterations=100,
    scope="global",
    bn_mode="inference",
    include_bias=False,
    sparsity_overrides=None,
    ignore=None,
    min_keep=0,
    loss=None,
    seed=None,
    batch_size=_DEFAULT_BATCH_SIZE,
    temperature=GRASP_TEMPERATURE,
    verbose=1,
):
    """Prunes a model at initialisation and returns it with fixed masks.

    Args:
        model: a built `keras.Sequential` or functional model, usually freshly
            initialised. It is not modified (nor on failure).
        data: `(x, y)` arrays or an iterable / `tf.data.Dataset` of `(x, y)`
            batches; needed for `"snip"` and `"grasp"`.
        method: `"snip"`, `"grasp"`, `"synflow"`, `"magnitude"` or `"random"`
            (see the module docstring for the exact definitions).
        sparsity: fraction of the scored weights to remove, in `[0, 1)`.
        batches: number of data batches used for scoring (SNIP, GraSP).
        iterations: SynFlow's number of pruning rounds (default 100).
        scope: `"global"` (one threshold over all scored weights, as in the
            papers) or `"layer"` (every tensor pruned to `sparsity`).
        bn_mode: `"inference"` or `"train"` for SNIP/GraSP scoring.
        include_bias: also score and mask the biases of the pruned layers.
        sparsity_overrides: `{layer_name: float or None}`. A float gives that
            layer its own per-layer sparsity; `None` leaves it dense (not
            wrapped).
        ignore: layer names or layer classes to leave dense (not wrapped).
        min_keep: global scope: every tensor keeps at least this many
            weights. The default 0 is the papers' behaviour, where SNIP and
            GraSP can empty a layer at extreme sparsity ("layer collapse");
            pass 1 to forbid it.
        loss: loss used by SNIP/GraSP (see `init_scores`).
        seed: seed of the `"random"` scores.
        batch_size: batch size when `data` is given as arrays (default 100).
        temperature: GraSP's temperature (default 200).
        verbose: 1 shows a progress bar and a one-line summary, 0 is silent.

    Returns:
        A new model whose scored layers are `kprune.PruneWrapper`s with fixed
        masks (`pruning_schedule=None`): the original signed weights where
        kept, exact zeros elsewhere. Compile and fit it directly; no callback
        is needed. `kprune.strip_pruning` gives back a plain model.

    Raises:
        ValueError: unknown method, sparsity outside `[0, 1)`, missing data
            for SNIP/GraSP, data that does not fit the model, nothing to
            prune, unknown layer names, or a SynFlow overflow.
        TypeError: `model` is not a Keras model, or an argument has the wrong
            type.

    Example:
    ```python
    (x, y), _ = kprune.data.load_mnist_5k(flatten=True)
    sparse = kprune.prune_at_init(model, (x[:100], y[:100]), "snip", 0.95)
    sparse.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    sparse.fit(x, y, epochs=5)
    ```
    """
    sparsity = _check_sparsity("sparsity", sparsity)
    checks.check_choice("scope", scope, ("global", "layer"))
    min_keep = checks.check_int("min_keep", min_keep, lo=0)
    overrides = checks.check_name_map(
        "sparsity_overrides", sparsity_overrides,
        lambda name, v: None if v is None else _check_sparsity(name, v),
    )
    plan = _plan(model, data, method, bn_mode, include_bias, ignore, overrides,
                 batches, iterations, verbose, batch_size)
    _check_data(plan, data, loss, seed, temperature)
    # {key: sparsity} for per-layer overrides (their own, layer-scope masks).
    overrides = plan.overrides
    per_key = {k: overrides[k[0]] for k in plan.keys if k[0] in overrides}

    if plan.method == "synflow":
        _, masks = _synflow(plan, sparsity, per_key, scope, min_keep, iterations)
    else:
        raw = _score(plan, loss, seed, temperature)
        keep = {k: -v for k, v in raw.items()} if plan.method == "grasp" else raw
        masks = _masks(keep, sparsity, per_key, scope, min_keep, plan.keys)

    pruned = _wrap_fixed(plan, scope, overrides, include_bias)
    wrappers = model_tree.find_wrappers(pruned)
    assign_masks(wrappers, [
        [masks[(w.label, weight_path(w.layer.name, v))] for v in w.prunable_weights]
        for w in wrappers
    ])
    if verbose:
        kept = sum(int(m.sum()) for m in masks.values())
        total = sum(m.size for m in masks.values())
        empty = [f"{k[0]}/{k[1]}" for k, m in masks.items() if not m.any()]
        print(
            f"kprune: {plan.method} pruned {total - kept}/{total} weights "
            f"(sparsity {1 - kept / total:.4f}) in {len(masks)} tensors"
            + (f"; EMPTIED (layer collapse): {', '.join(empty)}" if empty else "")
        )
    return pruned


# --------------------------------------------------------------------------
# Validation and bookkeeping
# --------------------------------------------------------------------------


class _Plan:
    """What to score: validated arguments, target layers and weight keys."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def _check_sparsity(name, value):
    return checks.check_sparsity(name, value)


def _plan(model, data, method, bn_mode, include_bias, ignore, overrides,
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

    return _Plan(model=model, method=method, bn_mode=bn_mode, targets=targets,
                 labels=labels, tree=tree, overrides=overrides,
                 target_ids={id(l) for l in targets}, keys=keys, layouts=layouts,
                 include_bias=include_bias, batches=batch_list, verbose=int(bool(verbose)))


def _check_data(plan, data, loss, seed, temperature):
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
    for (layer, weight), variable in _original_variables(plan).items():
        checks.check_finite_array(
            f"The initial weights of layer '{layer}' ({weight})", _value(variable)
        )
    if not METHODS[plan.method]:
        return
    label_form = calibration.label_form(plan.model, loss)
    outputs = _symbolic_outputs(plan.model)
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


def _symbolic_outputs(model):
    """The model's symbolic outputs, or [] (a subclassed model has none)."""
    try:
        return keras.tree.flatten(model.outputs) if getattr(model, "outputs", None) else []
    except (AttributeError, ValueError):
        return []


# --------------------------------------------------------------------------
# Copies of the model (scoring never touches the caller's model)
# --------------------------------------------------------------------------


def _scoring_copy(plan, float64=False, linear_softmax=False):
    """A plain clone of the model; returns `(clone, {key: variable})`."""
    if plan.tree:
        return _tree_scoring_copy(plan, float64, linear_softmax)

    def clone_layer(layer):
        config = layer.get_config()
        if float64 and "dtype" in config:
            config["dtype"] = "float64"
        if linear_softmax:
            if isinstance(layer, keras.layers.Softmax):
                return keras.layers.Identity(name=layer.name, dtype=config.get("dtype"))
            if _is_softmax(config.get("activation")):
                config["activation"] = "linear"
        return layer.__class__.from_config(config)

    clone = model_tree.clone_layers(plan.model, clone_layer)
    by_name = {l.name: l for l in model_tree.leaf_layers(clone)}
    variables = {}
    for name in dict.fromkeys(k[0] for k in plan.keys):
        for weight, _ in prunable_weights(by_name[name], plan.include_bias):
            variables[(name, weight_path(name, weight))] = weight
    return clone, variables


def _tree_scoring_copy(plan, float64, linear_softmax):
    """`_scoring_copy` for models pruned as a `PrunedModel`: a copy through
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


def _is_softmax(activation):
    if activation is None:
        return False
    if isinstance(activation, str):
        return activation == "softmax"
    if isinstance(activation, dict):
        return activation.get("config") == "softmax" or activation.get("class_name") == "softmax"
    return getattr(activation, "__name__", "") == "softmax"


def _wrap_fixed(plan, scope, overrides, include_bias):
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


# --------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------


def _score(plan, loss, seed, temperature):
    if plan.method == "magnitude":
        return {k: np.abs(_value(v)) for k, v in _original_variables(plan).items()}
    if plan.method == "random":
        rng = np.random.default_rng(seed)
        return {k: rng.random(tuple(v.shape)) for k, v in _original_variables(plan).items()}
    if plan.method == "synflow":
        raw, _ = _synflow(plan, None, {}, "global", 0, 1)
        return raw
    if plan.bn_mode == "train":
        # Training-mode calls update BN statistics (and dropout seeds): use a copy.
        clone, variables = _scoring_copy(plan)
    else:
        # Inference-mode forward/backward passes only read the variables, so
        # the caller's model is used as is (this saves a clone per call).
        clone, variables = plan.model, _original_variables(plan)
    loss_fn = _loss_fn(plan.model, loss)
    probs = _ends_in_softmax(plan.model)
    training = plan.bn_mode == "train"
    var_list = list(variables.values())
    keys = list(variables)
    bar = progress.Progress(len(plan.batches) * (2 if plan.method == "grasp" else 1),
                            f"{plan.method} scoring", verbose=plan.verbose, unit="batch")
    if clone is plan.model:
        grad_fn, hvp_fn = _compiled(plan.model, var_list, loss, loss_fn, temperature, probs)
    else:
        # Training mode writes BN statistics and seeds: run eagerly on the copy.
        grad_fn, hvp_fn = _gradient_fns(clone, var_list, loss_fn, training, temperature,
                                        probs, compiled=False)

    if plan.method == "snip":
        total = calibration.sum_over_batches(grad_fn, plan.batches, lambda: bar.add(1))
        n = len(plan.batches)
        return {k: np.abs(_value(v) * (g / n)) for k, v, g in zip(keys, var_list, total)}

    # GraSP: g summed over batches, then Hg summed over batches.
    if len(plan.batches) == 1:
        # One batch: g and Hg come from a single forward pass.
        x, y = plan.batches[0]
        _, hg = hvp_fn(None, x, y)
        bar.add(2)
        return {k: -_value(v) * h for k, v, h in zip(keys, var_list, hg)}
    grad = calibration.sum_over_batches(
        lambda x, y: grad_fn(x, y, tempered_outputs=True), plan.batches, lambda: bar.add(1))
    hg = calibration.sum_over_batches(
        lambda x, y: hvp_fn(grad, x, y)[1], plan.batches, lambda: bar.add(1))
    return {k: -_value(v) * h for k, v, h in zip(keys, var_list, hg)}


def _original_variables(plan):
    out = {}
    for layer in plan.targets:
        for weight, _ in prunable_weights(layer, plan.include_bias):
            out[(plan.labels[id(layer)], weight_path(layer.name, weight))] = weight
    return out


def _value(variable):
    return np.array(keras.ops.convert_to_numpy(variable))


def _ends_in_softmax(model):
    try:
        outputs = _symbolic_outputs(model)
        layer = outputs[0]._keras_history[0]
    except (AttributeError, IndexError, ValueError, TypeError):
        layer = model.layers[-1] if model.layers else None
    if layer is None:
        return False
    if isinstance(layer, keras.layers.Softmax):
        return True
    return _is_softmax(getattr(layer, "activation", None))


def _loss_fn(model, loss):
    """`fn(y_true, y_pred) -> scalar` for SNIP/GraSP (the mean of the loss).

    The loss follows `kprune.core.calibration.resolve_loss`; at-init scoring's
    documented fallback (no `loss=`, model not compiled) is cross-entropy,
    sparse or one-hot by the labels' rank, from logits unless the model ends
    in a softmax.
    """
    fn = calibration.resolve_loss(model, loss, fallback=_cross_entropy)

    def mean_loss(y, out):
        return ops.mean(fn(y, out))

    return mean_loss


def _cross_entropy(model):
    """At-init scoring's fallback loss (see `_loss_fn`)."""
    if len(_symbolic_outputs(model)) > 1:
        raise ValueError(
            f"Model '{model.name}' has several outputs; pass loss= to say how "
            f"to score them."
        )
    from_logits = not _ends_in_softmax(model)

    def default_loss(y, out):
        y = ops.convert_to_tensor(y)
        if len(y.shape) == len(out.shape) and out.shape[-1] not in (None, 1):
            fn = keras.losses.categorical_crossentropy
        else:
            fn = keras.losses.sparse_categorical_crossentropy
        return fn(y, out, from_logits=from_logits)

    return default_loss


def _forward(model, x, training):
    try:
        return model(x, training=training)
    except Exception as e:  # the backend's own error types (InvalidArgumentError, ...)
        raise ValueError(
            f"Model '{model.name}' could not run on the scoring data: {e}"
        ) from e


def _tempered(out, temperature, probs):
    """GraSP's `outputs / T`, in the form the loss expects."""
    if not probs:
        return out / temperature
    logp = ops.log(ops.clip(out, 1e-30, 1.0))
    return ops.softmax(logp / temperature, axis=-1)


def _objective(model, loss_fn, training, temperature=None, probs=False):
    """`fn(x, y) -> loss` on `model`: what SNIP and GraSP differentiate."""

    def fn(x, y):
        out = _forward(model, x, training)
        if temperature is not None:
            out = _tempered(out, temperature, probs)
        return loss_fn(y, out)

    return fn


def _gradient_fns(model, variables, loss_fn, training, temperature, probs, compiled):
    """`grad_fn(x, y, tempered)` and `hvp_fn(grad, x, y)` through the backend seam."""
    plain = backend.grad_fn(_objective(model, loss_fn, training), variables, compiled)
    tempered = backend.grad_fn(
        _objective(model, loss_fn, training, temperature, probs), variables, compiled)
    hvp = backend.hvp_fn(_objective(model, loss_fn, training, temperature, probs),
                         variables, compiled)

    def grad_fn(x, y, tempered_outputs=False):
        return (tempered if tempered_outputs else plain)(x, y)[1]

    def hvp_fn(grad, x, y):
        return hvp(grad, x, y)

    return grad_fn, hvp_fn


# Compiled scoring functions per model, held weakly (they die with the model).
_COMPILED = weakref.WeakKeyDictionary()


def _compiled(model, variables, loss, loss_fn, temperature, probs):
    """Compiled `grad_fn(x, y, tempered)` / `hvp_fn(grad, x, y)` for `model`.

    Only for inference-mode scoring on the caller's model (nothing is
    written). Eager Keras calls cost several training steps on small models;
    these are traced once per model, loss and temperature (where the backend
    traces: `tf.function` on TensorFlow) and reused by later calls (e.g.
    scoring one model at several sparsities or batch counts). The functions
    reach the model through a weak reference.
    """
    per_model = _COMPILED.setdefault(model, {})
    if loss is None:
        loss = getattr(model, "loss", None)  # what `_loss_fn` used
    key = (id(loss), float(temperature), bool(probs), tuple(id(v) for v in variables))
    if key not in per_model:
        ref = weakref.ref(model)

        class _Proxy:
            """Calls the model through the weak reference."""

            name = model.name

            def __call__(self, x, training=False):
                return ref()(x, training=training)

        fns = _gradient_fns(_Proxy(), variables, loss_fn, False, temperature, probs, True)
        # `loss` is kept alive with the entry so its id is never reused.
        per_model[key] = (*fns, loss)
    grad_fn, hvp_fn, _ = per_model[key]
    return grad_fn, hvp_fn


# --------------------------------------------------------------------------
# SynFlow
# --------------------------------------------------------------------------


def _synflow_input(plan, clone):
    if plan.batches:
        x = plan.batches[0][0]
        return keras.tree.map_structure(lambda a: np.ones((1,) + tuple(np.shape(a))[1:], "float64"), x)
    specs = keras.tree.flatten(plan.model.inputs)
    shapes = [tuple(s.shape)[1:] for s in specs]
    if any(d is None for shape in shapes for d in shape):
        raise ValueError(
            f"SynFlow feeds an all-ones input, but model '{plan.model.name}' "
            f"has input shape(s) {[tuple(s.shape) for s in specs]} with unknown "
            f"dimensions; pass data=(x, y) so the input shape is known."
        )
    ones = [np.ones((1,) + shape, "float64") for shape in shapes]
    return ones[0] if len(ones) == 1 else keras.tree.pack_sequence_as(plan.model._inputs_struct, ones)


def _synflow_grad(clone, variables, x):
    """(R, dR/dtheta) with the model in inference mode, in float64."""

    def total(x):
        out = clone(x, training=False)
        return sum(ops.sum(ops.cast(o, "float64")) for o in keras.tree.flatten(out))

    r, grads = backend.grad_fn(total, variables, compiled=False)(x)
    return float(r), grads


def _synflow(plan, sparsity, per_key, scope, min_keep, iterations):
    """Iterative SynFlow; returns `(last_round_scores, masks)`.

    With `sparsity=None`, one round on the dense net and `masks=None`.
    Runs in the backend's float64 scope (JAX would silently compute the
    float64 copy in float32 otherwise).
    """
    with backend.float64_scope():
        return _synflow_rounds(plan, sparsity, per_key, scope, min_keep, iterations)


def _synflow_rounds(plan, sparsity, per_key, scope, min_keep, iterations):
    clone, variables = _scoring_copy(plan, float64=True, linear_softmax=True)
    x = _synflow_input(plan, clone)
    # "Linearize": every floating weight of the copy becomes |w| (float64).
    for v in clone.weights:
        if keras.backend.is_float_dtype(v.dtype):
            v.assign(np.abs(_value(v)))
    keys = list(variables)
    var_list = list(variables.values())
    absolute = {k: _value(v) for k, v in variables.items()}
    masks = {k: np.ones(a.shape, bool) for k, a in absolute.items()}
    rounds = 1 if sparsity is None else iterations
    bar = progress.Progress(rounds, f"{plan.method} scoring", verbose=plan.verbose, unit="round")
    density = 1.0 - (sparsity or 0.0)
    scores = None
    for k in range(1, rounds + 1):
        for key, v in variables.items():
            v.assign(absolute[key] * masks[key])
        r, grads = _synflow_grad(clone, var_list, x)
        if not np.isfinite(r):
            raise ValueError(
                f"SynFlow's R = sum(outputs) overflowed even in float64 for "
                f"model '{plan.model.name}' (R = {r}); the network is too deep "
                f"or its weights too large for data-free path scoring."
            )
        scores = {key: np.abs(g * _value(v)) for key, v, g in zip(keys, var_list, grads)}
        bar.add(1)
        if sparsity is None:
            break
        round_sparsity = 1.0 - density ** (k / rounds)
        round_per_key = {key: 1.0 - (1.0 - s) ** (k / rounds) for key, s in per_key.items()}
        masks = _masks(scores, round_sparsity, round_per_key, scope, min_keep, keys, masks)
    return scores, (None if sparsity is None else masks)


# --------------------------------------------------------------------------
# Scores -> masks: always through the mask engine
# --------------------------------------------------------------------------


def _masks(keep_scores, sparsity, per_key, scope, min_keep, keys, previous=None):
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
