"""One-shot pruning of trained models: magnitude, Wanda and SparseGPT.

`prune_post_training(model, calibration_data, method, sparsity, granularity)`
prunes a trained model without retraining, layer by layer, from a few hundred
calibration examples, and returns a new model with fixed masks (the caller's
model is not modified).

Definitions (every weight matrix is seen in its 2-D `[in, out]` view: Dense
`[in, out]`; Conv1D/2D `[k... * c_in, c_out]`, the im2col view; EinsumDense
`[contracted axes, produced axes]` read from its equation; `X` is the matrix
of the layer's inputs in the same view, one row per token / pixel / example):

* **magnitude**: keep the largest `|W|`, one threshold per tensor (what
  `kprune.prune_low_magnitude` does with `scope="layer"`). Needs no data.
* **Wanda** (Sun et al., ICLR 2024): score `|W_ij| * ||X_i||_2` (the L2 norm
  of input feature `i` over all calibration rows). Unstructured: the scores
  are compared within each output unit (per output row in the paper's
  `[out, in]` layout, i.e. per column of `[in, out]`), every unit keeps
  `round(in * (1 - sparsity))` weights (`comparison="output"`, the paper's
  default; `comparison="layer"` takes one threshold per kernel instead). N:M groups (of `m` consecutive
  weights along the input axis) and Block patterns compare within their
  groups as usual. The kept weights are not changed.
* **SparseGPT** (Frantar & Alistarh, ICML 2023): with `H = X^T X` (plus
  `damping * mean(diag H)` on the diagonal, 1% by default; inputs never seen
  non-zero get `H_ii = 1` and their weights are set to zero, as the reference
  does), the input columns are visited in order, in lazy batches of
  `block_size` (128). At the start of a batch (unstructured, Block) or of an
  N:M group, the mask is chosen from `w^2 / [U]_ii^2`, `U` being the upper
  Cholesky factor of `H^-1`; then every pruned weight's error is spread over
  the not yet visited inputs of its output unit by the OBS update
  `w_F -= (w_q / U_qq) * U_q,F`. This is the optimal (least-squares) update
  of the remaining weights for each pruned weight, as in Optimal Brain
  Surgeon.

All selections go through the mask engine (`kprune.core.masking.compute_mask`),
with its tie and rounding rules. N:M matches `kprune.NM`: `n` zeros in every
`m` consecutive weights along the input axis (`Layout.in_axis`), the engine's
rule for a shorter tail group.

Layer by layer, in call order: the inputs of a layer are those produced by
the already pruned (and, for SparseGPT, updated) earlier layers, as in both
papers. They are gathered with a forward pass per layer and per calibration
batch, and only the statistics are kept (`sum x^2` per input for Wanda,
`X^T X` for SparseGPT), so memory stays bounded by one batch.

Which layers: the Dense, EinsumDense, Conv1D and Conv2D (groups=1) layers of
the model, also inside composite layers (`keras.layers.MultiHeadAttention`,
KerasHub's `TransformerDecoder` and `TransformerEncoder`, ...). Their inputs
are seen by temporarily intercepting the layer's `call` (`capture_inputs`),
which works for any model kind. Other layers (embeddings, recurrent cells,
depthwise and transposed convolutions) and layers never called on the
calibration data are left dense and named in a warning.

The returned model: each pruned layer that is a prunable layer of the model
graph (a Dense/Conv layer, or a MultiHeadAttention / TimeDistributed around
them) is a `kprune.PruneWrapper(layer, pruning_schedule=None)` with the masks
and (SparseGPT) the updated weights, exactly like `kprune.prune_at_init`'s
result. Layers nested in a composite layer that is not itself prunable
(KerasHub's TransformerDecoder) get their masked weights assigned without a
wrapper (their zeros are exact, but fine-tuning would not keep them at zero);
the warning names them.
"""

from __future__ import annotations

import contextlib
import warnings

import keras
import numpy as np

from kprune.core import calibration, checks, masking, model_tree
from kprune.core.pruned_model import PrunedModel
from kprune.core.wrapper import PruneWrapper, assign_masks, is_prunable, prunable_weights

__all__ = [
    "METHODS",
    "prune_post_training",
    "capture_inputs",
    "layer_inputs",
    "KernelView",
    "kernel_view",
    "magnitude",
    "wanda",
    "wanda_scores",
    "sparsegpt",
    "select",
]

#: The one-shot methods, and whether each needs calibration data.
METHODS = {"magnitude": False, "wanda": True, "sparsegpt": True}

_SUPPORTED = (keras.layers.Dense, keras.layers.EinsumDense, keras.layers.Conv1D, keras.layers.Conv2D)


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def prune_post_training(
    model,
    calibration_data=None,
    method="wanda",
    sparsity=None,
    granularity=None,
    batch_size=32,
    num_batches=None,
    ignore=None,
    damping=0.01,
    block_size=128,
    comparison="output",
    verbose=1,
):
    """Prunes a trained model one-shot, layer by layer, without retraining.

    Args:
        model: a built `keras.Sequential` or functional model (KerasHub
            backbones are functional). It is not modified (nor on failure).
        calibration_data: inputs of the model, examples on the first axis: an
            array, or a dict / list of arrays for several inputs (split into
            batches of `batch_size`); or an iterable / `tf.data.Dataset` of
            such batches, or of `(x, y)` / `(x, y, sample_weight)` tuples of
            which `x` is used. Needed for `"wanda"` and `"sparsegpt"`.
        method: `"magnitude"`, `"wanda"` or `"sparsegpt"` (see the module
            docstring for the exact definitions).
        sparsity: fraction of every pruned kernel to remove, in `[0, 1)`.
            Default 0.5, or `n / m` with `granularity=kprune.NM(n, m)`.
        granularity: `"unstructured"` (default), `kprune.NM(n, m)` or
            `kprune.Block((r, c))` (Block needs a kernel whose 2-D view is the
            engine's `[prod(shape[:-1]), shape[-1]]`: Dense, Conv).
        batch_size: batch size when `calibration_data` is given as arrays.
        num_batches: use at most this many calibration batches.
        ignore: layer names (of top-level or nested layers) or layer classes
            to leave dense.
        damping: SparseGPT's dampening, as a fraction of the mean diagonal
            of `X^T X` (default 0.01, as the paper).
        block_size: SparseGPT's lazy-batch size (default 128, as the paper).
        comparison: Wanda's comparison group for unstructured sparsity:
            `"output"` (default, the paper's: every output unit keeps its own
            share of weights) or `"layer"` (one threshold per kernel; the
            Wanda paper's ablation finds per-output better for LLMs, our
            MNIST CNN benchmark finds per-layer better at 70%).
        verbose: 1 shows a progress bar and a one-line summary, 0 is silent.

    Returns:
        A new model. Pruned layers of the model graph are
        `kprune.PruneWrapper`s with fixed masks (`pruning_schedule=None`), so
        the model can be fine-tuned (no callback needed), stripped with
        `kprune.strip_pruning` and exported like any other kprune model.
        Layers nested in a non-prunable composite layer carry their masked
        weights without a wrapper (a warning names them).

    Raises:
        ValueError: unknown method, bad sparsity or granularity, missing or
            unusable calibration data, an already pruned or subclassed model,
            unknown names in `ignore`, nothing to prune, or a layer whose
            shape does not fit the granularity.
        TypeError: `model` is not a Keras model, or an argument has the
            wrong type.

    Example:
    ```python
    sparse = kprune.prune_post_training(
        model, x_train[:512], method="sparsegpt", granularity=kprune.NM(2, 4))
    sparse.compile(...)            # optional: fine-tune, masks stay fixed
    plain = kprune.strip_pruning(sparse)
    ```
    """
    if method not in METHODS:
        raise ValueError(
            f"method must be one of {sorted(METHODS)}, got {method!r}."
        )
    granularity = masking.get_granularity(granularity)
    if isinstance(granularity, masking.Channel):
        raise ValueError(
            "granularity=kprune.Channel(...) is structured pruning; use "
            "kprune.structured for filter pruning. prune_post_training takes "
            "'unstructured', kprune.NM(n, m) or kprune.Block((r, c))."
        )
    if sparsity is None:
        sparsity = granularity.n / granularity.m if isinstance(granularity, masking.NM) else 0.5
    sparsity = checks.check_sparsity("sparsity", sparsity)
    if isinstance(damping, bool) or not isinstance(damping, (int, float)) or damping < 0:
        raise ValueError(f"damping must be a non-negative number, got {damping!r}.")
    for name, value in (("batch_size", batch_size), ("block_size", block_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if comparison not in ("output", "layer"):
        raise ValueError(f"comparison must be 'output' or 'layer', got {comparison!r}.")
    if num_batches is not None and (
        isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1
    ):
        raise ValueError(f"num_batches must be a positive integer or None, got {num_batches!r}.")
    model_tree.check_clonable(model, "prune_post_training")
    if isinstance(model, keras.layers.Layer) and not isinstance(model, keras.Model):
        raise TypeError(
            f"prune_post_training takes a model, got the layer '{model.name}'; "
            f"wrap it in a keras.Sequential([keras.Input(...), layer])."
        )
    if model_tree.find_wrappers(model):
        raise ValueError(
            f"Model '{model.name}' is already pruned (it contains PruneWrapper "
            f"layers). Call kprune.strip_pruning(model) first to re-prune it."
        )
    needs_data = METHODS[method]
    if needs_data and calibration_data is None:
        raise ValueError(
            f"method={method!r} needs calibration_data (a few hundred inputs "
            f"of the model, e.g. x_train[:512]); method='magnitude' needs none."
        )
    batches = (
        _batches(model, calibration_data, batch_size, num_batches)
        if calibration_data is not None else []
    )

    # The working copy: layers are pruned in it one after the other, so each
    # layer's statistics come from the already pruned earlier layers.
    work = model_tree.clone_layers(model, model_tree.fresh_copy)
    paths = _path_map(model, work)
    groups, left_dense, calls = _find_units(work, ignore, batches[0] if batches else None)
    units = [layer for group in groups for layer in group]
    if not units:
        raise ValueError(
            f"Model '{model.name}' has no layer prune_post_training can prune "
            f"(Dense, EinsumDense, Conv1D, Conv2D, also inside composite "
            f"layers); left dense: {left_dense or 'nothing'}."
        )
    views = {}
    for layer in units:
        views[id(layer)] = view = kernel_view(layer)
        _check_granularity(granularity, view, layer, method)

    bar = keras.utils.Progbar(len(units), verbose=verbose, unit_name="layer")
    updates = {}
    for group in groups:
        if method == "magnitude":
            all_stats = [None] * len(group)
        else:
            all_stats = _statistics(work, group, views, batches, full=(method == "sparsegpt"),
                                    stop_early=all(calls[id(l)] == 1 for l in group))
        for layer, stats in zip(group, all_stats):
            view = views[id(layer)]
            kernel = _value(layer.kernel)
            mask, new = _prune_one(layer, view, view.to_2d(kernel), stats, method, sparsity,
                                   granularity, block_size, damping, comparison == "output")
            new = new.astype(kernel.dtype)
            layer.kernel.assign(new)
            updates[paths[id(layer.kernel)]] = (mask, new)
            bar.add(1)

    pruned, unwrapped = _apply(model, updates, with_unwrapped=True)
    if left_dense or unwrapped:
        lines = []
        if left_dense:
            lines.append("left dense: " + "; ".join(f"'{n}' ({why})" for n, why in left_dense))
        if unwrapped:
            lines.append(
                "pruned as masked weights WITHOUT a PruneWrapper (nested in a "
                "composite layer; exact zeros now, but fine-tuning would not "
                "keep them zero): " + ", ".join(unwrapped)
            )
        warnings.warn("kprune.prune_post_training: " + ". ".join(lines) + ".", stacklevel=2)
    if verbose:
        kept = sum(int(m.sum()) for m, _ in updates.values())
        total = sum(m.size for m, _ in updates.values())
        print(
            f"kprune: {method} pruned {total - kept}/{total} weights (sparsity "
            f"{1 - kept / total:.4f}) in {len(updates)} kernels"
            + (f" with {len(batches)} calibration batch(es)" if method != "magnitude" else "")
            + (f"; {len(left_dense)} layer(s) left dense" if left_dense else "")
        )
    return pruned


def _prune_one(layer, view, w2, stats, method, sparsity, granularity, block_size, damping,
               per_output=True):
    """`(mask, new_kernel)` of one layer, in the kernel's own shape."""
    if method == "magnitude":
        mask2, new2 = magnitude(w2, sparsity, granularity, view.in_length)
    elif method == "wanda":
        mask2, new2 = wanda(w2, stats, sparsity, granularity, view.in_length, per_output)
    else:
        try:
            mask2, new2 = sparsegpt(w2, stats, sparsity, granularity, block_size, damping,
                                    view.in_length)
        except np.linalg.LinAlgError as e:
            raise ValueError(
                f"SparseGPT: X^T X of layer '{layer.path}' is not positive "
                f"definite even after damping={damping} ({e}); pass a larger "
                f"damping, e.g. damping=0.1."
            ) from None
    return view.from_2d(mask2), view.from_2d(new2 * mask2)


# --------------------------------------------------------------------------
# (i) Capture: the inputs of one layer, batch by batch
# --------------------------------------------------------------------------


class _StopForward(Exception):
    """Raised by a recorder to end a forward pass once it has its input."""

    # Keras adds argument info to exceptions raised in call(), re-creating
    # them; this marks the exception as already annotated.
    _keras_call_info_injected = True


@contextlib.contextmanager
def capture_inputs(layers, callback, stop_after=None):
    """Records the first call argument of `layers` while the block runs.

    The layers' `call` is temporarily replaced (on the instances) by a
    function that hands the input to `callback(layer, input)` and then calls
    the original. It works for any model kind, also for layers nested inside
    composite layers or subclassed models. The original `call` is restored on
    exit, also on errors.

    Args:
        layers: the Keras layers to watch.
        callback: `callback(layer, inputs)`, called on every call of a
            watched layer with the tensor it received.
        stop_after: optional layer; the forward pass is ended (quietly, the
            context manager swallows it) right after its input is recorded,
            which saves running the rest of the model.

    Example:
    ```python
    seen = []
    with kprune.methods.post_training.capture_inputs([dense], lambda l, x: seen.append(x)):
        model(x_batch)
    ```
    """
    layers = list(layers)
    saved = []
    try:
        for layer in layers:
            had = "call" in layer.__dict__
            original = layer.call
            saved.append((layer, had, layer.__dict__.get("call")))
            object.__setattr__(layer, "call", _recorder(layer, original, callback,
                                                         layer is stop_after))
        try:
            yield
        except _StopForward:
            pass
    finally:
        for layer, had, previous in saved:
            if had:
                object.__setattr__(layer, "call", previous)
            else:
                object.__delattr__(layer, "call")


def _recorder(layer, original, callback, stop):
    arg = _first_arg_name(original)

    def call(*args, **kwargs):
        inputs = args[0] if args else kwargs.get(arg)
        callback(layer, inputs)
        if stop:
            raise _StopForward()
        return original(*args, **kwargs)

    return call


def _first_arg_name(fn):
    import inspect

    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            return p.name
    return None


def layer_inputs(model, layer, batches, stop_early=True):
    """Yields, batch by batch, the inputs that `layer` receives in `model`.

    For a layer of the model's own functional graph, a sub-model from the
    model's inputs to the layer's input is run. For any other layer (nested
    in a composite layer or a nested model, or a layer called several times)
    the model runs with `capture_inputs` and stops right after the layer's
    input is seen (for a layer called several times, e.g. a shared layer,
    the whole forward pass runs and every call is yielded).

    Args:
        model: the model, in its current state (e.g. partly pruned).
        layer: a layer called by `model`.
        batches: iterable of model inputs.
        stop_early: end each forward pass once the layer's input is seen
            (pass False for a layer called several times per forward pass).

    Yields:
        numpy arrays, the layer's first call argument.
    """
    sub = _sub_model(model, layer)
    for x in batches:
        if sub is not None:
            yield _value(sub(x, training=False))
            continue
        seen = []
        with capture_inputs([layer], lambda _, t: seen.append(_value(t)),
                            stop_after=layer if stop_early else None):
            model(x, training=False)
        yield from seen


def _sub_model(model, layer):
    """`keras.Model(model.inputs, layer.input)`, for a layer of its graph."""
    if not model_tree.is_graph_model(model) and not isinstance(model, keras.Sequential):
        return None
    if layer not in model.layers or len(layer._inbound_nodes) != 1:
        return None
    try:
        # Sequential: one input; functional: the input structure (a dict for
        # KerasHub backbones), so the sub-model takes the same batches.
        inputs = model.inputs[0] if isinstance(model, keras.Sequential) else model.input
        return keras.Model(inputs, layer.input)
    except (ValueError, AttributeError, TypeError):
        return None


def _statistics(model, layers, views, batches, full, stop_early=True):
    """Per layer: `X^T X` (`full`) or `sum_rows x^2` per input, in float64.

    One layer: `layer_inputs`. Several layers reading the same tensor: one
    intercepted forward pass per batch serves them all.
    """
    acc = {id(l): None for l in layers}

    def add(layer, x):
        x2 = views[id(layer)].inputs_2d(x)
        part = x2.T @ x2 if full else np.einsum("ri,ri->i", x2, x2)
        key = id(layer)
        acc[key] = part if acc[key] is None else acc[key] + part

    if len(layers) == 1:
        for x in layer_inputs(model, layers[0], batches, stop_early):
            add(layers[0], x)
    else:
        for x in batches:
            with capture_inputs(layers, add, stop_after=layers[-1]):
                model(x, training=False)
    for layer in layers:
        if acc[id(layer)] is None:
            raise ValueError(f"Layer '{layer.path}' received no input from the calibration data.")
    return [acc[id(l)] for l in layers]


# --------------------------------------------------------------------------
# 2-D views of kernels and inputs
# --------------------------------------------------------------------------


class KernelView:
    """How a layer's kernel and inputs map to the `[in, out]` / `[rows, in]` views.

    Attributes:
        kernel_shape: the kernel's shape.
        perm: kernel axes in view order (input axes first, then outputs).
        n_in, n_out: the 2-D view's size.
        in_length: length of the kernel's input axis (`Layout.in_axis`), the
            last of the input axes: N:M groups are runs of `m` consecutive
            view rows inside each segment of `in_length` rows.
        engine_view: whether the view equals the mask engine's Block view
            `[prod(shape[:-1]), shape[-1]]`.
        inputs_2d: `fn(x) -> [rows, n_in]` float64 array.
    """

    def __init__(self, kernel_shape, perm, n_in_axes, in_length, inputs_2d):
        self.kernel_shape = tuple(int(d) for d in kernel_shape)
        self.perm = tuple(perm)
        permuted = [self.kernel_shape[a] for a in self.perm]
        self.n_in = int(np.prod(permuted[:n_in_axes]))
        self.n_out = int(np.prod(permuted[n_in_axes:]))
        self.in_length = int(in_length)
        self.engine_view = self.perm == tuple(range(len(kernel_shape))) and (
            len(kernel_shape) - n_in_axes == 1
        )
        self.inputs_2d = inputs_2d
        self._permuted = tuple(permuted)

    def to_2d(self, kernel):
        return np.transpose(np.asarray(kernel), self.perm).reshape(self.n_in, self.n_out)

    def from_2d(self, matrix):
        return np.transpose(np.asarray(matrix).reshape(self._permuted), np.argsort(self.perm))


def kernel_view(layer):
    """The `KernelView` of a Dense, EinsumDense, Conv1D or Conv2D layer.

    Raises:
        ValueError: the layer is of another type, grouped, or an EinsumDense
            whose equation is not a plain contraction.
    """
    shape = tuple(layer.kernel.shape)
    if isinstance(layer, keras.layers.Dense):
        return KernelView(shape, (0, 1), 1, shape[0],
                          lambda x: _f64(x).reshape(-1, shape[0]))
    if isinstance(layer, keras.layers.EinsumDense):
        return _einsum_view(layer, shape)
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D)):
        if getattr(layer, "groups", 1) != 1:
            raise ValueError(f"Layer '{layer.path}': grouped convolutions (groups={layer.groups}) are not supported.")
        rank = len(shape) - 2
        return KernelView(shape, tuple(range(len(shape))), rank + 1, shape[-2],
                          lambda x: _im2col(layer, x, rank))
    raise ValueError(
        f"Layer '{layer.name}' ({type(layer).__name__}) is not a Dense, "
        f"EinsumDense, Conv1D or Conv2D layer."
    )


def _einsum_view(layer, shape):
    inputs, output = layer.equation.replace(" ", "").split("->")
    lhs, kernel = inputs.split(",")
    if "..." in kernel or len(kernel) != len(shape):
        raise ValueError(f"EinsumDense '{layer.path}': equation {layer.equation!r} is not supported.")
    contracted = [i for i, c in enumerate(kernel) if c in lhs and c not in output]
    produced = [i for i, c in enumerate(kernel) if c in output and c not in lhs]
    if not contracted or not produced or len(contracted) + len(produced) != len(kernel):
        raise ValueError(
            f"EinsumDense '{layer.path}': equation {layer.equation!r} is not a "
            f"contraction of input axes into output axes (it has shared or "
            f"summed-out kernel axes)."
        )
    letters = [kernel[i] for i in contracted]
    n_in = int(np.prod([shape[i] for i in contracted]))

    def inputs_2d(x):
        x = _f64(x)
        labels = list(lhs)
        if "..." in lhs:
            before, after = lhs.split("...")
            extra = x.ndim - len(before) - len(after)
            labels = list(before) + [None] * extra + list(after)
        axes = [labels.index(c) for c in letters]
        rest = [a for a in range(x.ndim) if a not in axes]
        return np.transpose(x, rest + axes).reshape(-1, n_in)

    return KernelView(shape, contracted + produced, len(contracted), shape[contracted[-1]], inputs_2d)


def _im2col(layer, x, rank):
    """Patches `[rows, k... * c_in]` in the kernel's `(k..., c_in)` order."""
    x = _f64(x)
    if layer.data_format == "channels_first":
        x = np.moveaxis(x, 1, -1)
    kernel = tuple(layer.kernel_size)
    strides = tuple(layer.strides)
    dilation = tuple(layer.dilation_rate)
    padding = layer.padding
    pads = [(0, 0)]
    for d in range(rank):
        size, k, s, r = x.shape[1 + d], kernel[d], strides[d], dilation[d]
        span = (k - 1) * r + 1
        if padding == "valid":
            pads.append((0, 0))
        elif padding == "causal":
            pads.append((span - 1, 0))
        else:  # "same", as TF: the extra pixel goes after
            out = -(-size // s)
            total = max((out - 1) * s + span - size, 0)
            pads.append((total // 2, total - total // 2))
    pads.append((0, 0))
    x = np.pad(x, pads)
    spans = tuple((kernel[d] - 1) * dilation[d] + 1 for d in range(rank))
    windows = np.lib.stride_tricks.sliding_window_view(x, spans, axis=tuple(range(1, 1 + rank)))
    # windows: [batch, out..., c_in, span...]; take strides and dilations.
    index = (slice(None),) + tuple(slice(None, None, s) for s in strides) + (slice(None),)
    index += tuple(slice(None, None, r) for r in dilation)
    windows = windows[index]
    # -> [batch, out..., k..., c_in]
    windows = np.moveaxis(windows, 1 + rank, -1)
    return windows.reshape(-1, int(np.prod(kernel)) * x.shape[-1])


def _f64(x):
    return np.asarray(_value(x), dtype=np.float64)


# --------------------------------------------------------------------------
# (ii) Per-layer math, pure numpy on the [in, out] view
# --------------------------------------------------------------------------


def select(scores, sparsity, granularity=None, in_length=None, per_output=False):
    """Keep-mask of a `[in, out]` score matrix, through the mask engine.

    Args:
        scores: `[in, out]` scores, higher = keep.
        sparsity: fraction to remove.
        granularity: `Unstructured` (default), `NM` or `Block`.
        in_length: length of the kernel's input axis (default `in`): N:M
            groups are `m` consecutive rows within each run of `in_length`
            rows (for a Conv kernel `[kh, kw, c_in, c_out]`, `c_in`).
        per_output: unstructured only: every output column keeps its own
            `round(in * (1 - sparsity))` weights (Wanda's comparison group)
            instead of one threshold over the matrix.

    Returns:
        A bool `[in, out]` mask.
    """
    scores = np.asarray(scores)
    granularity = masking.get_granularity(granularity)
    n_in, n_out = scores.shape
    if isinstance(granularity, masking.NM):
        length = n_in if in_length is None else int(in_length)
        grouped = scores.reshape(n_in // length, length, n_out)
        mask = masking.compute_mask(grouped, sparsity, granularity, masking.Layout(in_axis=1, out_axis=2))
        return mask.reshape(n_in, n_out)
    if isinstance(granularity, masking.Unstructured) and per_output:
        mask = np.empty(scores.shape, dtype=bool)
        for j in range(n_out):
            mask[:, j] = masking.compute_mask(scores[:, j], sparsity)
        return mask
    return masking.compute_mask(scores, sparsity, granularity, masking.DENSE_LAYOUT)


def magnitude(w, sparsity, granularity=None, in_length=None):
    """Magnitude pruning of one `[in, out]` matrix (one threshold per tensor).

    Returns:
        `(mask, w * mask)`.

    Example:
    >>> mask, w_new = magnitude(np.array([[1.0, -3.0], [2.0, 0.5]]), 0.5)
    >>> mask
    array([[False,  True],
           [ True, False]])
    """
    w = np.asarray(w, dtype=np.float64)
    mask = select(np.abs(w), sparsity, granularity, in_length)
    return mask, w * mask


def wanda_scores(w, sq_norms):
    """Wanda's scores `|W_ij| * ||X_i||_2` for an `[in, out]` matrix.

    Args:
        w: `[in, out]` weights.
        sq_norms: `[in]`, `sum over rows of x_i^2` (the squared L2 norm of
            every input feature over the calibration data).
    """
    norms = np.sqrt(np.asarray(sq_norms, dtype=np.float64))
    return np.abs(np.asarray(w, dtype=np.float64)) * norms[:, None]


def wanda(w, sq_norms, sparsity, granularity=None, in_length=None, per_output=True):
    """Wanda (Sun et al. 2024) on one `[in, out]` matrix.

    Unstructured: each output column keeps its `round(in * (1 - s))` best
    scores. N:M and Block: the engine's groups. Kept weights are unchanged.

    Args:
        w: `[in, out]` weights.
        sq_norms: `[in]` sums of squared inputs (or the diagonal of `X^T X`).
        sparsity, granularity, in_length: as for `select`.
        per_output: unstructured only: compare within each output unit (the
            paper's default) or, if False, over the whole matrix.

    Returns:
        `(mask, w * mask)`.

    Example:
    >>> x = np.random.randn(64, 8); w = np.random.randn(8, 4)
    >>> mask, w_new = wanda(w, (x ** 2).sum(0), 0.5)
    >>> mask.sum(axis=0)
    array([4, 4, 4, 4])
    """
    w = np.asarray(w, dtype=np.float64)
    sq = np.asarray(sq_norms, dtype=np.float64)
    if sq.ndim == 2:
        sq = np.diag(sq)
    mask = select(wanda_scores(w, sq), sparsity, granularity, in_length, per_output=per_output)
    return mask, w * mask


def sparsegpt(w, hessian, sparsity, granularity=None, block_size=128, damping=0.01, in_length=None):
    """SparseGPT (Frantar & Alistarh 2023) on one `[in, out]` matrix.

    Args:
        w: `[in, out]` weights.
        hessian: `[in, in]`, `X^T X` over the calibration rows (any positive
            scale: the damping is relative to its mean diagonal).
        sparsity: fraction to remove.
        granularity: `Unstructured` (default; one threshold per lazy batch of
            `block_size` inputs, the paper's adaptive mask selection),
            `NM(n, m)` (chosen at the start of every group of `m` inputs) or
            `Block((r, c))` (one threshold per lazy batch of whole blocks).
        block_size: inputs per lazy batch (the paper's B = 128).
        damping: added to the diagonal as `damping * mean(diag H)`.
        in_length: as for `select` (N:M groups).

    Returns:
        `(mask, w_new)`: bool `[in, out]` and the reconstructed weights,
        zero where the mask is False.

    Example:
    >>> x = np.random.randn(256, 16); w = np.random.randn(16, 8)
    >>> mask, w_new = sparsegpt(w, x.T @ x, 0.5)
    >>> float(np.linalg.norm(x @ w - x @ w_new)) < float(np.linalg.norm(x @ (w * mask) - x @ w))
    True
    """
    granularity = masking.get_granularity(granularity)
    # The reference's [out, in] orientation: rows are output units.
    weights = np.array(np.asarray(w, dtype=np.float64).T)
    rows, cols = weights.shape
    h = np.array(hessian, dtype=np.float64)
    if h.shape != (cols, cols):
        raise ValueError(f"hessian must be [{cols}, {cols}] for w of shape {np.shape(w)}, got {h.shape}.")
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    weights[:, dead] = 0.0
    h[np.diag_indices(cols)] += damping * np.mean(np.diag(h))
    # U: upper Cholesky factor of H^-1 (H^-1 = U^T U).
    u = np.linalg.cholesky(np.linalg.inv(h)).T
    length = cols if in_length is None else int(in_length)
    mask = np.ones((rows, cols), dtype=bool)
    nm = isinstance(granularity, masking.NM)
    starts = _batch_starts(cols, block_size, granularity, length)
    for i1, i2 in zip(starts[:-1], starts[1:]):
        w1 = weights[:, i1:i2].copy()
        u1 = u[i1:i2, i1:i2]
        err1 = np.zeros_like(w1)
        diag = np.diag(u1)
        if not nm:
            scores = w1 ** 2 / diag[None, :] ** 2
            mask[:, i1:i2] = select(scores.T, sparsity, granularity).T
        for i in range(i2 - i1):
            col = i1 + i
            if nm and (col % length) % granularity.m == 0:
                g = min(granularity.m, length - col % length)
                scores = w1[:, i:i + g] ** 2 / diag[None, i:i + g] ** 2
                mask[:, col:col + g] = masking.compute_mask(
                    scores, sparsity, granularity, masking.Layout(in_axis=-1, out_axis=0))
            q = np.where(mask[:, col], w1[:, i], 0.0)
            e = (w1[:, i] - q) / diag[i]
            w1[:, i:] -= np.outer(e, u1[i, i:])
            w1[:, i] = q
            err1[:, i] = e
        weights[:, i1:i2] = w1
        weights[:, i2:] -= err1 @ u[i1:i2, i2:]
    weights[~mask] = 0.0
    return mask.T.copy(), weights.T.copy()


def _batch_starts(cols, block_size, granularity, length):
    """Lazy-batch boundaries that never split an N:M group or a Block row."""
    if isinstance(granularity, masking.NM):
        # group starts: every m within each segment of `length` inputs
        group = np.array([c for c in range(cols) if (c % length) % granularity.m == 0] + [cols])
    elif isinstance(granularity, masking.Block):
        r = granularity.block_shape[0]
        group = np.array(list(range(0, cols, r)) + [cols])
    else:
        group = np.arange(cols + 1)
    starts = [0]
    while starts[-1] < cols:
        target = starts[-1] + block_size
        nxt = group[group >= target]
        starts.append(int(nxt[0]) if nxt.size else cols)
    return starts


# --------------------------------------------------------------------------
# (iii) The driver's helpers and the returned model
# --------------------------------------------------------------------------


def _updates_nested_layers(model, updates):
    """Whether an updated weight belongs to a layer no `PruneWrapper` reaches."""

    if not isinstance(model, keras.Model):
        return False
    return any(
        not top and any(w.path in updates for w, _ in prunable_weights(layer))
        for layer, _, top in model_tree.prunable_layer_tree(model)
    )


def _apply_in_tree(model, updates):
    """`_apply` for models whose prunable layers sit inside composite layers
    (KerasHub transformer blocks) or subclassed models: a `kprune.PrunedModel`
    over a copy of `model`, with fixed masks on every layer that has an
    updated weight, so the result fine-tunes with exact zeros like any other."""

    paths = [v.path for v in model.weights]
    unknown = sorted(set(updates) - set(paths))
    if unknown:
        raise ValueError(f"_apply: no variable with path(s) {unknown} in model '{model.name}'.")
    targets = [
        label for layer, label, _ in model_tree.prunable_layer_tree(model)
        if any(w.path in updates for w, _ in prunable_weights(layer))
    ]
    copy = model_tree.copy_model(model)
    path_of = {id(v): path for v, path in zip(copy.weights, paths)}
    pruned = PrunedModel(copy, [{"layer": label, "index": model_tree.tree_index(model, label),
                                 "pruning_schedule": None} for label in targets])
    masks = []
    for group in pruned.groups:
        group_masks = []
        for w in group.prunable_weights:
            update = updates.get(path_of[id(w)])
            if update is None:
                group_masks.append(np.ones(tuple(w.shape), bool))
            else:
                mask, weight = update
                w.assign(np.asarray(weight, np.dtype(w.dtype)))
                group_masks.append(np.asarray(mask, bool))
        masks.append(group_masks)
    assign_masks(pruned.groups, masks)
    return pruned


def _apply(model, updates, with_unwrapped=False):
    """A copy of `model` with new masked kernels: `{variable.path: (mask, w)}`.

    Paths are those of `model`'s variables. In a graph model whose prunable
    layers are all nodes of the graph, each one goes into a fixed-mask
    `PruneWrapper` (its other pruned weights get all-ones masks). A model with
    prunable layers inside composite layers or subclassed models becomes a
    `kprune.PrunedModel` with fixed masks (`_apply_in_tree`). `model` is not
    modified.

    Returns:
        The new model (and, with `with_unwrapped`, the sorted paths of the
        variables pruned without a wrapper).
    """
    if _updates_nested_layers(model, updates):
        pruned = _apply_in_tree(model, updates)
        return (pruned, []) if with_unwrapped else pruned
    leaves = model_tree.leaf_layers(model)
    where = {}
    for leaf in leaves:
        for index, variable in enumerate(leaf.weights):
            where[variable.path] = (leaf, index)
    unknown = sorted(set(updates) - set(where))
    if unknown:
        raise ValueError(f"_apply: no variable with path(s) {unknown} in model '{model.name}'.")
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


def _path_map(model, work):
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


def _find_units(work, ignore, first_batch):
    """The layers to prune, in call order, and `(name, why)` of those left dense."""
    ignore = checks.normalize_ignore(ignore)
    leaves = model_tree.leaf_layers(work)
    candidates, left_dense, names = [], [], set()
    for leaf in leaves:
        for layer in [leaf, *model_tree.all_layers(leaf)]:
            names.add(layer.name)

    def ignored(layer):
        return layer.name in ignore["names"] or bool(
            ignore["types"] and isinstance(layer, ignore["types"]))

    def walk(layer, top):
        if ignored(layer):  # the layer and everything inside it stays dense
            return
        if isinstance(layer, _SUPPORTED) and layer.weights:
            try:
                kernel_view(layer)
                candidates.append(layer)
            except ValueError as e:
                left_dense.append((layer.name if top else layer.path, str(e)))
            return
        if is_prunable(layer) and layer.weights and not any(
                isinstance(s, _SUPPORTED) for s in model_tree.all_layers(layer)):
            left_dense.append((layer.name if top else layer.path,
                               f"{type(layer).__name__}: not covered by one-shot pruning"))
            return
        for sub in model_tree.sublayers(layer):
            walk(sub, False)

    for leaf in leaves:
        walk(leaf, True)
    unknown = sorted(n for n in ignore["names"] if n not in names)
    if unknown:
        raise ValueError(
            f"Unknown layer name(s) {unknown} in ignore; the model's layers "
            f"(nested ones included) are {sorted(names)}."
        )
    candidates = list({id(c): c for c in candidates}.values())
    if first_batch is None:
        return [[c] for c in candidates], left_dense, {id(c): 1 for c in candidates}
    # One forward pass gives the call order, and which layers see inputs.
    order = []
    with capture_inputs(candidates, lambda layer, t: order.append((layer, t))):
        _run(work, first_batch)
    counts = {}
    for layer, _ in order:
        counts[id(layer)] = counts.get(id(layer), 0) + 1
    for layer in candidates:
        if id(layer) not in counts:
            left_dense.append((layer.path, "not called on the calibration data: its inputs are not seen"))
    return _groups(order, counts), left_dense, counts


def _groups(order, counts):
    """Units in first-call order, grouped when they read the same tensor.

    Consecutive calls on the very same input tensor (the query, key and
    value projections of self-attention) cannot depend on each other's
    pruning, so one capture pass serves the whole group. Layers called
    several times per forward pass stay alone.
    """
    groups, seen, previous = [], set(), None
    for layer, tensor in order:
        if id(layer) in seen:
            previous = None
            continue
        seen.add(id(layer))
        single = counts[id(layer)] == 1
        if groups and previous is not None and tensor is previous and single and all(
                counts[id(l)] == 1 for l in groups[-1]):
            groups[-1].append(layer)
        else:
            groups.append([layer])
        previous = tensor
    return groups


def _run(model, x):
    try:
        return model(x, training=False)
    except Exception as e:  # noqa: BLE001 - re-raised with the model's name
        raise ValueError(f"Model '{model.name}' could not run on the calibration data: {e}") from e


def _check_granularity(granularity, view, layer, method):
    name = f"layer '{layer.path}' kernel"
    if isinstance(granularity, masking.NM):
        try:
            granularity.validate((view.in_length, view.n_out), masking.DENSE_LAYOUT,
                                 name=f"{name} (input axis of length {view.in_length})")
        except ValueError as e:
            raise ValueError(f"{e} Leave this layer dense with ignore=[{layer.name!r}].") from None
    elif isinstance(granularity, masking.Block):
        if not view.engine_view:
            raise ValueError(
                f"Block granularity needs a kernel laid out as [inputs..., "
                f"output]; {name} has shape {view.kernel_shape} (equation "
                f"{getattr(layer, 'equation', '?')!r}). Leave it dense with "
                f"ignore=[{layer.name!r}]."
            )
        try:
            granularity.validate(view.kernel_shape, name=name)
        except ValueError as e:
            raise ValueError(f"{e} Leave this layer dense with ignore=[{layer.name!r}].") from None


def _batches(model, data, batch_size, num_batches):
    """The calibration inputs as a list of model-input batches (`kprune.core.calibration`)."""
    return calibration.as_batches(data, batch_size=batch_size, max_batches=num_batches,
                                  targets="drop", model=model, name="calibration_data")


def _value(x):
    return np.asarray(keras.ops.convert_to_numpy(x))
