"""tfmot's pruning API on Keras 3, run by kprune: `import kprune.tfmot as tfmot`.

Code written for tensorflow-model-optimization (tfmot) stopped working when
TF 2.16 made Keras 3 the default (tfmot issue #1119). Changing its import
line is enough to run its pruning code on Keras 3:

```python
import kprune.tfmot as tfmot    # was: import tensorflow_model_optimization as tfmot

pruned = tfmot.sparsity.keras.prune_low_magnitude(
    model, pruning_schedule=tfmot.sparsity.keras.PolynomialDecay(0.5, 0.8, 0, 1000))
pruned.compile("adam", "sparse_categorical_crossentropy")
pruned.fit(x, y, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
plain = tfmot.sparsity.keras.strip_pruning(pruned)
```

`tfmot.sparsity.keras` has tfmot's 11 public names with tfmot's signatures
and defaults: `prune_low_magnitude`, `prune_scope`, `strip_pruning`,
`UpdatePruningStep`, `PruningSummaries`, `PruningSchedule`,
`ConstantSparsity`, `PolynomialDecay`, `PrunableLayer`, `PruningPolicy`,
`PruneForLatencyOnXNNPack`. They are thin adapters over kprune's own
functions (`kprune.prune_low_magnitude`, `kprune.PruningCallback`, ...): no
second implementation. tensorflow_model_optimization is never imported.

Where kprune deliberately behaves differently from tfmot (one line each):

* **Sparse checkpoints**: pruned weights are exactly zero in the stored
  variables after every optimizer step (tfmot re-masks on the forward pass,
  so its checkpoints are not sparse, tfmot #206).
* **Exact kept counts**: a tensor keeps exactly `round(n * (1 - s))` weights
  (ties broken by position); tfmot keeps every weight tied with its threshold
  and at least one weight per tensor.
* **Copies**: `prune_low_magnitude` returns new layers with the weights
  copied; tfmot wraps (and shares) the caller's layer objects. (A pruned
  wrapper in a list is passed through as the same object, as in tfmot; in a
  model it is copied with its schedule, masks and step.)
* **Step numbering**: the same as tfmot's (0-based batch `t - 1` trains
  with the masks of step `t`), except that step 0 is applied before the
  first batch (so `initial_sparsity` at `begin_step=0` is; tfmot never
  evaluates step 0), and `end_step` is always an update step.
* **sparsity_m_by_n=(n, m)** is applied once, at the first training step,
  whatever `pruning_schedule` says, as in tfmot (a warning says so when a
  schedule is passed); for an N:M pattern reached gradually use
  `kprune.prune_low_magnitude(..., granularity=kprune.NM(n, m))`.
  `block_size` together with `sparsity_m_by_n` raises (tfmot ignores the block).
* **block_size on Conv kernels** prunes blocks of the `[kh*kw*in, out]` view
  (tfmot raises for weights that are not 2-D).
* **block_size when a dimension is not a multiple of the block**: each block
  is scored by its own weights (tfmot's SAME-padded pooling scores windows
  offset from the blocks its mask covers).
* **Layers without weights inside a model** (Flatten, Dropout, ...; also
  BatchNormalization, LayerNormalization) are left unwrapped: a wrapper
  with nothing to prune adds nothing (tfmot wraps them with no masks). On
  their own or in a list they are wrapped with no masks, as in tfmot.
* **A model with nothing to wrap** (e.g. no layer the pruning policy
  allows) is returned as a copy with a warning (tfmot: silently).
* **pruning_policy on a single layer or a list** raises (tfmot ignores it there).
* **PruneForLatencyOnXNNPack** wraps 1x1 `Conv2D` layers with stride 1 and
  `groups=1` only, what XNNPACK runs sparse (tfmot: any 1x1 `Conv2D`); its
  errors name the layer and the rule it breaks.
* **An unbuilt Sequential** is built by its first training batch, which
  runs dense; the schedule's first update is applied right after it
  (build the model first, e.g. `model.build(shape)`, to prune from batch 0).
* **PolynomialDecay(begin_step == end_step)** applies `final_sparsity` at
  that step (tfmot's formula divides 0 by 0 there).
* **Not a layer, model or list**: `prune_low_magnitude(object())` raises
  `TypeError` (tfmot: `ValueError`), as Python does for a wrong type.
* **A subclass of a prunable layer** (e.g. of `Dense`) without
  `get_prunable_weights()` is pruned like its base class (tfmot raises):
  its weights are the base class's.
* **sparsity_m_by_n on a dimension that is not a multiple of m** (2:4 on a
  conv with 7 input channels): the partial last group gets its `n` zeros
  too (sparsity 4/7 = 0.571; tfmot pads the group, and the padding counts
  as one of its zeros: 3/7 = 0.429), as `kprune.NM` documents.
* **sparsity_m_by_n on a Conv3D kernel** groups its input axis as for
  other convolutions (tfmot leaves such kernels without masks); with fewer
  than `m` input channels it raises, naming the layer.
* **Wrapper attributes**: the wrapper keeps `granularity`
  (`kprune.Block(...)`, `kprune.NM(...)`) rather than `block_size` and
  `block_pooling_type`, and `masks` rather than `pruning_vars`.
* **The optimizer** of a compiled model stays on the pruned copy (Keras
  3's `clone_model` keeps it; tfmot's result has none); compile the pruned
  model before training, as tfmot's guide does.
* **Training without UpdatePruningStep** raises `ValueError` naming the
  callback, before any weight changes (tfmot: an `InvalidArgumentError`
  from an assert in the graph).
* **Layer keyword arguments with a model or a list** raise `TypeError` (tfmot ignores them).
* **PruningSummaries** writes `sparsity/<layer>`, `target_sparsity/<layer>`
  and `sparsity_total` to `log_dir` at each epoch's end (tfmot: mask sparsity
  and thresholds to `log_dir/metrics` at each epoch's start, plus
  TensorBoard's losses); it takes no TensorBoard keyword arguments (add
  `keras.callbacks.TensorBoard` for losses and metrics).
* **Saving**: `.keras` files load with `keras.models.load_model` without
  `prune_scope()` once `kprune.tfmot` is imported (it registers the
  schedules the wrappers keep); models saved by tfmot (Keras 2) cannot be
  loaded.
* Only `tfmot.sparsity` is covered: `tfmot.quantization` and
  `tfmot.clustering` raise an error that points to Keras' own quantization.
"""

from kprune.tfmot import sparsity
from kprune.tfmot import experimental, quantization

__all__ = ["sparsity"]

_NOT_COVERED = (
    "kprune.tfmot covers tfmot.sparsity (pruning) only; tfmot.{name} is not "
    "available. For quantization on Keras 3 use Keras' own: "
    "model.quantize('int8') (or 'int4', 'float8'), the keras.quantizers "
    "module, or TFLite post-training quantization "
    "(converter.optimizations = [tf.lite.Optimize.DEFAULT]) on the model "
    "returned by strip_pruning."
)


def __getattr__(name):
    if name in ("quantization", "clustering"):
        raise AttributeError(_NOT_COVERED.format(name=name))
    raise AttributeError(f"module 'kprune.tfmot' has no attribute {name!r}")
