"""Importance of heads, KV groups, MLP units, hidden channels and whole blocks.

Width importance (one score per query head `Q`, key/value group `K`, MLP
unit `I` and hidden channel `H`; higher = keep):

* `"activation"` (Minitron, Muralidharan et al. 2024): forward passes over
  the calibration batches; a query head scores the mean L2 norm of its
  attention output (the input of the output projection), a KV group the sum
  of its query heads, an MLP unit the mean `|activation|` entering the down
  projection, a hidden channel the mean `|value|` of the outputs of every
  normalisation layer (the LayerNorm/RMSNorm outputs), summed over blocks.
* `"taylor"` (LLM-Pruner, Ma et al. 2023): first-order Taylor
  `sum |w * dL/dw|` over every weight slice of the structure, with `L` the
  next-token cross-entropy on the calibration batches (gradients from
  `kprune.backend.grad_fn`); a KV group adds its query heads' scores.
* `"magnitude"`: `sum w**2` over the same slices, data-free.

Block importance (`block_influence`, ShortGPT, Men et al. 2024): `1 - mean
cos(x_in, x_out)` of each block over the calibration tokens; a block that
barely changes the residual stream scores near 0 and is removed first.

The caller's model is only read: activations are recorded by wrapping the
`call` of a few sub-layers for the duration of the passes, and the wrappers
are removed afterwards (also when a pass fails).
"""

from __future__ import annotations

import contextlib

import keras
import numpy as np

from kprune import backend
from kprune.core import checks
from kprune.llm.architectures import axes_of, block_index, family_of, split_model

__all__ = ["WIDTH_IMPORTANCES", "block_influence", "token_batches", "width_importance"]

WIDTH_IMPORTANCES = ("activation", "taylor", "magnitude")


def token_batches(data, batch_size=8, name="calibration"):
    """Calibration data as a list of `{"token_ids", "padding_mask"}` numpy batches.

    Args:
        data: token ids, an int array `(examples, sequence)`; or a dict with
            `"token_ids"` (and optionally `"padding_mask"`); or an iterable of
            such dicts or arrays (already batched, e.g. a `tf.data.Dataset`
            of dicts).
        batch_size: examples per batch when `data` is one array or dict.
        name: the parameter name used in error messages.

    Returns:
        A non-empty list of dict batches (padding mask all ones if absent).

    Raises:
        TypeError / ValueError: `data` is none of the above, empty, not
            integer, or not 2-D.
    """
    batch_size = checks.check_int("batch_size", batch_size, lo=1)

    def as_batch(item):
        if isinstance(item, dict):
            if "token_ids" not in item:
                raise ValueError(f"{name}: a dict batch needs 'token_ids', got keys {sorted(item)}.")
            ids = np.asarray(item["token_ids"])
            mask = np.asarray(item.get("padding_mask", np.ones_like(ids)))
        else:
            ids = np.asarray(item)
            mask = np.ones_like(ids)
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer) or ids.size == 0:
            raise ValueError(
                f"{name} must hold integer token ids of shape (examples, sequence length), "
                f"got dtype {ids.dtype} shape {ids.shape}. Tokenize the text first "
                f"(e.g. with the CausalLM's preprocessor)."
            )
        return {"token_ids": ids.astype("int32"), "padding_mask": mask.astype("int32")}

    if data is None:
        raise TypeError(f"{name}: token ids are needed (an int array (examples, sequence)), got None.")
    if isinstance(data, (dict, np.ndarray)) or hasattr(data, "shape"):
        full = as_batch(data)
        n = len(full["token_ids"])
        return [{k: v[s:s + batch_size] for k, v in full.items()} for s in range(0, n, batch_size)]
    if isinstance(data, (str, bytes)) or not hasattr(data, "__iter__"):
        raise TypeError(f"{name} must be token ids (an int array or dict of arrays), got {checks.describe(data)}.")
    batches = [as_batch(item) for item in data]
    if not batches:
        raise ValueError(f"{name} holds no batches.")
    return batches


def _sublayers(layer):
    """Every layer nested in `layer`, found through its attributes.

    (The one layer-tree walker will be kprune/core/model_tree.py; this reads
    only public attribute values, no Keras internals.)
    """
    out, stack, seen = [], [layer], {id(layer)}
    while stack:
        for value in vars(stack.pop()).values():
            for item in value if isinstance(value, (list, tuple)) else (value,):
                if isinstance(item, keras.layers.Layer) and id(item) not in seen:
                    seen.add(id(item))
                    out.append(item)
                    stack.append(item)
    return out


@contextlib.contextmanager
def _recording(layers):
    """Wraps `layer.call` to pass every (first input, output) to `record(layer, x, y)`."""
    patched = []
    try:
        for layer, record in layers:
            original = layer.call

            def call(*args, _original=original, _record=record, _layer=layer, **kwargs):
                out = _original(*args, **kwargs)
                _record(_layer, args[0] if args else kwargs.get("inputs", kwargs.get("x")), out)
                return out

            layer.call = call
            patched.append(layer)
        yield
    finally:
        for layer in patched:
            del layer.call


def _numpy(x):
    if isinstance(x, (tuple, list)):
        x = x[0]
    return np.asarray(keras.ops.convert_to_numpy(x), np.float64)


def _forward(backbone, batches):
    for batch in batches:
        backbone(batch, training=False)


def _activation_scores(backbone, family, batches):
    cfg = backbone.get_config()
    hidden = cfg["hidden_dim"]
    nq = cfg[family.heads_key]
    nkv = cfg[family.kv_key] if family.kv_key else nq
    inter = cfg["intermediate_dim"]
    scores = {"Q": np.zeros(nq), "I": np.zeros(inter), "H": np.zeros(hidden)}
    tokens = [0]

    def heads(layer, x, y):  # (batch, seq, heads, head_dim)
        a = _numpy(x)
        scores["Q"] += np.sqrt((a ** 2).sum(-1)).reshape(-1, a.shape[-2]).sum(0)

    def units(layer, x, y):  # (batch, seq, intermediate)
        a = _numpy(x)
        scores["I"] += np.abs(a).reshape(-1, a.shape[-1]).sum(0)

    def channels(layer, x, y):  # (batch, seq, hidden)
        a = _numpy(y)
        scores["H"] += np.abs(a).reshape(-1, a.shape[-1]).sum(0)

    hooks = []
    for layer in _sublayers(backbone):
        own = [v for v in layer.weights if v.path.rsplit("/", 1)[0] == layer.path]
        if not own:
            continue
        v = own[0]
        _, rest = block_index(family, v.path)
        axes = axes_of(family, v.path, v.shape)
        if rest.endswith("attention_output/kernel"):
            hooks.append((layer, heads))
        elif axes == "IH":
            hooks.append((layer, units))
        elif axes == "H" and v.path.endswith(("scale", "gamma")):
            hooks.append((layer, channels))
    with _recording(hooks):
        for batch in batches:
            backbone(batch, training=False)
            tokens[0] += int(batch["token_ids"].size)
    scores = {k: v / max(tokens[0], 1) for k, v in scores.items()}
    scores["K"] = scores["Q"].reshape(nkv, nq // nkv).sum(1)
    return scores


def _lm_loss(backbone):
    embedding = backbone.token_embedding

    def loss(batch):
        hidden = backbone(batch, training=False)
        logits = embedding(hidden, reverse=True)[:, :-1]
        labels = batch["token_ids"][:, 1:]
        weights = keras.ops.cast(batch["padding_mask"][:, 1:], logits.dtype)
        ce = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        return keras.ops.sum(ce * weights) / keras.ops.maximum(keras.ops.sum(weights), 1.0)

    return loss


def _weight_scores(backbone, family, batches, method):
    cfg = backbone.get_config()
    nq = cfg[family.heads_key]
    nkv = cfg[family.kv_key] if family.kv_key else nq
    sizes = {"Q": nq, "K": nkv, "I": cfg["intermediate_dim"], "H": cfg["hidden_dim"]}
    variables = list(backbone.trainable_weights)
    if method == "taylor":
        loss = _lm_loss(backbone)
        run = backend.grad_fn(loss, variables, compiled=False)
        grads = [np.zeros(tuple(v.shape)) for v in variables]
        for batch in batches:
            _, g = run(batch)
            for total, gi in zip(grads, g):
                total += np.asarray(gi, np.float64)
    scores = {k: np.zeros(n) for k, n in sizes.items()}
    for i, v in enumerate(variables):
        axes = axes_of(family, v.path, v.shape)
        w = np.asarray(keras.ops.convert_to_numpy(v), np.float64)
        s = np.abs(w * grads[i]) if method == "taylor" else w ** 2
        for a, letter in enumerate(axes):
            if letter in scores:
                scores[letter] += s.sum(axis=tuple(j for j in range(s.ndim) if j != a))
    if family.kv_key:
        scores["K"] += scores["Q"].reshape(nkv, nq // nkv).sum(1)
    else:
        scores["K"] = scores["Q"]
    return scores


def width_importance(model, calibration=None, importance="activation", batch_size=8):
    """Scores of query heads, KV groups, MLP units and hidden channels.

    Args:
        model: a KerasHub decoder backbone or `*CausalLM` (only read).
        calibration: token ids (see `token_batches`); not needed for
            `"magnitude"`.
        importance: `"activation"` (Minitron), `"taylor"` (LLM-Pruner) or
            `"magnitude"`.
        batch_size: examples per calibration batch.

    Returns:
        A dict `{"Q": (num_query_heads,), "K": (num_key_value_heads,),
        "I": (intermediate_dim,), "H": (hidden_dim,)}` of float arrays.

    Example:
    >>> scores = kprune.llm.width_importance(backbone, token_ids[:16])
    >>> scores["Q"].argsort()          # the least important query heads first
    """
    backbone, _ = split_model(model)
    family = family_of(backbone)
    importance = checks.check_choice("importance", importance, WIDTH_IMPORTANCES)
    if importance == "magnitude":
        return _weight_scores(backbone, family, None, "magnitude")
    batches = token_batches(calibration, batch_size)
    if importance == "taylor":
        return _weight_scores(backbone, family, batches, "taylor")
    return _activation_scores(backbone, family, batches)


def block_influence(model, calibration, batch_size=8):
    """ShortGPT's block influence `1 - mean cos(x_in, x_out)` of every decoder block.

    Args:
        model: a KerasHub decoder backbone or `*CausalLM` (only read).
        calibration: token ids (see `token_batches`).
        batch_size: examples per calibration batch.

    Returns:
        A float array, one score per block (higher = more important).

    Example:
    >>> kprune.llm.block_influence(backbone, token_ids[:16]).round(3)
    """
    backbone, _ = split_model(model)
    batches = token_batches(calibration, batch_size)
    blocks = list(backbone.transformer_layers)
    totals = np.zeros(len(blocks))
    counts = np.zeros(len(blocks))
    index = {id(b): i for i, b in enumerate(blocks)}

    def record(layer, x, y):
        a, b = _numpy(x), _numpy(y)
        a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
        cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
        totals[index[id(layer)]] += (1.0 - cos).sum()
        counts[index[id(layer)]] += len(cos)

    with _recording([(b, record) for b in blocks]):
        _forward(backbone, batches)
    return totals / np.maximum(counts, 1)
