"""Which layers one-shot pruning visits, in which order, and the model's
sequential blocks.

* `find_units`: the Dense / EinsumDense / Conv1D / Conv2D layers of a model,
  also nested in composite layers, and `(name, why)` of those left dense.
* `find_blocks`: the sequential blocks (transformer layers), found as Keras'
  GPTQ finds them (`model.get_quantization_layer_structure("gptq")` of the
  KerasHub `*CausalLM` task models), from a backbone's `transformer_layers`,
  or in a functional graph as a chain of composite layers each fed by the
  previous one's output.
* `discover`: one forward pass on the first calibration batch: the call
  order, the layers never called, and whether the blocks really form a chain
  (block `i + 1` receives exactly block `i`'s output; otherwise the driver
  falls back to layer-by-layer passes over the whole model).
* `groups`: consecutive layers reading the same tensor (query / key / value)
  share one capture pass.
"""

from __future__ import annotations

import keras
import numpy as np

from kprune.core import checks, model_tree
from kprune.methods.one_shot.capture import (
    StopForward, capture_inputs, first_argument, intercept, run_model)
from kprune.methods.one_shot.kernel_views import kernel_view, to_numpy
from kprune.core.wrapper import is_prunable

__all__ = ["SUPPORTED", "find_units", "find_blocks", "discover", "groups", "Plan"]

#: The layer types one-shot pruning prunes.
SUPPORTED = (keras.layers.Dense, keras.layers.EinsumDense, keras.layers.Conv1D,
             keras.layers.Conv2D)


def find_units(model, ignore):
    """`(candidates, left_dense, names)`: the layers to prune (tree order),
    `(name, why)` of prunable-looking layers left dense, and every layer name.

    Raises:
        ValueError: a name in `ignore` is not a layer of the model.
    """
    ignore = checks.normalize_ignore(ignore)
    leaves = model_tree.leaf_layers(model)
    candidates, left_dense, names = [], [], set()
    for leaf in leaves:
        for layer in leaf._flatten_layers(include_self=True):
            names.add(layer.name)

    def ignored(layer):
        return layer.name in ignore["names"] or bool(
            ignore["types"] and isinstance(layer, ignore["types"]))

    def walk(layer, top):
        if ignored(layer):  # the layer and everything inside it stays dense
            return
        if isinstance(layer, SUPPORTED) and layer.weights:
            try:
                kernel_view(layer)
                candidates.append(layer)
            except ValueError as e:
                left_dense.append((layer.name if top else layer.path, str(e)))
            return
        if is_prunable(layer) and layer.weights and not any(
                isinstance(s, SUPPORTED) for s in layer._flatten_layers(include_self=False)):
            left_dense.append((layer.name if top else layer.path,
                               f"{type(layer).__name__}: not covered by one-shot pruning"))
            return
        for sub in layer._flatten_layers(include_self=False, recursive=False):
            walk(sub, False)

    for leaf in leaves:
        walk(leaf, True)
    unknown = sorted(n for n in ignore["names"] if n not in names)
    if unknown:
        raise ValueError(
            f"Unknown layer name(s) {unknown} in ignore; the model's layers "
            f"(nested ones included) are {sorted(names)}."
        )
    return list({id(c): c for c in candidates}.values()), left_dense


def find_blocks(model):
    """The model's sequential blocks (a list of layers, maybe empty).

    KerasHub `*CausalLM`: `get_quantization_layer_structure("gptq")`, as
    Keras' GPTQ; a model with a `backbone`: the backbone's; a KerasHub
    backbone: its `transformer_layers`; a functional model: its top-level
    composite layers holding prunable layers, in graph order (whether they
    form a chain is checked by `discover` on real data).

    Example:
    ```python
    blocks = find_blocks(keras_hub.models.Gemma3CausalLM(...))  # the decoder blocks
    ```
    """
    structure = None
    get = getattr(model, "get_quantization_layer_structure", None)
    if callable(get):
        try:
            structure = get("gptq")
        except Exception:  # noqa: BLE001 - the model's own code: no structure then
            structure = None
    if isinstance(structure, dict) and structure.get("sequential_blocks"):
        return list(structure["sequential_blocks"])
    layers = getattr(model, "transformer_layers", None)
    if isinstance(layers, (list, tuple)) and len(layers) > 1 and all(
            isinstance(l, keras.layers.Layer) for l in layers):
        return list(layers)
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, keras.Model) and backbone is not model:
        found = find_blocks(backbone)
        if found:
            return found
    if not model_tree.is_graph_model(model):
        return []
    composite = [
        layer for layer in model.layers
        if isinstance(layer, keras.layers.Layer) and not isinstance(layer, keras.Model)
        and not isinstance(layer, SUPPORTED) and not is_prunable(layer)
        and any(isinstance(s, SUPPORTED) for s in layer._flatten_layers(include_self=False))
    ]
    return composite if len(composite) > 1 else []


class Plan:
    """What `discover` found.

    Attributes:
        order: `[(layer, input token)]` of the units, in call order (equal
            tokens: the very same input tensor).
        counts: `{id(layer): number of calls per forward pass}`.
        blocks: the blocks that form a chain (empty: no block-by-block).
        block_units: per block, its units in call order.
        pre, post: the units called before the first block / after the last.
        why_not_blocks: why blocks were found but not used (or None).
        first_block_input: the first batch's input of block 0 (for sizes).
    """

    def __init__(self):
        self.order, self.counts, self.blocks, self.block_units = [], {}, [], []
        self.pre, self.post, self.why_not_blocks, self.first_block_input = [], [], None, None


def discover(model, candidates, blocks, first_batch):
    """One forward pass on `first_batch`: call order and the block chain."""
    plan = Plan()
    events = []  # ("unit", layer, x) / ("block", index, x_in) / ("out", index, y)
    index = {id(b): i for i, b in enumerate(blocks)}
    originals = {id(b): b.call for b in blocks}
    chain_ok = [True]
    previous_out = [None]
    calls = {}

    def block_before(block, args, kwargs):
        i = index[id(block)]
        calls[i] = calls.get(i, 0) + 1
        x = first_argument(originals[id(block)], args, kwargs)
        if i == 0:
            plan.first_block_input = to_numpy(x)
        elif previous_out[0] is None or previous_out[0][0] != i - 1 or not np.array_equal(
                to_numpy(x), previous_out[0][1]):
            chain_ok[0] = False
        events.append(("block", i, None))

    def block_after(block, out):
        i = index[id(block)]
        y = out[0] if isinstance(out, (tuple, list)) else out
        previous_out[0] = (i, to_numpy(y))
        events.append(("out", i, None))

    # No tensor is kept: each unit call gets a token, the same as the previous
    # call's when it reads the very same tensor (all `groups` needs); holding
    # the tensors would hold one batch's activations of every layer.
    last = {"tensor": None, "token": -1}
    wanted = {id(c) for c in candidates}
    seen_units = set()

    def unit(layer, t):
        if t is not last["tensor"]:
            last["tensor"], last["token"] = t, last["token"] + 1
        events.append(("unit", layer, last["token"]))
        seen_units.add(id(layer))

    def last_block_after(block, out):
        block_after(block, out)
        last["tensor"] = None
        if index[id(block)] == len(blocks) - 1 and seen_units == wanted:
            # every layer to prune was seen: the rest (the LM head's logits:
            # [batch, tokens, vocabulary]) need not run
            raise StopForward()

    with intercept(blocks, before=block_before, after=last_block_after):
        with capture_inputs(candidates, unit):
            run_model(model, first_batch)
    for kind, item, token in events:
        if kind == "unit":
            plan.order.append((item, token))
            plan.counts[id(item)] = plan.counts.get(id(item), 0) + 1
    if not blocks:
        return plan
    if any(calls.get(i) != 1 for i in range(len(blocks))):
        plan.why_not_blocks = "a block is not called exactly once per forward pass"
    elif not chain_ok[0]:
        plan.why_not_blocks = "a block does not receive the previous block's output"
    if plan.why_not_blocks:
        return plan
    members = [{id(l) for l in b._flatten_layers(include_self=True)} for b in blocks]
    plan.block_units = [[] for _ in blocks]
    started = finished = False
    seen = set()
    for kind, item, t in events:
        if kind == "block":
            started = True
        elif kind == "out":
            finished = item == len(blocks) - 1
        elif id(item) not in seen:
            seen.add(id(item))
            owner = next((i for i, m in enumerate(members) if id(item) in m), None)
            if owner is not None:
                plan.block_units[owner].append((item, t))
            elif not started:
                plan.pre.append((item, t))
            elif finished:
                plan.post.append((item, t))
            else:
                plan.why_not_blocks = f"layer '{item.path}' runs between two blocks"
                plan.block_units, plan.pre, plan.post = [], [], []
                return plan
    plan.blocks = list(blocks)
    return plan


def groups(order, counts):
    """Units in first-call order, grouped when they read the same tensor
    (`order`: `[(layer, token)]`, equal tokens for the same input tensor).

    Consecutive calls on the very same input tensor (the query, key and
    value projections of self-attention) cannot depend on each other's
    pruning, so one capture pass serves the whole group. Layers called
    several times per forward pass stay alone.
    """
    out, seen, previous = [], set(), None
    for layer, tensor in order:
        if id(layer) in seen:
            previous = None
            continue
        seen.add(id(layer))
        single = counts[id(layer)] == 1
        if out and previous is not None and tensor == previous and single and all(
                counts[id(l)] == 1 for l in out[-1]):
            out[-1].append(layer)
        else:
            out.append([layer])
        previous = tensor
    return out
