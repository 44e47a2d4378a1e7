"""Smaller language models: KerasHub decoders pruned to a smaller config, recovered by distillation.

* `prune_width`: heads (grouped-query aware), MLP units and hidden size,
  uniform across blocks, into a new backbone of the same class (Minitron).
* `prune_depth`: whole blocks by ShortGPT's block influence (Gemma3: whole
  periods of its local/global attention pattern).
* `width_importance` / `block_influence`: the scores (activation-based as
  Minitron, Taylor as LLM-Pruner, or magnitude).
* `distill`: logit distillation from the dense teacher (Minitron's KL on
  logits) through `keras.distillation`, resumable, with progress output.
* `config_report`: old and new config side by side.

Supported: `Gemma3Backbone`, `Llama3Backbone`, `Qwen3Backbone`,
`GPT2Backbone` (text-only), or a `*CausalLM` around one. KerasHub is not
imported by this package; distillation works with any Keras decoder.

Example:
>>> small = kprune.llm.prune_width(lm, token_ids[:64], num_query_heads=4,
...                                intermediate_dim=1024)
>>> small = kprune.llm.distill(small, lm, token_ids, epochs=1)
"""

from kprune.llm.architectures import FAMILIES
from kprune.llm.depth import prune_depth
from kprune.llm.distill import distill, lm_batches
from kprune.llm.importance import block_influence, token_batches, width_importance
from kprune.llm.report import config_report, parameter_counts
from kprune.llm.width import prune_width

__all__ = [
    "FAMILIES",
    "block_influence",
    "config_report",
    "distill",
    "lm_batches",
    "parameter_counts",
    "prune_depth",
    "prune_width",
    "token_batches",
    "width_importance",
]
