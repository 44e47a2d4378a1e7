"""`config_report`: the original and the pruned decoder's configs side by side."""

from __future__ import annotations

import numpy as np

from kprune.llm.architectures import family_of, split_model
from kprune.utils.table import format_table

__all__ = ["config_report", "parameter_counts"]

_ROWS = ("num_layers", "hidden_dim", "num_query_heads", "num_heads", "num_key_value_heads",
         "head_dim", "intermediate_dim", "vocabulary_size")


def parameter_counts(model):
    """`(total, non_embedding)` parameter counts of a KerasHub decoder.

    Non-embedding excludes the token (and tied or untied output) embedding
    and GPT-2's position embedding: the "parameters" that width and depth
    pruning targets, as in the Minitron and Sheared-LLaMA papers.
    """
    backbone, _ = split_model(model)
    total = embedding = 0
    for v in backbone.weights:
        size = int(np.prod(v.shape))
        total += size
        if v.path.startswith(("token_embedding/", "position_embedding/")):
            embedding += size
    return total, total - embedding


def config_report(original, pruned):
    """A text table of the two configs and parameter counts, side by side.

    Args:
        original, pruned: KerasHub decoder backbones or `*CausalLM`s.

    Returns:
        The table (a string); changed rows end with the ratio new/old.

    Example:
    >>> print(kprune.llm.config_report(causal_lm, small))
    """
    a, _ = split_model(original)
    b, _ = split_model(pruned)
    fa, fb = family_of(a), family_of(b)
    ca, cb = a.get_config(), b.get_config()
    rows = [["class", fa.name, fb.name, ""]]
    for key in _ROWS:
        if key in ca or key in cb:
            old, new = ca.get(key, "-"), cb.get(key, "-")
            if key == "head_dim" or (key not in ca and key not in cb):
                pass
            ratio = f"{new / old:.2f}x" if isinstance(old, int) and isinstance(new, int) and old != new else ""
            rows.append([key, old, new, ratio])
    if "head_dim" not in ca:
        rows.append(["head_dim (derived)", ca["hidden_dim"] // ca[fa.heads_key],
                     cb["hidden_dim"] // cb[fb.heads_key], ""])
    for label, (x, y) in zip(("parameters", "non-embedding parameters"),
                             zip(parameter_counts(a), parameter_counts(b))):
        rows.append([label, f"{x:,}", f"{y:,}", f"{y / x:.2f}x" if x else ""])
    return format_table(["", "original", "pruned", "ratio"], rows)
