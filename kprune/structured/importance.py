"""Channel importance criteria for structured pruning.

An importance is any callable `importance(group) -> scores`: it gets a
`kprune.structured.Group` and returns a 1-D array with one score per channel
of the group (higher = keep), or `None` when it has nothing to say about the
group (the group is then not pruned, and the plan's report says so). The
scores go to `kprune.masking`, which does the selection.

Built in:

* `MagnitudeImportance(p=1)` / `"l1"`: the L1 norm of each filter, summed over
  every coupled producer of the group (Li et al. 2017, "Pruning Filters for
  Efficient ConvNets"); `p=2` / `"l2"` is the L2 group norm
  `sqrt(sum of squares over all coupled filters)`.
* `BNScaleImportance()` / `"bn_scale"`: `|gamma|` of the group's
  BatchNormalization / LayerNormalization scales (Liu et al. 2017, "Learning
  Efficient Convolutional Networks through Network Slimming").
* `TaylorImportance(x, y, loss)` / `"taylor"` (needs data): first-order
  Taylor `sum |w * dL/dw|` over each channel's filters and scales (Molchanov
  et al. 2017/2019).
"""

from __future__ import annotations

import numpy as np

from kprune import checks

__all__ = [
    "Importance",
    "MagnitudeImportance",
    "BNScaleImportance",
    "TaylorImportance",
    "get_importance",
]


def _check_roles(roles):
    """`roles` as a tuple of str; one string is one role (not its letters)."""
    if isinstance(roles, str):
        roles = (roles,)
    if isinstance(roles, (bytes, dict)) or not hasattr(roles, "__iter__"):
        raise TypeError(f"roles must be a tuple of role names such as ('out',), got {checks.describe(roles)}.")
    roles = tuple(roles)
    if not roles or not all(isinstance(r, str) for r in roles):
        raise ValueError(
            f"roles must be a non-empty tuple of role names ('out', 'in', 'bias', "
            f"'gamma', 'beta', 'dw'), got {roles!r}."
        )
    return roles


def _per_position(fn):
    def apply(a):
        return fn(a.reshape(a.shape[0], -1)).sum(axis=1) if a.ndim > 1 else fn(a)

    return apply


class Importance:
    """Base class of importance criteria: `__call__(group) -> 1-D scores`."""

    def __call__(self, group):
        raise NotImplementedError


class MagnitudeImportance(Importance):
    """Group norm of the coupled filters (Li et al. 2017).

    Args:
        p: 1 for the L1 norm, 2 for the L2 norm.
        roles: which weight axes to include (see `handlers.Slot`): `("out",)`
            (default) is the filters themselves; add `"in"` to also count the
            next layers' input slices, `"gamma"` for normalisation scales.

    Returns (when called):
        `(sum over members of sum |w|^p) ** (1/p)` per channel.

    Example:
    >>> pruner = ChannelPruner(model, importance=MagnitudeImportance(p=2))
    """

    def __init__(self, p=1, roles=("out",)):
        if not checks.is_number(p) or p not in (1, 2):
            raise ValueError(f"MagnitudeImportance: p must be 1 or 2, got {checks.describe(p)}.")
        self.p = int(p)
        self.roles = _check_roles(roles)

    def __call__(self, group):
        p = self.p
        sums, counts = group.reduce(_per_position(lambda a: np.abs(a) ** p), self.roles)
        if not counts.any():
            return None
        return sums ** (1.0 / p)

    def __repr__(self):
        return f"MagnitudeImportance(p={self.p}, roles={self.roles})"


class BNScaleImportance(Importance):
    """`|gamma|` of the group's normalisation layers (Network Slimming).

    Groups without a BatchNormalization/LayerNormalization scale get `None`
    and are not pruned.

    Example:
    >>> pruner = ChannelPruner(model, importance="bn_scale")
    """

    def __call__(self, group):
        sums, counts = group.reduce(np.abs, roles=("gamma",))
        if not counts.any():
            return None
        return sums

    def __repr__(self):
        return "BNScaleImportance()"


class TaylorImportance(Importance):
    """First-order Taylor importance `sum |w * dL/dw|` computed on data.

    Gradients are computed once per model (on the first call) over `x`, `y`
    in batches, and summed. The model runs in inference mode and is not
    modified.

    Args:
        x: input batch(es), a numpy array or a list of arrays for multi-input
            models.
        y: targets (required unless `loss` takes only the predictions).
        loss: a Keras loss (name, instance or `fn(y_true, y_pred)`); default:
            the model's compiled loss, else an error.
        batch_size: batch size for the gradient pass.
        roles: weight axes included, default filters and normalisation scales.

    Example:
    >>> imp = TaylorImportance(x_train[:256], y_train[:256],
    ...                        loss="sparse_categorical_crossentropy")
    >>> pruned = prune_channels(model, importance=imp, pruning_ratio=0.5)
    """

    def __init__(self, x, y=None, loss=None, batch_size=32, roles=("out", "gamma")):
        xs = x if isinstance(x, (list, tuple)) else [x]
        if x is None or not xs:
            raise TypeError(
                f"TaylorImportance needs input data x (an array, or a list of arrays "
                f"for a multi-input model), got {checks.describe(x)}."
            )
        xs = [checks.check_finite_array("TaylorImportance x" + (f"[{i}]" if len(xs) > 1 else ""), a)
              for i, a in enumerate(xs)]
        n = [len(a) if a.ndim else 0 for a in xs]
        if not n[0] or len(set(n)) > 1:
            raise ValueError(
                f"TaylorImportance: x must hold examples along axis 0, with the same "
                f"count in every input; got lengths {n}."
            )
        if y is not None:
            y = checks.check_finite_array("TaylorImportance y", y)
            if y.ndim == 0 or len(y) != n[0]:
                raise ValueError(
                    f"TaylorImportance: x has {n[0]} examples but y has "
                    f"{len(y) if y.ndim else 0}; give one target per example."
                )
        if loss is not None and not isinstance(loss, str) and not callable(loss):
            raise TypeError(f"loss must be a Keras loss name, instance or callable, got {checks.describe(loss)}.")
        self.x, self.y, self.loss = x, y, loss
        self.batch_size = checks.check_int("batch_size", batch_size, lo=1)
        self.roles = _check_roles(roles)
        self._grads = {}
        self._model_id = None

    def _compute(self, model):
        import keras  # noqa: PLC0415

        from kprune import backend  # noqa: PLC0415

        loss = self.loss
        if loss is None:
            loss = getattr(model, "loss", None)
            if loss is None:
                raise ValueError(
                    "TaylorImportance: pass loss=... (e.g. "
                    "'sparse_categorical_crossentropy'); the model is not compiled."
                )
        loss_fn = keras.losses.get(loss) if isinstance(loss, str) else loss
        sparse = (isinstance(loss, str) and loss.replace("_", "").lower() == "sparsecategoricalcrossentropy") or (
            isinstance(loss, keras.losses.SparseCategoricalCrossentropy))
        if sparse and self.y is not None and len(model.outputs) == 1 and model.outputs[0].shape[-1]:
            checks.check_labels("TaylorImportance y", self.y, int(model.outputs[0].shape[-1]))
        variables = list(model.trainable_weights)
        totals = [np.zeros(tuple(v.shape), np.float64) for v in variables]
        xs = self.x if isinstance(self.x, (list, tuple)) else [self.x]
        n = len(xs[0])
        def objective(xb, yb):
            pred = model(xb if len(xb) > 1 else xb[0], training=False)
            value = loss_fn(pred) if yb is None else loss_fn(yb, pred)
            return keras.ops.sum(value)

        run = backend.grad_fn(objective, variables, compiled=False)
        for start in range(0, n, self.batch_size):
            xb = [np.asarray(a[start:start + self.batch_size]) for a in xs]
            yb = None if self.y is None else np.asarray(self.y[start:start + self.batch_size])
            _, grads = run(xb, yb)
            for t, g in zip(totals, grads):
                t += np.asarray(g, np.float64)
        self._grads = {id(v): t for v, t in zip(variables, totals)}
        self._model_id = id(model)

    def __call__(self, group):
        if self._model_id != id(group.model):
            self._compute(group.model)

        def source(member):
            g = self._grads.get(id(member.variable))
            w = member.values()
            return np.zeros_like(w) if g is None else np.abs(w * g)

        sums, counts = group.reduce(_per_position(lambda a: a), self.roles, source=source)
        if not counts.any():
            return None
        return sums

    def __repr__(self):
        return f"TaylorImportance(n={len(self.x) if not isinstance(self.x, (list, tuple)) else len(self.x[0])})"


def get_importance(identifier):
    """Returns an importance callable from a name or a callable.

    Args:
        identifier: `"l1"`, `"l2"`, `"bn_scale"` (alias `"bn"`), or any
            callable `group -> scores`. `"taylor"` needs data: pass a
            `TaylorImportance(x, y, loss)` instance.
    """
    if callable(identifier):
        return identifier
    if isinstance(identifier, str):
        key = identifier.lower()
        if key == "l1":
            return MagnitudeImportance(p=1)
        if key == "l2":
            return MagnitudeImportance(p=2)
        if key in ("bn", "bn_scale", "slimming"):
            return BNScaleImportance()
        if key == "taylor":
            raise ValueError(
                "importance='taylor' needs data: pass "
                "importance=TaylorImportance(x, y, loss=...)."
            )
    raise (ValueError if isinstance(identifier, str) else TypeError)(
        f"importance must be 'l1', 'l2', 'bn_scale', a TaylorImportance(...) or a "
        f"callable group -> scores; got {identifier!r}."
    )
