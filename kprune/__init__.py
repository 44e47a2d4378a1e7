"""kprune: the pruning toolkit for Keras 3.

Magnitude pruning during `model.fit` (`prune_low_magnitude`, `PruningCallback`,
`strip_pruning`), structured filter pruning into physically thinner models
(`kprune.structured`), pruning at initialisation (`prune_at_init`: SNIP,
GraSP, SynFlow), with one mask engine (`kprune.masking`) shared by every
pruning method.
"""

from kprune import data, masking, schedules, structured
from kprune.at_init import init_scores, prune_at_init
from kprune.post_training import prune_post_training
from kprune.callbacks import PruningCallback, PruningSummaries, UpdatePruningStep
from kprune.flops import count_flops, count_params, width_report
from kprune.masking import NM, Block, Channel, Granularity, Unstructured, compute_mask, compute_masks
from kprune.prune import prune_low_magnitude, strip_pruning
from kprune.pruner import Pruner, update_masks
from kprune.report import sparsity_report
from kprune.schedules import ConstantSparsity, PolynomialDecay, PruningSchedule
from kprune.wrapper import PrunableLayer, PruneWrapper, register_prunable

__version__ = "0.1.0"

__all__ = [
    "Block",
    "Channel",
    "ConstantSparsity",
    "Granularity",
    "NM",
    "PolynomialDecay",
    "PrunableLayer",
    "PruneWrapper",
    "Pruner",
    "PruningCallback",
    "PruningSchedule",
    "PruningSummaries",
    "Unstructured",
    "UpdatePruningStep",
    "compute_mask",
    "init_scores",
    "prune_at_init",
    "prune_post_training",
    "count_flops",
    "count_params",
    "width_report",
    "compute_masks",
    "prune_low_magnitude",
    "register_prunable",
    "sparsity_report",
    "strip_pruning",
    "update_masks",
]
