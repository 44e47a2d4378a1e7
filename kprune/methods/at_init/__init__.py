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

The package: `plan.py` (validation, keys, batches, masks), `scores.py`
(magnitude, random, SNIP, GraSP), `synflow.py`, `copies.py` (scoring copies
and the returned fixed-mask model) and `driver.py` (`init_scores`,
`prune_at_init`).
"""

from __future__ import annotations

from kprune.methods.at_init.driver import init_scores, prune_at_init
from kprune.methods.at_init.plan import GRASP_TEMPERATURE, METHODS

__all__ = ["GRASP_TEMPERATURE", "METHODS", "init_scores", "prune_at_init"]
