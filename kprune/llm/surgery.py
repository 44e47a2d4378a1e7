"""Builds the smaller backbone from a config and copies the kept weight slices in.

`rebuild` is the one place where kprune.llm creates a model: it makes a new
backbone of the same class with `from_config(new_config)`, then fills every
weight from the original, taking along each axis the kept indices of its
kind (`kprune.llm.architectures`: hidden channels, query heads, KV groups,
MLP units) and, for block weights, the kept blocks in order. The original is
only read.
"""

from __future__ import annotations

import keras
import numpy as np

from kprune.llm.architectures import axes_of, block_index

__all__ = ["rebuild", "wrap_like"]


def rebuild(backbone, family, new_config, keep, blocks):
    """A new backbone of `type(backbone)` from `new_config` with the kept weights.

    Args:
        backbone: the original backbone (not modified).
        family: its `Family`.
        new_config: the smaller config (`get_config()` form).
        keep: `{"H": idx, "Q": idx, "K": idx, "I": idx}`: sorted kept
            indices per axis kind (missing kinds keep everything).
        blocks: the original block indices kept, in order.

    Returns:
        The new backbone.
    """
    new = type(backbone).from_config(new_config)
    old = {v.path: v for v in backbone.weights}
    hidden, new_hidden = backbone.get_config()["hidden_dim"], new_config["hidden_dim"]
    # Gemma multiplies the token embeddings by sqrt(hidden_dim): rescale the
    # (tied) embedding so the block inputs keep their values, and undo the
    # factor on the logits through the final norm's (1 + scale).
    factor = np.sqrt(hidden / new_hidden) if family.embedding_scale else 1.0
    for v in new.weights:
        index, rest = block_index(family, v.path)
        source = v.path if index is None else f"{family.block_prefix}_{blocks[index]}/{rest}"
        if source not in old:
            raise ValueError(f"kprune.llm: the pruned {family.name} has a weight '{v.path}' "
                             f"with no counterpart '{source}' in the original.")
        ref = old[source]
        axes = axes_of(family, source, ref.shape)
        value = np.asarray(keras.ops.convert_to_numpy(ref))
        for a, letter in enumerate(axes):
            if letter in keep and keep[letter] is not None:
                value = np.take(value, keep[letter], axis=a)
        if factor != 1.0 and rest == "token_embedding/embeddings":
            value = value * factor
        if factor != 1.0 and rest == f"{family.final_norm}/scale":
            value = (1.0 + value) / factor - 1.0
        if tuple(value.shape) != tuple(v.shape):
            raise ValueError(f"kprune.llm: weight '{v.path}' of the pruned {family.name} has shape "
                             f"{tuple(v.shape)}, the kept slices of '{source}' {value.shape}.")
        v.assign(value.astype(keras.backend.standardize_dtype(v.dtype)))
    return new


def wrap_like(original, causal_lm, backbone):
    """`backbone` alone, or a `type(causal_lm)` around it with the same preprocessor."""
    if causal_lm is None:
        return backbone
    return type(causal_lm)(backbone=backbone, preprocessor=causal_lm.preprocessor)
