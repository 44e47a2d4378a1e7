"""At-init scoring: the public entry points `init_scores` and `prune_at_init`.

Both validate everything first (`plan.make_plan`, `plan.check_data`), score
on copies (`scores`, `synflow`) and never modify the caller's model;
`prune_at_init` returns a new model with fixed masks (`copies.fixed_mask_model`).
"""

from __future__ import annotations

from kprune.core import checks, model_tree
from kprune.core.wrapper import assign_masks, weight_path
from kprune.methods.at_init.copies import fixed_mask_model
from kprune.methods.at_init.plan import (
    DEFAULT_BATCH_SIZE,
    GRASP_TEMPERATURE,
    check_data,
    make_plan,
    select_masks,
)
from kprune.methods.at_init.scores import score_weights
from kprune.methods.at_init.synflow import synflow_scores


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
    batch_size=DEFAULT_BATCH_SIZE,
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
    plan = make_plan(model, data, method, bn_mode, include_bias, ignore, None,
                 batches, iterations, verbose, batch_size)
    check_data(plan, data, loss, seed, temperature)
    if sparsity is not None:
        sparsity = checks.check_sparsity("sparsity", sparsity)
    if plan.method == "synflow" and sparsity is not None:
        raw, _ = synflow_scores(plan, sparsity, {}, "global", 0, iterations)
        return raw
    return score_weights(plan, loss, seed, temperature)


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
    batch_size=DEFAULT_BATCH_SIZE,
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
    sparsity = checks.check_sparsity("sparsity", sparsity)
    checks.check_choice("scope", scope, ("global", "layer"))
    min_keep = checks.check_int("min_keep", min_keep, lo=0)
    overrides = checks.check_name_map(
        "sparsity_overrides", sparsity_overrides,
        lambda name, v: None if v is None else checks.check_sparsity(name, v),
    )
    plan = make_plan(model, data, method, bn_mode, include_bias, ignore, overrides,
                 batches, iterations, verbose, batch_size)
    check_data(plan, data, loss, seed, temperature)
    # {key: sparsity} for per-layer overrides (their own, layer-scope masks).
    overrides = plan.overrides
    per_key = {k: overrides[k[0]] for k in plan.keys if k[0] in overrides}

    if plan.method == "synflow":
        _, masks = synflow_scores(plan, sparsity, per_key, scope, min_keep, iterations)
    else:
        raw = score_weights(plan, loss, seed, temperature)
        keep = {k: -v for k, v in raw.items()} if plan.method == "grasp" else raw
        masks = select_masks(keep, sparsity, per_key, scope, min_keep, plan.keys)

    pruned = fixed_mask_model(plan, scope, overrides, include_bias)
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
