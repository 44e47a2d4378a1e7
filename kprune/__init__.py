"""kprune: the pruning toolkit for Keras 3.

Magnitude pruning during `model.fit` (`prune_low_magnitude`, `PruningCallback`,
`strip_pruning`), structured filter pruning into physically thinner models
(`kprune.structured`), pruning at initialisation (`prune_at_init`: SNIP,
GraSP, SynFlow), with one mask engine (`kprune.masking`) shared by every
pruning method.
"""

import os as _os
import sys as _sys

from kprune import compat as _compat

_compat.install()


def _as_command():
    """True while Python starts the `kprune` command itself (the console
    script, or `python -m kprune`), not when a program imports kprune."""
    argv = list(getattr(_sys, "orig_argv", None) or [])
    i = 1
    while i < len(argv) and argv[i].startswith("-") and argv[i] != "-c":
        if argv[i] == "-m":  # interpreter options end at -m MODULE
            return argv[i + 1:i + 2] == ["kprune"]
        i += 2 if argv[i] in ("-W", "-X") else 1
    script = _os.path.basename((_sys.argv or [""])[0])
    return _os.path.splitext(script)[0] in ("kprune", "kprune-script")


# `import kprune` imports the library and nothing else: no device is
# initialised, no file descriptor redirected, nothing printed beyond what
# `import keras` prints. Inside the `kprune` command the API is imported by
# `kprune.cli.main` after parsing its arguments (`kprune --help` imports no
# Keras), with TensorFlow's start-up lines kept off stderr (`kprune.utils.quiet`).
_DEFER_API = _as_command() and not globals().get("_API_WANTED", False)


def import_api():
    """Imports kprune's public API now (the `kprune` command calls it once its
    arguments are parsed; `import kprune` elsewhere has already done it)."""
    import importlib

    global _API_WANTED
    if _DEFER_API:
        _API_WANTED = True
        importlib.reload(_sys.modules[__name__])


if not _DEFER_API:
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
    if _DEFER_API and not name.startswith("__"):
        import_api()
        if name in globals():
            return globals()[name]
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
