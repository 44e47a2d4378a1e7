"""Structured (filter/channel) pruning: physically thinner Keras 3 models.

The design follows Torch-Pruning (DepGraph, Fang et al. 2023), kept apart in
four modules:

* `graph`: the dependency graph, which channels must be removed together;
* `handlers`: what each layer type does with channels (registry);
* `importance`: how channels are scored (L1/L2, BN scale, Taylor, custom);
* `pruner`: `ChannelPruner`, which plans, and rebuilds a thinner model.

Example:
>>> from kprune.structured import ChannelPruner
>>> pruner = ChannelPruner(model, importance="l1", pruning_ratio=0.5)
>>> print(pruner.report())
>>> thin = pruner.prune()
"""

from kprune.structured.graph import DependencyGraph, Group, Member, model_nodes
from kprune.structured.handlers import (
    ConcatenateHandler,
    DepthwiseHandler,
    FlattenHandler,
    LayerHandler,
    MergeHandler,
    NormalizationHandler,
    PassthroughHandler,
    ProducerHandler,
    SeparableHandler,
    Slot,
    Unsupported,
    get_handler,
    register_handler,
)
from kprune.structured.importance import (
    BNScaleImportance,
    Importance,
    MagnitudeImportance,
    TaylorImportance,
    get_importance,
)
from kprune.structured.pruner import (
    ChannelPruner,
    ChannelPruningCallback,
    PruningPlan,
    prune_channels,
    prune_iteratively,
)

__all__ = [
    "DependencyGraph", "Group", "Member", "model_nodes",
    "LayerHandler", "ProducerHandler", "PassthroughHandler", "NormalizationHandler",
    "DepthwiseHandler", "SeparableHandler", "MergeHandler", "ConcatenateHandler",
    "FlattenHandler", "Slot", "Unsupported", "register_handler", "get_handler",
    "Importance", "MagnitudeImportance", "BNScaleImportance", "TaylorImportance",
    "get_importance",
    "ChannelPruner", "PruningPlan", "prune_channels", "prune_iteratively",
    "ChannelPruningCallback",
]
