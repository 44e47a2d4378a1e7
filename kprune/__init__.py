"""kprune: the pruning toolkit for Keras 3.

Magnitude pruning during `model.fit` (`prune_low_magnitude`, `PruningCallback`,
`strip_pruning`), structured filter pruning into physically thinner models
(`kprune.structured`), pruning at initialisation (`prune_at_init`: SNIP,
GraSP, SynFlow), with one mask engine (`kprune.masking`) shared by every
pruning method.
"""

import importlib.util as _util
import os as _os

if _os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow" and _util.find_spec("tensorflow"):
    # TensorFlow's C++ start-up lines off stderr (KPRUNE_VERBOSE=1 keeps them).
    # On JAX and torch, TensorFlow is neither needed nor imported.
    from tflite_export.quiet import quiet_import as _quiet_import

    _quiet_import()

from kprune import data, masking, schedules, structured
from kprune.at_init import init_scores, prune_at_init
from kprune.post_training import prune_post_training
from kprune.callbacks import PruningCallback, PruningSummaries, UpdatePruningStep
from kprune.flops import count_flops, count_params, width_report
from kprune.policy import PruneForLatencyOnXNNPack, PruningPolicy
from kprune.masking import NM, Block, Channel, Granularity, Unstructured, compute_mask, compute_masks
from kprune.prune import prune_low_magnitude, strip_pruning
from kprune.pruned_model import PrunedModel
from kprune.pruner import Pruner, update_masks
from kprune.report import sparsity_report
from kprune.schedules import ConstantSparsity, PolynomialDecay, PruningSchedule
from kprune.wrapper import PrunableLayer, PruneWrapper, register_prunable

from kprune import lottery, movement  # noqa: E402
from kprune.lottery import IterativeMagnitudePruning, RewindCheckpoint  # noqa: E402
from kprune.movement import MovementPruning, SoftMovementPruning  # noqa: E402
from kprune import criteria, distill, forgetting, regularizers  # noqa: E402
from kprune.distill import adaptive_bn  # noqa: E402
from kprune.forgetting import ForgettingReport, forgetting_report  # noqa: E402
from kprune.regularizers import GrowingRegularization, network_slimming  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "Block",
    "Channel",
    "ConstantSparsity",
    "Granularity",
    "NM",
    "PolynomialDecay",
    "PrunableLayer",
    "PruneForLatencyOnXNNPack",
    "PruneWrapper",
    "Pruner",
    "PrunedModel",
    "PruningCallback",
    "PruningPolicy",
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
    "IterativeMagnitudePruning",
    "RewindCheckpoint",
    "MovementPruning",
    "SoftMovementPruning",
    "GrowingRegularization",
    "network_slimming",
    "ForgettingReport",
    "forgetting_report",
    "adaptive_bn",
]
