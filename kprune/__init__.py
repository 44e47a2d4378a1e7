"""kprune: the pruning toolkit for Keras 3.

Magnitude pruning during `model.fit` (`prune_low_magnitude`, `PruningCallback`,
`strip_pruning`), structured filter pruning into physically thinner models
(`kprune.structured`), pruning at initialisation (`prune_at_init`: SNIP,
GraSP, SynFlow), with one mask engine (`kprune.masking`) shared by every
pruning method.
"""

import importlib.util as _util
import os as _os

from kprune import compat as _compat

_compat.install()

if _os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow" and _util.find_spec("tensorflow"):
    # TensorFlow's C++ start-up lines off stderr (KPRUNE_VERBOSE=1 keeps them).
    # On JAX and torch, TensorFlow is neither needed nor imported.
    from kprune.utils.quiet import quiet_import as _quiet_import

    _quiet_import()

# The core: the mask engine, schedules, the pruned layer, prune during fit.
from kprune import data, structured
from kprune.core import masking, schedules
from kprune.core.callbacks import PruningCallback, PruningSummaries, UpdatePruningStep
from kprune.core.masking import NM, Block, Channel, Granularity, Unstructured, compute_mask, compute_masks
from kprune.core.pruned_model import PrunedModel
from kprune.core.pruner import Pruner, update_masks
from kprune.core.schedules import ConstantSparsity, PolynomialDecay, PruningSchedule
from kprune.core.wrapper import PrunableLayer, PruneWrapper, register_prunable
from kprune.core.wrapping import prune_low_magnitude, strip_pruning

# Methods built on the core.
from kprune.methods import criteria, distill, forgetting, lottery, movement, regularizers
from kprune.methods.at_init import init_scores, prune_at_init
from kprune.methods.distill import adaptive_bn
from kprune.methods.forgetting import ForgettingReport, forgetting_report
from kprune.methods.lottery import IterativeMagnitudePruning, RewindCheckpoint
from kprune.methods.movement import MovementPruning, SoftMovementPruning
from kprune.methods.one_shot import prune_post_training
from kprune.methods.regularizers import GrowingRegularization, network_slimming

# Deployment targets and reports.
from kprune.deploy.policy import PruneForLatencyOnXNNPack, PruningPolicy
from kprune.reports.flops import count_flops, count_params, width_report
from kprune.reports.sparsity import sparsity_report


def __getattr__(name):
    """Old module paths (`kprune.prune`, `kprune.pruner`, ...): see `kprune.compat`."""
    module = _compat.moved_attribute(__name__, name)
    if module is None:
        raise AttributeError(f"module 'kprune' has no attribute {name!r}")
    return module


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
