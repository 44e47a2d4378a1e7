"""Width pruning of KerasHub decoders into a smaller config (Minitron).

`prune_width` removes attention heads, MLP units and hidden channels, the
same ones in every block (uniform widths: what a KerasHub config, and the
TFLite/LiteRT exporters, can express), and returns a new backbone of the
same class with the smaller config and the kept weights copied in.

Heads and grouped-query attention: query head `j` reads key/value head
`j // g` (`g = num_query_heads // num_key_value_heads`). Lowering
`num_key_value_heads` removes whole KV groups with their query heads;
lowering only `num_query_heads` removes the same number of query heads from
every group; lowering both keeps the best `num_key_value_heads` groups and
the best `num_query_heads / num_key_value_heads` query heads of each.

Exact and approximate removal: removing heads and MLP units is exact (the
pruned model computes what the original computes with those heads' output
projections and those units' down-projection rows set to zero). Removing
hidden channels is approximate by nature (LayerNorm/RMSNorm statistics run
over fewer channels), as in Minitron; recover with `kprune.llm.distill`.

Where the config derives the head size (`Llama3Backbone`, `GPT2Backbone`:
`head_dim = hidden_dim // num_query_heads`), the head count and the hidden
size are coupled: removing heads needs `hidden_dim = heads * head_dim`, and
the hidden size cannot change alone.
"""

from __future__ import annotations

import warnings

import numpy as np

from kprune.core import checks
from kprune.llm.architectures import family_of, split_model
from kprune.llm.importance import WIDTH_IMPORTANCES, width_importance
from kprune.llm.surgery import rebuild, wrap_like

__all__ = ["head_dim_of", "prune_width"]


def head_dim_of(family, config):
    """The head size of a config (explicit or `hidden_dim // heads`)."""
    if family.head_dim_key:
        return config[family.head_dim_key]
    return config["hidden_dim"] // config[family.heads_key]


def _top(scores, k):
    """Indices of the `k` highest scores, sorted (ties: the lower index)."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    return np.sort(order[:k])


def _width(name, value, current):
    if value is None:
        return current
    value = checks.check_int(name, value, lo=1)
    if value > current:
        raise ValueError(f"{name}={value} is more than the model's {current}; pruning only removes "
                         f"(pass at most {current}).")
    return value


def _nearest(valid, value):
    below = [v for v in valid if v < value]
    above = [v for v in valid if v > value]
    return ([max(below)] if below else []) + ([min(above)] if above else [])


def _resolve_heads(family, config, num_query_heads, num_key_value_heads):
    """`(nq, nkv)` after pruning, checked against the grouped-query layout."""
    nq = config[family.heads_key]
    nkv = config[family.kv_key] if family.kv_key else nq
    group = nq // nkv
    if not family.kv_key and num_key_value_heads is not None:
        raise ValueError(f"{family.name} has no grouped-query attention (every head has its own keys "
                         f"and values): prune heads with num_query_heads, not num_key_value_heads.")
    new_q = _width("num_query_heads", num_query_heads, nq)
    new_kv = _width("num_key_value_heads", num_key_value_heads, nkv)
    if not family.kv_key:
        return new_q, new_q
    if num_key_value_heads is not None and num_query_heads is None:
        return new_kv * group, new_kv
    if new_q % new_kv or new_q // new_kv > group:
        valid = [k * new_kv for k in range(1, group + 1)]
        what = (f"every one of the {new_kv} KV groups must keep the same number of query heads, "
                f"at most its {group}")
        raise ValueError(
            f"num_query_heads={new_q} does not divide into {new_kv} KV groups: {what}. The nearest "
            f"valid widths are num_query_heads={' or '.join(map(str, _nearest(valid, new_q)))} "
            f"(multiples of {new_kv} up to {group * new_kv}); or change num_key_value_heads too."
        )
    return new_q, new_kv


def select_heads(query_scores, group_scores, new_q, new_kv):
    """The query heads and KV groups kept by grouped-query-aware head pruning.

    Keeps the `new_kv` KV groups with the highest `group_scores` and, in
    each, the `new_q // new_kv` query heads with the highest
    `query_scores` (ties: the lower index).

    Args:
        query_scores: one score per query head (`num_query_heads`).
        group_scores: one score per KV head (`num_key_value_heads`).
        new_q, new_kv: the widths after pruning (`new_q` a multiple of
            `new_kv`, at most `new_kv` times the group size).

    Returns:
        `(query_heads, kv_heads)`: sorted original indices; query head `j`
        of the pruned model is `query_heads[j]`, and it reads KV head
        `j // (new_q // new_kv)`, which is `kv_heads[j // (new_q // new_kv)]`.

    Example:
    >>> select_heads([1, 5, 2, 9], [6, 11], 2, 2)
    (array([1, 3]), array([0, 1]))
    """
    query_scores = np.asarray(query_scores, np.float64)
    nkv = len(group_scores)
    group, new_group = len(query_scores) // nkv, new_q // new_kv
    groups = _top(group_scores, new_kv)
    per_head = query_scores.reshape(nkv, group)
    heads = [g * group + _top(per_head[g], new_group) for g in groups]
    return np.concatenate(heads), groups


def prune_width(model, calibration=None, *, num_query_heads=None, num_key_value_heads=None,
                intermediate_dim=None, hidden_dim=None, importance="activation", batch_size=8,
                scores=None):
    """Prunes a KerasHub decoder to smaller widths, uniform across blocks.

    Args:
        model: a `Gemma3Backbone`, `Llama3Backbone`, `Qwen3Backbone` or
            `GPT2Backbone` (or subclass), or a `*CausalLM` around one. Not
            modified.
        calibration: token ids for the importance (an int array
            `(examples, sequence)`, a dict with `"token_ids"`, or an
            iterable of batches); not needed for `importance="magnitude"` or
            with `scores`.
        num_query_heads: query heads per block after pruning (GPT-2: heads).
        num_key_value_heads: KV heads (groups) per block after pruning.
        intermediate_dim: MLP intermediate size after pruning.
        hidden_dim: hidden (embedding) size after pruning (Minitron's
            embedding-channel pruning; approximate, see the module doc).
        importance: `"activation"` (Minitron), `"taylor"` (LLM-Pruner) or
            `"magnitude"` (see `kprune.llm.importance`).
        batch_size: calibration examples per forward pass.
        scores: precomputed `width_importance(...)` scores (skips the passes).

    Returns:
        A new backbone of the same class with the smaller config (or, for a
        `*CausalLM`, a new one of the same class around it, sharing the
        preprocessor).

    Raises:
        ValueError: a width grows, is not a positive integer, does not divide
            into the KV groups (the message gives the nearest valid widths),
            or changes a derived head size (Llama3, GPT-2: heads and
            `hidden_dim` must change together, `hidden_dim = heads * head_dim`).
        TypeError: `model` is not a supported KerasHub decoder.

    Example:
    >>> small = kprune.llm.prune_width(causal_lm, token_ids[:64], num_key_value_heads=4,
    ...                                intermediate_dim=4096, hidden_dim=3072)
    >>> print(kprune.llm.config_report(causal_lm, small))
    """
    backbone, causal_lm = split_model(model)
    family = family_of(backbone)
    config = backbone.get_config()
    if family.name == "Gemma3Backbone" and (config.get("vision_encoder") is not None
                                            or config.get("is_embedding_model")):
        raise ValueError("kprune.llm prunes the text-only Gemma3 decoder; this Gemma3Backbone has "
                         "a vision encoder or an embedding head. Build the text backbone "
                         "(vision_encoder=None) and prune that.")
    checks.check_choice("importance", importance, WIDTH_IMPORTANCES)
    nq = config[family.heads_key]
    new_q, new_kv = _resolve_heads(family, config, num_query_heads, num_key_value_heads)
    new_i = _width("intermediate_dim", intermediate_dim, config["intermediate_dim"])
    new_h = _width("hidden_dim", hidden_dim, config["hidden_dim"])
    if family.head_dim_key is None:
        head_dim = head_dim_of(family, config)
        if new_h != new_q * head_dim:
            heads_key = "num_query_heads"
            if new_q != nq and hidden_dim is None:
                raise ValueError(
                    f"{family.name} derives head_dim = hidden_dim // {family.heads_key} "
                    f"({config['hidden_dim']} // {nq} = {head_dim}), so its heads are coupled to "
                    f"the hidden size: {heads_key}={new_q} alone would change the head size. Prune "
                    f"heads and hidden size together: pass hidden_dim={new_q * head_dim} "
                    f"({new_q} heads x {head_dim})."
                )
            raise ValueError(
                f"{family.name} derives head_dim = hidden_dim // {family.heads_key} "
                f"({config['hidden_dim']} // {nq} = {head_dim}): hidden_dim={new_h} with {new_q} "
                f"heads would change the head size to {new_h / new_q:g}. Keep the head size: pass "
                f"hidden_dim={new_q * head_dim} with {heads_key}={new_q}, or {heads_key}="
                f"{new_h // head_dim if new_h % head_dim == 0 else '(hidden_dim / ' + str(head_dim) + ')'} "
                f"with hidden_dim={new_h} (hidden_dim must be a multiple of {head_dim})."
            )
    if scores is None:
        if importance != "magnitude" and calibration is None:
            raise ValueError(f"importance={importance!r} needs calibration token ids; pass "
                             f"calibration=... or importance='magnitude'.")
        scores = width_importance(backbone, calibration, importance, batch_size)
    expected = {"Q": nq, "K": config[family.kv_key] if family.kv_key else nq,
                "I": config["intermediate_dim"], "H": config["hidden_dim"]}
    if not isinstance(scores, dict) or any(np.shape(scores.get(k)) != (n,) for k, n in expected.items()):
        got = {k: np.shape(v) for k, v in scores.items()} if isinstance(scores, dict) else scores
        raise ValueError(f"scores must be width_importance(...) of this model: one array per kind "
                         f"with shapes {({k: (n,) for k, n in expected.items()})}, got {got}.")
    keep = {"D": None}
    keep["Q"], keep["K"] = select_heads(scores["Q"], scores["K"], new_q, new_kv)
    if not family.kv_key:
        keep["K"] = keep["Q"]
    keep["I"] = _top(scores["I"], new_i)
    keep["H"] = _top(scores["H"], new_h)
    new_config = dict(config)
    new_config.update({family.heads_key: new_q, "intermediate_dim": new_i, "hidden_dim": new_h})
    if family.kv_key:
        new_config[family.kv_key] = new_kv
    pruned = rebuild(backbone, family, new_config, keep, list(range(config["num_layers"])))
    if new_h != config["hidden_dim"]:
        warnings.warn(
            f"prune_width: hidden_dim {config['hidden_dim']} -> {new_h} is approximate (the "
            f"normalisation statistics run over fewer channels), unlike head and MLP removal; "
            f"recover with kprune.llm.distill.", stacklevel=2)
    return wrap_like(model, causal_lm, pruned)
