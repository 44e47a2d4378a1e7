"""What kprune knows about each KerasHub decoder family: config keys and weight axes.

One `Family` per supported backbone class. It says which config keys hold
the widths, whether the head size is a config entry or derived
(`hidden_dim // num_query_heads`), and, for every weight of the backbone,
what each axis of the weight indexes:

* `V` vocabulary, `P` positions (never pruned);
* `H` the hidden (embedding, residual-stream) channels;
* `Q` query heads, `K` key/value heads (grouped-query attention: query head
  `j` reads key/value head `j // (num_query_heads // num_key_value_heads)`);
* `D` the head size (never pruned: RoPE pairs its channels);
* `I` the MLP intermediate units.

This is the coupling knowledge of the decoder (which weight slices go
together); every pruning step (width, depth, importance) reads it from here.
A weight whose path is not listed raises an error: kprune never copies a
weight it does not understand.

KerasHub is not imported: families are recognised by class name, so this
module (and `kprune.llm`'s distillation) works where keras_hub is absent.
"""

from __future__ import annotations

import dataclasses
import re

__all__ = ["FAMILIES", "Family", "axes_of", "block_index", "family_of", "split_model"]

_BLOCK = re.compile(r"^(?P<prefix>[A-Za-z_]+?)_(?P<index>\d+)/(?P<rest>.*)$")


@dataclasses.dataclass(frozen=True)
class Family:
    """Config keys and weight-axis map of one KerasHub decoder backbone class.

    Attributes:
        name: the backbone class name, e.g. `"Llama3Backbone"`.
        block_prefix: layer-name prefix of the decoder blocks
            (`"transformer_layer"` gives `transformer_layer_0`, ...).
        heads_key: config key of the number of query heads.
        kv_key: config key of the number of key/value heads, or None (no
            grouped-query attention: every head has its own keys and values).
        head_dim_key: config key of the head size, or None when the config
            derives it as `hidden_dim // heads`.
        block_axes: `(regex, axes)` for the weights inside a block, matched
            against the path after `<block_prefix>_<i>/`.
        global_axes: `(regex, axes)` for the other weights.
        embedding_scale: the backbone multiplies the token embeddings by
            `sqrt(hidden_dim)` (Gemma).
        norm_offset: the final norm scales by `1 + scale` (Gemma's RMSNorm)
            rather than by `scale`.
        pattern_period: the attention pattern repeats every this many blocks
            (Gemma3: 5 sliding-window blocks then 1 global), or None.
    """

    name: str
    block_prefix: str
    heads_key: str
    kv_key: str | None
    head_dim_key: str | None
    block_axes: tuple
    global_axes: tuple
    final_norm: str
    embedding_scale: bool = False
    norm_offset: bool = False
    pattern_period: int | None = None

    def pattern_active(self, config):
        """True when the blocks differ by index (Gemma3's sliding-window pattern)."""
        return bool(self.pattern_period) and bool(config.get("use_sliding_window_attention"))

    def is_local(self, index):
        """Gemma3: block `index` uses sliding-window (local) attention."""
        return index % self.pattern_period < self.pattern_period - 1


_LLAMA_BLOCK = (
    (r"self_attention/query/kernel", "HQD"),
    (r"self_attention/(key|value)/kernel", "HKD"),
    (r"self_attention/attention_output/kernel", "QDH"),
    (r"self_attention_layernorm/scale", "H"),
    (r"feedforward_(intermediate|gate)_dense/kernel", "HI"),
    (r"feedforward_output_dense/kernel", "IH"),
    (r"feedforward_layernorm/scale", "H"),
)
_TIED_OR_NOT = (
    (r"token_embedding/embeddings", "VH"),
    (r"token_embedding/reverse_embeddings", "HV"),
    (r"sequence_output_layernorm/scale", "H"),
)

FAMILIES = {
    f.name: f
    for f in (
        Family(
            name="Gemma3Backbone", block_prefix="decoder_block", heads_key="num_query_heads",
            kv_key="num_key_value_heads", head_dim_key="head_dim",
            block_axes=(
                (r"(pre|post)_(attention|ffw)_norm/scale", "H"),
                (r"attention/query/kernel", "QHD"),
                (r"attention/(key|value)/kernel", "KHD"),
                (r"attention/(query|key)_norm/scale", "D"),
                (r"attention/attention_output/kernel", "QDH"),
                (r"ffw_gating(_2)?/kernel", "HI"),
                (r"ffw_linear/kernel", "IH"),
            ),
            global_axes=((r"token_embedding/embeddings", "VH"), (r"final_normalization/scale", "H")),
            final_norm="final_normalization", embedding_scale=True, norm_offset=True,
            pattern_period=6,
        ),
        Family(
            name="Llama3Backbone", block_prefix="transformer_layer", heads_key="num_query_heads",
            kv_key="num_key_value_heads", head_dim_key=None, block_axes=_LLAMA_BLOCK,
            global_axes=_TIED_OR_NOT, final_norm="sequence_output_layernorm",
        ),
        Family(
            name="Qwen3Backbone", block_prefix="transformer_layer", heads_key="num_query_heads",
            kv_key="num_key_value_heads", head_dim_key="head_dim",
            block_axes=_LLAMA_BLOCK + (
                (r"self_attention/(query|key)_dense_layernorm/scale", "D"),
            ),
            global_axes=_TIED_OR_NOT, final_norm="sequence_output_layernorm",
        ),
        Family(
            name="GPT2Backbone", block_prefix="transformer_layer", heads_key="num_heads",
            kv_key=None, head_dim_key=None,
            block_axes=(
                (r"self_attention/(query|key|value)/kernel", "HQD"),
                (r"self_attention/(query|key|value)/bias", "QD"),
                (r"self_attention/attention_output/kernel", "QDH"),
                (r"self_attention/attention_output/bias", "H"),
                (r"(self_attention|feedforward)_layer_norm/(gamma|beta)", "H"),
                (r"feedforward_intermediate_dense/kernel", "HI"),
                (r"feedforward_intermediate_dense/bias", "I"),
                (r"feedforward_output_dense/kernel", "IH"),
                (r"feedforward_output_dense/bias", "H"),
            ),
            global_axes=(
                (r"token_embedding/embeddings", "VH"),
                (r"position_embedding/embeddings", "PH"),
                (r"layer_norm/(gamma|beta)", "H"),
            ),
            final_norm="layer_norm",
        ),
    )
}


def split_model(model):
    """`(backbone, causal_lm_or_None)` of a KerasHub `*CausalLM` or backbone.

    Raises:
        TypeError: `model` is neither (names the supported classes).
    """
    backbone = getattr(model, "backbone", None)
    if backbone is not None and family_of(backbone, raise_error=False) is not None:
        return backbone, model
    if family_of(model, raise_error=False) is not None:
        return model, None
    raise TypeError(
        f"kprune.llm prunes a KerasHub decoder backbone or *CausalLM "
        f"({', '.join(sorted(FAMILIES))}, or a subclass), got {type(model).__name__}. "
        f"Pass e.g. keras_hub.models.Llama3CausalLM or its .backbone."
    )


def family_of(backbone, raise_error=True):
    """The `Family` of a backbone (by its class or the nearest base class)."""
    for cls in type(backbone).__mro__:
        if cls.__name__ in FAMILIES:
            return FAMILIES[cls.__name__]
    if raise_error:
        raise TypeError(
            f"kprune.llm supports {', '.join(sorted(FAMILIES))}, got {type(backbone).__name__}."
        )
    return None


def block_index(family, path):
    """`(block index, path inside the block)` or `(None, path)` for a global weight."""
    m = _BLOCK.match(path)
    if m and m.group("prefix") == family.block_prefix:
        return int(m.group("index")), m.group("rest")
    return None, path


def axes_of(family, path, shape):
    """The axis letters of the weight at `path` (e.g. `"HQD"`).

    Raises:
        ValueError: the weight is not one kprune knows for this family, or
            its rank disagrees with the map.
    """
    index, rest = block_index(family, path)
    table = family.block_axes if index is not None else family.global_axes
    for pattern, axes in table:
        if re.fullmatch(pattern, rest):
            if len(axes) != len(shape):
                break
            return axes
    raise ValueError(
        f"kprune.llm does not know the weight '{path}' {tuple(shape)} of {family.name}; "
        f"it prunes only the plain text decoder (no vision encoder, no embedding-model "
        f"pooling head, no LoRA or quantized weights). Prune the text backbone before adding those."
    )
