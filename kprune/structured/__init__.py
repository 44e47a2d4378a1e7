"""Structured (filter/channel) pruning: physically thinner Keras 3 models.

The design follows Torch-Pruning (DepGraph, Fang et al. 2023), kept apart in
these modules:

* `graph`: the dependency graph, which channels must be removed together;
* `handlers`: what each layer type (and `keras.ops` operation) does with
  channels (registry);
* `importance`: how channels are scored (L1/L2, BN scale, Taylor, custom);
* `plan`: `PruningPlan`, which channels go and which removals are approximate;
* `surgery`: rebuilds the thinner (or channel-zeroed) model from a plan;
* `verify`: checks that the thin model equals the channel-zeroed original;
* `pruner`: `ChannelPruner`, which puts these together;
* `iterative`: `prune_iteratively` and `ChannelPruningCallback`.

Example:
>>> from kprune.structured import ChannelPruner
>>> pruner = ChannelPruner(model, importance="l1", pruning_ratio=0.5)
>>> print(pruner.report())
>>> thin = pruner.prune()
"""

from kprune.structured.graph import DependencyGraph, Group, Member, model_nodes
from kprune.structured.handlers import (
    BidirectionalHandler,
    ConcatenateHandler,
    ElementwiseOpHandler,
    GroupedConvHandler,
    GroupNormalizationHandler,
    KerasHubTransformerHandler,
    MultiHeadAttentionHandler,
    PermuteHandler,
    ReduceOpHandler,
    ReshapeHandler,
    RNNHandler,
    ScaleHandler,
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
from kprune.structured.iterative import ChannelPruningCallback, prune_iteratively
from kprune.structured.plan import PruningPlan
from kprune.structured.channel_pruner import ChannelPruner, prune_channels
from kprune.structured.verify import PruningVerificationError

__all__ = [
    "DependencyGraph", "Group", "Member", "model_nodes",
    "LayerHandler", "ProducerHandler", "PassthroughHandler", "NormalizationHandler",
    "DepthwiseHandler", "SeparableHandler", "MergeHandler", "ConcatenateHandler",
    "FlattenHandler", "ReshapeHandler", "PermuteHandler", "ElementwiseOpHandler",
    "ReduceOpHandler", "GroupedConvHandler", "ScaleHandler", "GroupNormalizationHandler",
    "MultiHeadAttentionHandler", "RNNHandler", "BidirectionalHandler",
    "KerasHubTransformerHandler",
    "Slot", "Unsupported", "register_handler", "get_handler",
    "Importance", "MagnitudeImportance", "BNScaleImportance", "TaylorImportance",
    "get_importance",
    "ChannelPruner", "PruningPlan", "prune_channels", "prune_iteratively",
    "ChannelPruningCallback", "PruningVerificationError",
]


def __getattr__(name):
    """Old module paths (`kprune.structured.pruner`): see `kprune.compat`."""
    from kprune import compat  # noqa: PLC0415  (only for the old paths)

    module = compat.moved_attribute(__name__, name)
    if module is None:
        raise AttributeError(f"module 'kprune.structured' has no attribute {name!r}")
    return module
