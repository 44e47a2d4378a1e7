"""One-shot pruning of trained models: magnitude, Wanda and SparseGPT, block by block.

`prune_post_training(model, calibration_data, method, sparsity, granularity)`
prunes a trained model without retraining from a few hundred calibration
examples, and returns a new model with fixed masks (the caller's model is not
modified; `in_place=True` writes into it instead, for models close to the
memory's size).

Definitions (every weight matrix is seen in its 2-D `[in, out]` view: Dense
`[in, out]`; Conv1D/2D `[k... * c_in, c_out]`, the im2col view; EinsumDense
`[contracted axes, produced axes]` read from its equation; `X` is the matrix
of the layer's inputs in the same view, one row per token / pixel / example):

* **magnitude**: keep the largest `|W|`, one threshold per tensor (what
  `kprune.prune_low_magnitude` does with `scope="layer"`). Needs no data.
* **Wanda** (Sun et al., ICLR 2024): score `|W_ij| * ||X_i||_2` (the L2 norm
  of input feature `i` over all calibration rows). Unstructured: with
  `comparison="auto"` (default) the scores are compared over the whole
  kernel in convolutional networks (models with a Conv1D/Conv2D layer to
  prune: per-output comparison lost to magnitude on the MNIST CNN at 70%,
  docs/post_training.md), and within each output unit in other models (the
  paper's choice for language models: every unit keeps
  `round(in * (1 - sparsity))` weights); `"output"` / `"layer"` force one. N:M
  groups (of `m` consecutive weights along the input axis) and Block
  patterns compare within their groups as usual. Kept weights unchanged.
* **SparseGPT** (Frantar & Alistarh, ICML 2023): with `H = X^T X` (plus
  `damping * mean(diag H)` on the diagonal, 1% by default; inputs never seen
  non-zero get `H_ii = 1` and their weights are set to zero, as the reference
  does), the input columns are visited in order, in lazy batches of
  `block_size` (128). At the start of a batch (unstructured, Block) or of an
  N:M group, the mask is chosen from `w^2 / [U]_ii^2`, `U` being the upper
  Cholesky factor of `H^-1`; then every pruned weight's error is spread over
  the not yet visited inputs of its output unit by the OBS update
  `w_F -= (w_q / U_qq) * U_q,F`.

All selections go through the mask engine (`kprune.core.masking.compute_mask`),
with its tie and rounding rules.

Order: as in both papers, the inputs of a layer are those produced by the
already pruned (and, for SparseGPT, updated) earlier layers. Models with
sequential blocks (KerasHub `*CausalLM` through
`get_quantization_layer_structure`, backbones through `transformer_layers`,
functional chains of composite layers) are pruned block by block on cached
block inputs (see `driver`); other models layer by layer with forward passes
of the whole model, stopped at the layer.

Modules: `config` (settings), `capture` (intercepted calls, statistics, the
block-input cache), `kernel_views` (the `[in, out]` views, im2col),
`magnitude` / `wanda` / `sparsegpt` (per-layer math, pure numpy), `blocks`
(which layers, which blocks, in which order), `memory` (the estimate made
before starting), `checkpoint` (resumable runs), `result` (the returned
model's masks), `driver` (`prune_post_training`).
"""

from kprune.methods.one_shot.capture import capture_inputs, layer_inputs
from kprune.methods.one_shot.config import METHODS
from kprune.methods.one_shot.driver import prune_post_training
from kprune.methods.one_shot.kernel_views import KernelView, kernel_view
from kprune.methods.one_shot.magnitude import magnitude, select
from kprune.methods.one_shot.sparsegpt import sparsegpt
from kprune.methods.one_shot.wanda import wanda, wanda_scores

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
