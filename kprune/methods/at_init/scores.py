"""At-init scoring: magnitude, random, SNIP and GraSP scores.

SNIP and GraSP differentiate the loss (`kprune.core.calibration.resolve_loss`,
with at-init's documented cross-entropy fallback) through the backend seam
(`kprune.backend.grad_fn` / `hvp_fn`); inference-mode scoring reuses compiled
gradient functions per model (`compiled_fns`). See the package docstring for
the definitions and sign conventions.
"""

from __future__ import annotations

import weakref

import keras
import numpy as np
from keras import ops

from kprune import backend
from kprune.core import calibration
from kprune.methods.at_init.copies import is_softmax, scoring_copy
from kprune.methods.at_init.plan import numpy_value, original_variables, symbolic_outputs
from kprune.methods.at_init.synflow import synflow_scores
from kprune.utils import progress


def score_weights(plan, loss, seed, temperature):
    if plan.method == "magnitude":
        return {k: np.abs(numpy_value(v)) for k, v in original_variables(plan).items()}
    if plan.method == "random":
        rng = np.random.default_rng(seed)
        return {k: rng.random(tuple(v.shape)) for k, v in original_variables(plan).items()}
    if plan.method == "synflow":
        raw, _ = synflow_scores(plan, None, {}, "global", 0, 1)
        return raw
    if plan.bn_mode == "train":
        # Training-mode calls update BN statistics (and dropout seeds): use a copy.
        clone, variables = scoring_copy(plan)
    else:
        # Inference-mode forward/backward passes only read the variables, so
        # the caller's model is used as is (this saves a clone per call).
        clone, variables = plan.model, original_variables(plan)
    loss_fn = scoring_loss(plan.model, loss)
    probs = ends_in_softmax(plan.model)
    training = plan.bn_mode == "train"
    var_list = list(variables.values())
    keys = list(variables)
    bar = progress.Progress(len(plan.batches) * (2 if plan.method == "grasp" else 1),
                            f"{plan.method} scoring", verbose=plan.verbose, unit="batch")
    if clone is plan.model:
        grad_fn, hvp_fn = compiled_fns(plan.model, var_list, loss, loss_fn, temperature, probs)
    else:
        # Training mode writes BN statistics and seeds: run eagerly on the copy.
        grad_fn, hvp_fn = gradient_fns(clone, var_list, loss_fn, training, temperature,
                                        probs, compiled=False)

    if plan.method == "snip":
        total = calibration.sum_over_batches(grad_fn, plan.batches, lambda: bar.add(1))
        n = len(plan.batches)
        return {k: np.abs(numpy_value(v) * (g / n)) for k, v, g in zip(keys, var_list, total)}

    # GraSP: g summed over batches, then Hg summed over batches.
    if len(plan.batches) == 1:
        # One batch: g and Hg come from a single forward pass.
        x, y = plan.batches[0]
        _, hg = hvp_fn(None, x, y)
        bar.add(2)
        return {k: -numpy_value(v) * h for k, v, h in zip(keys, var_list, hg)}
    grad = calibration.sum_over_batches(
        lambda x, y: grad_fn(x, y, tempered_outputs=True), plan.batches, lambda: bar.add(1))
    hg = calibration.sum_over_batches(
        lambda x, y: hvp_fn(grad, x, y)[1], plan.batches, lambda: bar.add(1))
    return {k: -numpy_value(v) * h for k, v, h in zip(keys, var_list, hg)}


def ends_in_softmax(model):
    try:
        outputs = symbolic_outputs(model)
        layer = outputs[0]._keras_history[0]
    except (AttributeError, IndexError, ValueError, TypeError):
        layer = model.layers[-1] if model.layers else None
    if layer is None:
        return False
    if isinstance(layer, keras.layers.Softmax):
        return True
    return is_softmax(getattr(layer, "activation", None))


def scoring_loss(model, loss):
    """`fn(y_true, y_pred) -> scalar` for SNIP/GraSP (the mean of the loss).

    The loss follows `kprune.core.calibration.resolve_loss`; at-init scoring's
    documented fallback (no `loss=`, model not compiled) is cross-entropy,
    sparse or one-hot by the labels' rank, from logits unless the model ends
    in a softmax.
    """
    fn = calibration.resolve_loss(model, loss, fallback=cross_entropy_fallback)

    def mean_loss(y, out):
        return ops.mean(fn(y, out))

    return mean_loss


def cross_entropy_fallback(model):
    """At-init scoring's fallback loss (see `scoring_loss`)."""
    if len(symbolic_outputs(model)) > 1:
        raise ValueError(
            f"Model '{model.name}' has several outputs; pass loss= to say how "
            f"to score them."
        )
    from_logits = not ends_in_softmax(model)

    def default_loss(y, out):
        y = ops.convert_to_tensor(y)
        if len(y.shape) == len(out.shape) and out.shape[-1] not in (None, 1):
            fn = keras.losses.categorical_crossentropy
        else:
            fn = keras.losses.sparse_categorical_crossentropy
        return fn(y, out, from_logits=from_logits)

    return default_loss


def forward(model, x, training):
    try:
        return model(x, training=training)
    except Exception as e:  # the backend's own error types (InvalidArgumentError, ...)
        raise ValueError(
            f"Model '{model.name}' could not run on the scoring data: {e}"
        ) from e


def tempered(out, temperature, probs):
    """GraSP's `outputs / T`, in the form the loss expects."""
    if not probs:
        return out / temperature
    logp = ops.log(ops.clip(out, 1e-30, 1.0))
    return ops.softmax(logp / temperature, axis=-1)


def loss_objective(model, loss_fn, training, temperature=None, probs=False):
    """`fn(x, y) -> loss` on `model`: what SNIP and GraSP differentiate."""

    def fn(x, y):
        out = forward(model, x, training)
        if temperature is not None:
            out = tempered(out, temperature, probs)
        return loss_fn(y, out)

    return fn


def gradient_fns(model, variables, loss_fn, training, temperature, probs, compiled):
    """`grad_fn(x, y, tempered)` and `hvp_fn(grad, x, y)` through the backend seam."""
    plain = backend.grad_fn(loss_objective(model, loss_fn, training), variables, compiled)
    tempered = backend.grad_fn(
        loss_objective(model, loss_fn, training, temperature, probs), variables, compiled)
    hvp = backend.hvp_fn(loss_objective(model, loss_fn, training, temperature, probs),
                         variables, compiled)

    def grad_fn(x, y, tempered_outputs=False):
        return (tempered if tempered_outputs else plain)(x, y)[1]

    def hvp_fn(grad, x, y):
        return hvp(grad, x, y)

    return grad_fn, hvp_fn


# Compiled scoring functions per model, held weakly (they die with the model).
_COMPILED = weakref.WeakKeyDictionary()


def compiled_fns(model, variables, loss, loss_fn, temperature, probs):
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
        loss = getattr(model, "loss", None)  # what `scoring_loss` used
    key = (id(loss), float(temperature), bool(probs), tuple(id(v) for v in variables))
    if key not in per_model:
        ref = weakref.ref(model)

        class _Proxy:
            """Calls the model through the weak reference."""

            name = model.name

            def __call__(self, x, training=False):
                return ref()(x, training=training)

        fns = gradient_fns(_Proxy(), variables, loss_fn, False, temperature, probs, True)
        # `loss` is kept alive with the entry so its id is never reused.
        per_model[key] = (*fns, loss)
    grad_fn, hvp_fn, _ = per_model[key]
    return grad_fn, hvp_fn
