"""The one-shot driver: `prune_post_training`, block by block.

The run, in order (nothing is changed before step 4):

1. Check the arguments; turn the calibration data into batches.
2. Find the layers to prune (`blocks.find_units`) and the sequential blocks
   (`blocks.find_blocks`); one forward pass on the first batch gives the call
   order and checks that the blocks form a chain (`blocks.discover`).
3. Estimate the memory the run adds and refuse it, before any work, when it
   exceeds the available memory (`memory.check_memory`).
4. The one model written to: the user's model itself (`in_place=True`) or
   one copy of it (default; the caller's model is not modified).
5. Layers before the first block: pruned layer group by layer group with
   forward passes of the whole model (stopped at the layer).
6. Block by block, as the SparseGPT / Wanda reference code and Keras' GPTQ
   do: the calibration inputs of block 0 are cached (`capture.BlockInputs`);
   for each block its layers are captured and pruned in call order inside
   the block (consecutive layers reading the same tensor share one pass),
   then the block runs once more on the cached inputs to give the next
   block's inputs. Time grows linearly with depth; memory holds one block's
   activations. Finished blocks are written to `checkpoint_dir`.
7. Layers after the last block (and every layer of a model without blocks):
   as step 5.
8. Fixed masks where the pruned layers are (`result`), unless `in_place`.
"""

from __future__ import annotations

import hashlib
import warnings

import keras
import numpy as np

from kprune.core import checks, masking, model_tree
from kprune.methods.one_shot.blocks import Plan, discover, find_blocks, find_units, groups
from kprune.methods.one_shot.capture import BlockInputs, calibration_batches, statistics
from kprune.methods.one_shot.checkpoint import Checkpoint
from kprune.methods.one_shot.config import OneShotConfig
from kprune.methods.one_shot.kernel_views import kernel_view, to_numpy
from kprune.methods.one_shot.magnitude import magnitude
from kprune.methods.one_shot.memory import Estimate, check_memory, weight_bytes
from kprune.methods.one_shot.result import apply_updates, path_map, tree_targets, wrap_tree
from kprune.methods.one_shot.sparsegpt import sparsegpt
from kprune.methods.one_shot.wanda import wanda
from kprune.utils.progress import Progress
from kprune.core.pruned_model import copy_model, prunable_layer_tree
from kprune.core.wrapper import prunable_weights

__all__ = ["prune_post_training", "prune_layer"]

_CONV = (keras.layers.Conv1D, keras.layers.Conv2D)


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
    comparison="auto",
    in_place=False,
    checkpoint_dir=None,
    max_memory=None,
    quantize=None,
    verbose=1,
):
    """Prunes a trained model one-shot, block by block, without retraining.

    Args:
        model: a built `keras.Sequential` or functional model (KerasHub
            backbones and `*CausalLM` task models are functional). It is not
            modified (nor on failure) unless `in_place=True`.
        calibration_data: inputs of the model, examples on the first axis: an
            array, or a dict / list of arrays for several inputs (split into
            batches of `batch_size`); or an iterable / `tf.data.Dataset` of
            such batches, or of `(x, y)` / `(x, y, sample_weight)` tuples of
            which `x` is used. Needed for `"wanda"` and `"sparsegpt"`.
        method: `"magnitude"`, `"wanda"` or `"sparsegpt"` (see
            `kprune.methods.one_shot` for the exact definitions).
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
            `"auto"` (default: one threshold per kernel in convolutional
            networks, where per-output comparison lost to magnitude on the
            MNIST CNN at 70% (docs/post_training.md); per output unit in
            other models, as the paper does for language models), `"output"`
            or `"layer"`.
        in_place: write the pruned weights into `model` itself and return it
            (no copy, no mask variables: for models close to the memory's
            size). The zeros are exact but not kept by fine-tuning; if the
            run fails part-way, the blocks already finished stay pruned
            (with `checkpoint_dir`, a rerun resumes after them).
        checkpoint_dir: a folder where every finished block is saved; a
            rerun with the same settings loads those blocks instead of
            pruning them again.
        max_memory: bytes the run may add to the loaded model (default: the
            memory the system reports available). The estimate is checked
            before any work.
        quantize: None (default), `"int8"` or `"int4"`: SparseGPT's joint
            mode: every pruned layer's kept weights are also rounded to
            Keras' symmetric per-output-channel grid in the same column
            sweep, and the layer becomes Keras' own weight-only quantized
            layer (`layer.quantize("int8" | "int4")`, int4 per channel,
            `block_size=-1`); its zeros are exact zeros of the integer
            kernel. The result has no mask variables (see
            docs/one_shot.md, "Sparse and quantized").
        verbose: 1 shows progress (per block, or per layer for a model
            without blocks) and a one-line summary, 0 is silent.

    Returns:
        The pruned model. By default a new model: pruned layers of the model
        graph are `kprune.PruneWrapper`s with fixed masks
        (`pruning_schedule=None`); a model whose pruned layers sit inside
        composite layers (KerasHub) is a `kprune.PrunedModel` with fixed
        masks. Both fine-tune with their zeros kept, strip with
        `kprune.strip_pruning` and export like any kprune model. With
        `in_place=True`, `model` itself.

    Raises:
        ValueError: unknown method, bad sparsity or granularity, missing or
            unusable calibration data, an already pruned or subclassed model,
            unknown names in `ignore`, nothing to prune, a layer whose shape
            does not fit the granularity, or a `checkpoint_dir` of another run.
        TypeError: `model` is not a Keras model, or an argument has the
            wrong type.
        MemoryError: the estimate exceeds the available memory (or
            `max_memory`); nothing was done.

    Example:
    ```python
    sparse = kprune.prune_post_training(
        model, x_train[:512], method="sparsegpt", granularity=kprune.NM(2, 4))
    sparse.compile(...)            # optional: fine-tune, masks stay fixed
    plain = kprune.strip_pruning(sparse)
    ```
    """
    config = OneShotConfig.from_arguments(method, sparsity, granularity, damping, block_size,
                                          comparison, quantize)
    checks.check_bool("in_place", in_place)
    if max_memory is not None:
        checks.check_int("max_memory", max_memory, lo=1)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if num_batches is not None and (
        isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1
    ):
        raise ValueError(f"num_batches must be a positive integer or None, got {num_batches!r}.")
    _check_model(model)
    if config.needs_data and calibration_data is None:
        raise ValueError(
            f"method={method!r} needs calibration_data (a few hundred inputs "
            f"of the model, e.g. x_train[:512]); method='magnitude' needs none."
        )
    batches = (calibration_batches(model, calibration_data, batch_size, num_batches)
               if calibration_data is not None else [])

    # What is pruned, in which order, and the memory it takes: read-only.
    candidates, left_dense = find_units(model, ignore)
    plan = _plan(model, candidates, batches, left_dense)
    units = [layer for layer, _ in plan.order] if batches else candidates
    units = list({id(u): u for u in units}.values())
    if not units:
        raise ValueError(
            f"Model '{model.name}' has no layer prune_post_training can prune "
            f"(Dense, EinsumDense, Conv1D, Conv2D, also inside composite "
            f"layers); left dense: {left_dense or 'nothing'}."
        )
    views = {}
    for layer in units:
        views[id(layer)] = kernel_view(layer)
        _check_granularity(config.granularity, views[id(layer)], layer)
    activation = 0
    if plan.blocks and plan.first_block_input is not None:
        activation = plan.first_block_input.nbytes * len(batches)
    estimate = Estimate(weight_bytes(model.weights),
                        weight_bytes([u.kernel for u in units]), views.values(), in_place,
                        activation, config.method,
                        wrap=_nested(model, units) and config.quantize is None,
                        rebuild=not in_place and not _nested(model, units)
                        and config.quantize is None)
    check_memory(estimate, max_memory)

    # The one model written to.
    work = model if in_place else copy_model(model)
    if work is not model:
        del candidates, units, views, plan
        candidates, _ = find_units(work, ignore)
        plan = _plan(work, candidates, batches, [])
        units = [layer for layer, _ in plan.order] if batches else candidates
        units = list({id(u): u for u in units}.values())
        views = {id(layer): kernel_view(layer) for layer in units}
    masks = {}  # id(kernel variable) -> packed mask, shape
    pruner = _LayerPruner(config, views, masks, units)
    ckpt = Checkpoint(checkpoint_dir, dict(
        config.settings(), model=model.name, batches=len(batches), data=_fingerprint(batches),
        blocks=len(plan.blocks), kernels=[list(views[id(u)].kernel_shape) for u in units]))

    if plan.blocks:
        _run_blocks(work, plan, batches, pruner, ckpt, verbose)
    else:
        order = plan.order if batches else [(u, i) for i, u in enumerate(units)]
        counts = plan.counts if batches else {id(u): 1 for u in units}
        with Progress(len(units), f"prune_post_training ({config.method})", verbose=verbose,
                      unit="layer") as bar:
            _run_whole(work, order, counts, batches, pruner, bar)

    unwrapped = []
    if in_place or config.quantize is not None:
        pruned = work
    elif _nested(work, units):
        ids = {id(u.kernel) for u in units}
        updates = {id(u.kernel): (_unpack(masks[id(u.kernel)]), None) for u in units}
        pruned = wrap_tree(work, work, updates, tree_targets(work, ids))
    else:
        paths = path_map(model, work)
        updates = {paths[id(u.kernel)]: (_unpack(masks[id(u.kernel)]), to_numpy(u.kernel))
                   for u in units}
        del work
        pruned, unwrapped = apply_updates(model, updates, with_unwrapped=True)
    _report(model, config, masks, left_dense, unwrapped, len(batches), verbose)
    return pruned


class _LayerPruner:
    """Prunes one layer from its statistics, in place, and records its mask."""

    def __init__(self, config, views, masks, units):
        self.config, self.views, self.masks = config, views, masks
        # comparison="auto": per layer in convolutional networks, per output
        # unit otherwise (the Wanda paper's choice for language models).
        self.per_output_auto = not any(isinstance(u, _CONV) for u in units)

    def __call__(self, layer, stats):
        view = self.views[id(layer)]
        kernel = to_numpy(layer.kernel)
        mask, new = prune_layer(layer, view, view.to_2d(kernel), stats, self.config,
                                self.per_output_auto)
        new = new.astype(kernel.dtype)
        layer.kernel.assign(new)
        self.masks[id(layer.kernel)] = (np.packbits(mask.ravel()), mask.shape)
        if self.config.quantize is not None:
            quantize_layer(layer, self.config.quantize)
        return new, mask

    def restore(self, layer, kernel, mask):
        layer.kernel.assign(kernel)
        self.masks[id(layer.kernel)] = (np.packbits(np.asarray(mask, bool).ravel()), mask.shape)
        if self.config.quantize is not None:
            quantize_layer(layer, self.config.quantize)


def quantize_layer(layer, mode):
    """Turns `layer` into Keras' own weight-only `mode` layer (int4: per channel).

    Its kernel already holds values on Keras' grid (the joint sweep), so
    Keras' rounding keeps them, and zeros stay zeros.
    """
    if mode == "int8":
        config = keras.quantizers.Int8QuantizationConfig(activation_quantizer=None)
    else:
        config = keras.quantizers.Int4QuantizationConfig(activation_quantizer=None, block_size=-1)
    layer.quantize(mode, config=config)


def prune_layer(layer, view, w2, stats, config, per_output_auto=True):
    """`(mask, new_kernel)` of one layer, in the kernel's own shape.

    Args:
        layer: the layer (for its type and name).
        view: its `KernelView`.
        w2: the kernel's `[in, out]` view.
        stats: `X^T X` (SparseGPT; damped in place, so not reusable), the
            squared input norms (Wanda) or None.
        config: the run's `OneShotConfig`.
        per_output_auto: what `comparison="auto"` means for this layer
            (the driver passes False in convolutional networks).
    """
    method, sparsity, granularity = config.method, config.sparsity, config.granularity
    if method == "magnitude":
        mask2, new2 = magnitude(w2, sparsity, granularity, view.in_length)
    elif method == "wanda":
        per_output = config.comparison == "output" or (
            config.comparison == "auto" and per_output_auto)
        mask2, new2 = wanda(w2, stats, sparsity, granularity, view.in_length, per_output)
    else:
        try:
            mask2, new2 = sparsegpt(w2, stats, sparsity, granularity, config.block_size,
                                    config.damping, view.in_length, config.quantize,
                                    overwrite_hessian=True)
        except np.linalg.LinAlgError as e:
            raise ValueError(
                f"SparseGPT: X^T X of layer '{layer.path}' is not positive "
                f"definite even after damping={config.damping} ({e}); pass a larger "
                f"damping, e.g. damping=0.1."
            ) from None
    return view.from_2d(mask2), view.from_2d(new2 * mask2)


def _run_whole(work, order, counts, batches, pruner, bar):
    """Layer groups pruned with forward passes of the whole model."""
    method = pruner.config.method
    for group in groups(order, counts):
        if method == "magnitude":
            all_stats = [None] * len(group)
        else:
            all_stats = statistics(work, group, pruner.views, batches,
                                   full=(method == "sparsegpt"),
                                   stop_early=all(counts[id(l)] == 1 for l in group))
        for layer, stats in zip(group, all_stats):
            pruner(layer, stats)
            bar.update(1)


def _run_blocks(work, plan, batches, pruner, ckpt, verbose):
    method = pruner.config.method
    n = len(plan.blocks)
    steps = n + bool(plan.pre) + bool(plan.post)
    with Progress(steps, f"prune_post_training ({method}, block by block)", verbose=verbose,
                  unit="block") as bar:
        if plan.pre:
            _run_whole(work, plan.pre, plan.counts, batches, pruner, _Null())
            bar.update(1)
        cache = BlockInputs.capture(work, plan.blocks[0], batches)
        for i, block in enumerate(plan.blocks):
            units = [layer for layer, _ in plan.block_units[i]]
            shapes = [tuple(layer.kernel.shape) for layer in units]
            saved = ckpt.load(i, shapes) if units else None
            if saved is not None:
                for layer, (kernel, mask) in zip(units, saved):
                    pruner.restore(layer, kernel, mask)
            elif units:
                results = []
                for group in groups(plan.block_units[i], plan.counts):
                    if method == "magnitude":
                        all_stats = [None] * len(group)
                    else:
                        all_stats = statistics(
                            block, group, pruner.views, cache.entries,
                            full=(method == "sparsegpt"),
                            stop_early=all(plan.counts[id(l)] == 1 for l in group),
                            run=lambda entry, b=block: cache.run(b, entry))
                    for layer, stats in zip(group, all_stats):
                        results.append((id(layer), pruner(layer, stats)))
                by_id = dict(results)
                ckpt.save(i, [by_id[id(layer)] for layer in units])
            if i < n - 1:
                cache.advance(block)
            bar.update(1)
        cache = None  # the last block's inputs are no longer needed
        if plan.post:
            _run_whole(work, plan.post, plan.counts, batches, pruner, _Null())
            bar.update(1)


class _Null:
    def update(self, n=1):
        pass


def _plan(model, candidates, batches, left_dense):
    """`blocks.discover` on the first batch (no blocks without data);
    appends the never-called candidates to `left_dense`."""
    if not batches:
        return Plan()
    plan = discover(model, candidates, find_blocks(model), batches[0])
    for layer in candidates:
        if id(layer) not in plan.counts:
            left_dense.append((layer.path, "not called on the calibration data: its inputs are not seen"))
    return plan


def _nested(model, units):
    """Whether a pruned kernel belongs to a layer no graph `PruneWrapper` reaches."""
    ids = {id(u.kernel) for u in units}
    if not isinstance(model, keras.Model):
        return False
    return any(
        not top and any(id(w) in ids for w, _ in prunable_weights(layer))
        for layer, _, top in prunable_layer_tree(model)
    )


def _unpack(packed):
    bits, shape = packed
    return np.unpackbits(bits, count=int(np.prod(shape))).astype(bool).reshape(shape)


def _fingerprint(batches):
    digest = hashlib.sha1()
    for batch in batches[:1]:
        for array in keras.tree.flatten(batch):
            digest.update(np.ascontiguousarray(to_numpy(array)).tobytes())
    return digest.hexdigest()


def _report(model, config, masks, left_dense, unwrapped, n_batches, verbose):
    left_dense = list(dict.fromkeys(left_dense))  # a tied embedding is seen twice
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
        warnings.warn("kprune.prune_post_training: " + ". ".join(lines) + ".", stacklevel=3)
    if verbose:
        kept = sum(int(np.unpackbits(bits, count=int(np.prod(shape))).sum())
                   for bits, shape in masks.values())
        total = sum(int(np.prod(shape)) for _, shape in masks.values())
        print(
            f"kprune: {config.method} pruned {total - kept}/{total} weights (sparsity "
            f"{1 - kept / total:.4f}) in {len(masks)} kernels"
            + (f" with {n_batches} calibration batch(es)" if config.method != "magnitude" else "")
            + (f"; {len(left_dense)} layer(s) left dense" if left_dense else "")
        )


def _check_model(model):
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


def _check_granularity(granularity, view, layer):
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
