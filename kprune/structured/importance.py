"""Channel importance criteria for structured pruning.

An importance is any callable `importance(group) -> scores`: it gets a
`kprune.structured.Group` and returns a 1-D array with one score per channel
of the group (higher = keep), or `None` when it has nothing to say about the
group (the group is then not pruned, and the plan's report says so). The
scores go to `kprune.core.masking`, which does the selection.

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

import keras
import numpy as np

from kprune.core import calibration, checks
from kprune.core.hessian import obd_scores
from kprune.core.masking import lamp_scores

__all__ = [
    "Importance",
    "MagnitudeImportance",
    "BNScaleImportance",
    "TaylorImportance",
    "HessianImportance",
    "FPGMImportance",
    "LAMPImportance",
    "RandomImportance",
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
        self._inputs = xs[0] if len(xs) == 1 else xs
        self.batch_size = checks.check_int("batch_size", batch_size, lo=1)
        self.roles = _check_roles(roles)
        self._grads = {}
        self._model_id = None

    def _compute(self, model):
        loss_fn = calibration.resolve_loss(model, self.loss, caller="TaylorImportance")
        if (calibration.label_form(model, self.loss) == "sparse" and self.y is not None
                and len(model.outputs) == 1 and model.outputs[0].shape[-1]):
            checks.check_labels("TaylorImportance y", self.y, int(model.outputs[0].shape[-1]))
        variables = list(model.trainable_weights)
        batches = calibration.as_batches((self._inputs, self.y), batch_size=self.batch_size,
                                         targets="optional", model=model, name="TaylorImportance data")

        def objective(xb, yb):
            pred = model(xb, training=False)
            value = loss_fn(pred) if yb is None else loss_fn(yb, pred)
            return keras.ops.sum(value)

        totals = calibration.gradient_sum(objective, variables, batches)
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


# --------------------------------------------------------------------------
# More criteria (kprune.methods.criteria has their weight-level counterparts)
# --------------------------------------------------------------------------


class HessianImportance(Importance):
    """Second-order (OBD) channel importance: `sum 0.5 * h_ii * w_i**2`.

    Optimal Brain Damage (LeCun et al. 1990) summed over each channel's
    coupled weights, as Torch-Pruning's `GroupHessianImportance`. The Hessian
    diagonal `h_ii` of the loss comes from `kprune.methods.criteria.hessian_diagonal`
    (Hutchinson's estimator by default), computed once per model on `x, y`.

    Args:
        x, y: data (e.g. 256 training examples).
        loss: a Keras loss (default: the model's compiled loss).
        method: `"hutchinson"` (default) or `"exact"`.
        samples: Hutchinson samples (default 8).
        roles: weight axes included (default filters and normalisation scales).

    Example:
    >>> imp = HessianImportance(x[:256], y[:256], loss="sparse_categorical_crossentropy")
    >>> thin = prune_channels(model, importance=imp, pruning_ratio=0.5)
    """

    def __init__(self, x, y, loss=None, method="hutchinson", samples=8, roles=("out", "gamma")):
        self.x, self.y, self.loss = x, y, loss
        self.method, self.samples = method, samples
        self.roles = tuple(roles)
        self._scores = {}
        self._model_id = None

    def _compute(self, model):
        variables = list(model.trainable_weights)
        scores = obd_scores(model, variables, self.x, self.y, self.loss,
                            method=self.method, samples=self.samples)
        self._scores = {id(v): s for v, s in zip(variables, scores)}
        self._model_id = id(model)

    def __call__(self, group):
        if self._model_id != id(group.model):
            self._compute(group.model)

        def source(member):
            s = self._scores.get(id(member.variable))
            return np.zeros(np.shape(member.values())) if s is None else s

        sums, counts = group.reduce(_per_position(lambda a: a), self.roles, source=source)
        if not counts.any():
            return None
        return sums

    def __repr__(self):
        return f"HessianImportance(method={self.method!r}, samples={self.samples})"


class FPGMImportance(Importance):
    """Filter Pruning via Geometric Median (He et al., CVPR 2019).

    Filters close to the geometric median of their layer are the most
    replaceable by the others. The score of filter `c` is its summed distance
    to every other filter of the same layer, `sum_k ||F_c - F_k||_p`
    (the paper's approximation of the distance to the median), summed over
    the group's coupled producers; the lowest scores are removed.

    Args:
        p: 2 (Euclidean, default, as the paper) or 1.

    Example:
    >>> thin = prune_channels(model, importance=FPGMImportance(), pruning_ratio=0.3)
    """

    def __init__(self, p=2):
        if p not in (1, 2):
            raise ValueError(f"FPGMImportance: p must be 1 or 2, got {p!r}.")
        self.p = p

    def _distances(self, a):
        if a.ndim < 2:
            return np.zeros(a.shape[0])  # a vector per position has no filter
        flat = a.reshape(a.shape[0], -1).astype(np.float64)
        if self.p == 2:
            # ||a - b||^2 = |a|^2 + |b|^2 - 2 a.b: no (C, C, d) array.
            sq = np.square(flat).sum(1)
            d2 = sq[:, None] + sq[None, :] - 2.0 * flat @ flat.T
            return np.sqrt(np.maximum(d2, 0.0)).sum(axis=1)
        return np.array([np.abs(flat - row).sum() for row in flat])

    def __call__(self, group):
        sums, counts = group.reduce(self._distances, roles=("out",))
        if not counts.any():
            return None
        return sums

    def __repr__(self):
        return f"FPGMImportance(p={self.p})"


class LAMPImportance(Importance):
    """LAMP scores of the channel norms (Lee et al., ICLR 2021).

    The group's L`p` channel norms `s` become `s_c**2 / sum_{k: s_k >= s_c}
    s_k**2` (`kprune.core.masking.lamp_scores`), which makes groups of different
    sizes and scales comparable: use it with `global_pruning=True,
    global_normalize=None` (`global_normalize="lamp"` with `"l2"` is the same
    rule applied by the pruner). Within one group, LAMP orders channels as
    their norms do.

    Args:
        p: norm of the channels (default 2, as LAMP).

    Example:
    >>> ChannelPruner(model, importance=LAMPImportance(), pruning_ratio=0.5,
    ...               global_pruning=True, global_normalize=None)
    """

    def __init__(self, p=2):
        self.p = p
        self._norm = MagnitudeImportance(p=p)

    def __call__(self, group):
        s = self._norm(group)
        return None if s is None else lamp_scores(s)

    def __repr__(self):
        return f"LAMPImportance(p={self.p})"


class RandomImportance(Importance):
    """Uniform random channel scores: the random-pruning baseline.

    Args:
        seed: seed of the generator (one draw per call).

    Example:
    >>> thin = prune_channels(model, importance=RandomImportance(seed=0))
    """

    def __init__(self, seed=None):
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def __call__(self, group):
        return self._rng.random(group.size)

    def __repr__(self):
        return f"RandomImportance(seed={self.seed!r})"


#: The data-free criteria by name, for `get_importance`.
_BY_NAME = {
    "l1": lambda: MagnitudeImportance(p=1),
    "l2": lambda: MagnitudeImportance(p=2),
    "bn": BNScaleImportance,
    "bn_scale": BNScaleImportance,
    "slimming": BNScaleImportance,
    "fpgm": FPGMImportance,
    "lamp": LAMPImportance,
    "random": RandomImportance,
}

#: The criteria that need data, by name: what to pass instead.
_NEED_DATA = {"taylor": "TaylorImportance", "hessian": "HessianImportance",
              "obd": "HessianImportance"}


def get_importance(identifier):
    """Returns an importance callable from a name or a callable.

    Args:
        identifier: `"l1"`, `"l2"`, `"bn_scale"` (alias `"bn"`), `"fpgm"`,
            `"lamp"`, `"random"`, or any callable `group -> scores`.
            `"taylor"` and `"hessian"` need data: pass
            `TaylorImportance(x, y, loss)` / `HessianImportance(x, y, loss)`.

    Returns:
        A callable `group -> scores`.

    Example:
    >>> get_importance("l2")
    MagnitudeImportance(p=2)
    """
    if callable(identifier):
        return identifier
    if isinstance(identifier, str):
        key = identifier.lower()
        if key in _BY_NAME:
            return _BY_NAME[key]()
        if key in _NEED_DATA:
            cls = _NEED_DATA[key]
            raise ValueError(
                f"importance={identifier!r} needs data: pass "
                f"importance={cls}(x, y, loss=...)."
            )
    raise (ValueError if isinstance(identifier, str) else TypeError)(
        f"importance must be 'l1', 'l2', 'bn_scale', 'fpgm', 'lamp', 'random', "
        f"a TaylorImportance(...) / HessianImportance(...) or a callable "
        f"group -> scores; got {identifier!r}."
    )
