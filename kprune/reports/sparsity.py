"""Per-layer reports: zeros in the prunable weights, and the pattern they form.

* `sparsity_report(model)`: zeros per prunable weight of a Keras model;
* `detect_pattern(array, layout)`: which granularity the zeros of one weight
  follow (dense / unstructured / block (r, c) / N:M / channels);

The `kprune report` command's file report (`.keras` / `.tflite`) is in
`kprune.cli.file_report`.
"""

from __future__ import annotations

import dataclasses
import os

import keras
import numpy as np

from kprune.core.masking import DENSE_LAYOUT, Layout
from kprune.core.model_tree import all_layers, find_wrappers
from kprune.core.wrapper import PruneWrapper, is_prunable, prunable_weights, weight_path
from kprune.utils.table import format_table

__all__ = [
    "sparsity_report", "SparsityReport", "SparsityRow", "Pattern", "detect_pattern",
    "weight_rows", "weight_label",
]


@dataclasses.dataclass(frozen=True)
class SparsityRow:
    """One weight tensor of the report."""

    layer: str
    weight: str
    shape: tuple
    zeros: int
    params: int

    @property
    def sparsity(self):
        return self.zeros / self.params if self.params else 0.0

    def as_dict(self):
        return {**dataclasses.asdict(self), "sparsity": self.sparsity}


class SparsityReport:
    """The rows of `sparsity_report`, printable and iterable.

    Attributes:
        rows: list of `SparsityRow` (layer, weight, shape, zeros, sparsity,
            params).
    """

    def __init__(self, rows):
        self.rows = list(rows)

    @property
    def zeros(self):
        return sum(r.zeros for r in self.rows)

    @property
    def params(self):
        return sum(r.params for r in self.rows)

    @property
    def sparsity(self):
        """Overall fraction of zeros over the reported weights."""
        return self.zeros / self.params if self.params else 0.0

    def as_dicts(self):
        """The rows as a list of dicts (e.g. for `pandas.DataFrame`)."""
        return [r.as_dict() for r in self.rows]

    def by_layer(self):
        """`{layer name: sparsity}` over each layer's pruned weights."""
        out = {}
        for r in self.rows:
            z, n = out.get(r.layer, (0, 0))
            out[r.layer] = (z + r.zeros, n + r.params)
        return {k: (z / n if n else 0.0) for k, (z, n) in out.items()}

    def __iter__(self):
        return iter(self.rows)

    def __len__(self):
        return len(self.rows)

    def __str__(self):
        header = ("layer", "weight", "shape", "zeros", "sparsity", "params")
        body = [
            (r.layer, r.weight, "x".join(map(str, r.shape)), str(r.zeros),
             f"{r.sparsity:.2%}", str(r.params))
            for r in self.rows
        ]
        total = [("total", "", "", str(self.zeros), f"{self.sparsity:.2%}", str(self.params))]
        return format_table(header, body, footer=total)

    __repr__ = __str__


def weight_label(label, variable):
    """The variable's path below its layer: 'kernel', 'query/kernel', ..."""
    return weight_path(label.split("/")[-1], variable)


def weight_rows(model):
    """`(label, variable, value, layout)` for every prunable weight of `model`:
    first the pruned ones (`PruneWrapper`s and `PrunedModel` groups, labelled
    by layer name or path), then any other prunable layer's weights."""
    for masked in find_wrappers(model) if isinstance(model, keras.layers.Layer) else []:
        if not getattr(masked, "built", True):
            continue
        for w, m, layout in zip(masked.prunable_weights, masked.masks, masked.layouts):
            value = keras.ops.convert_to_numpy(w) * keras.ops.convert_to_numpy(m)
            yield masked.label, w, value, layout
    layers = [model] if not isinstance(model, keras.Model) else all_layers(model)
    for layer in layers:
        if isinstance(layer, keras.layers.Layer) and not isinstance(layer, PruneWrapper) \
                and is_prunable(layer) and layer.built:
            for w, layout in prunable_weights(layer):
                yield layer.name, w, keras.ops.convert_to_numpy(w), layout


def sparsity_report(model):
    """Per-layer zeros in the prunable weights of a model.

    Works on wrapped models (counts the zeros of `weight * mask`) and on plain
    or stripped models (counts exact zeros in the prunable kernels).

    Args:
        model: a Keras model or layer.

    Returns:
        A `SparsityReport`: `print(report)` shows a table, `report.rows` /
        `report.as_dicts()` give the data, `report.sparsity` the total.

    Example:
    >>> print(kprune.sparsity_report(kprune.strip_pruning(pruned)))
    """
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(f"sparsity_report expects a Keras model or layer, got {type(model).__name__}.")
    seen, rows = set(), []
    for name, w, value, _ in weight_rows(model):
        if id(w) not in seen:
            seen.add(id(w))
            rows.append(SparsityRow(
                layer=name,
                weight=weight_label(name, w),
                shape=tuple(value.shape),
                zeros=int(value.size - np.count_nonzero(value)),
                params=int(value.size),
            ))
    return SparsityReport(rows)


# --------------------------------------------------------------------------
# Granularity patterns
# --------------------------------------------------------------------------

#: Block sides tried by `detect_pattern` (rows and columns of the 2-D view).
BLOCK_SIDES = (1, 2, 4, 8, 16, 32)
#: Group lengths tried for N:M.
NM_LENGTHS = (2, 4, 8, 16)
#: Zeros allowed inside kept groups, as a fraction of the kept weights
#: (weights that are zero by accident, e.g. int8 rounding).
INCIDENTAL_ZEROS = 0.01


@dataclasses.dataclass(frozen=True)
class Pattern:
    """The granularity the zeros of one weight follow.

    Attributes:
        kind: `"dense"` (no zeros), `"unstructured"`, `"block"`, `"nm"`,
            `"channels"` (whole output channels zero), `"input_channels"`
            (whole input channels zero), `"empty"` (all zeros / no weights),
            or `"csr"` (a .tflite CSR tensor that could not be decoded).
        block: `(r, c)` for `"block"`, in the 2-D view
            `[prod(shape[:-1]), shape[-1]]` of the Keras layout (Dense
            `[in, out]`: `(4, 1)` is TFLite's 1x4 block), else None.
        n, m: for `"nm"`: `n` zeros in every `m` weights along the input axis.
        channels: for `"channels"`/`"input_channels"`: `(zero, total)`.
    """

    kind: str
    block: tuple | None = None
    n: int | None = None
    m: int | None = None
    channels: tuple | None = None

    def __str__(self):
        if self.kind == "block":
            return f"block {self.block[0]}x{self.block[1]}"
        if self.kind == "nm":
            return f"{self.n}:{self.m}"
        if self.kind == "channels":
            return f"channels {self.channels[0]}/{self.channels[1]}"
        if self.kind == "input_channels":
            return f"input channels {self.channels[0]}/{self.channels[1]}"
        if self.kind == "csr":
            return "CSR (not decoded)"
        return self.kind

    def as_dict(self):
        return {
            "kind": self.kind,
            "block": list(self.block) if self.block else None,
            "n": self.n,
            "m": self.m,
            "channels": list(self.channels) if self.channels else None,
            "text": str(self),
        }


def _axis(axis, rank):
    if axis is None:
        return None
    axis = int(axis)
    if not -rank <= axis < rank:
        return None
    return axis % rank


def _zero_channels(zero, axis):
    """(number of all-zero slices along `axis`, incidental zeros elsewhere, total)."""
    moved = np.moveaxis(zero, axis, -1).reshape(-1, zero.shape[axis])
    dead = moved.all(axis=0)
    return int(dead.sum()), int(moved[:, ~dead].sum()), int(moved[:, ~dead].size), zero.shape[axis]


def _fits(incidental, kept):
    return incidental <= INCIDENTAL_ZEROS * max(kept, 1)


def detect_pattern(array, layout=DENSE_LAYOUT):
    """Which granularity the zeros of a weight follow.

    Checked in this order, the first that explains the zeros wins (up to
    `INCIDENTAL_ZEROS` of the kept weights being zero by accident):

    1. no zeros: `dense`; all zeros: `empty`;
    2. whole output channels (`layout.out_axis`) zero: `channels`;
    3. whole input channels (`layout.in_axis`) zero: `input_channels`;
    4. `n` zeros in every group of `m` along the input axis, for the
       smallest `m` in `NM_LENGTHS` where almost every group has exactly the
       same `n >= 1` zeros: `nm`;
    5. zero blocks `(r, c)` of the 2-D view `[prod(shape[:-1]), shape[-1]]`,
       the largest area (sides in `BLOCK_SIDES`, at least 2 weights) whose
       blocks are either all zero or (almost) all non-zero: `block`;
    6. otherwise `unstructured`.

    Args:
        array: the weight (numpy array or tensor), in Keras layout.
        layout: `kprune.core.masking.Layout` naming the input/output channel axes
            (default: Dense `[in, out]`; Conv kernels `[kh, kw, in, out]`
            use the same `Layout(-2, -1)` axes counted from the end).

    Returns:
        A `Pattern`; `str(pattern)` is e.g. `"block 4x1"`, `"2:4"`,
        `"channels 8/16"`.

    Example:
    >>> w = np.ones((8, 4)); w[:4, 0] = 0
    >>> str(detect_pattern(w))
    'block 4x1'
    """
    if not isinstance(layout, Layout):
        raise TypeError(f"layout must be a kprune.core.masking.Layout, got {type(layout).__name__}.")
    value = np.asarray(keras.ops.convert_to_numpy(array) if not isinstance(array, np.ndarray)
                       else array)
    zero = value == 0
    total = zero.size
    zeros = int(zero.sum())
    if total == 0 or zeros == total:
        return Pattern("empty")
    if zeros == 0:
        return Pattern("dense")
    rank = value.ndim
    out_axis, in_axis = _axis(layout.out_axis, rank), _axis(layout.in_axis, rank)
    for kind, axis in (("channels", out_axis), ("input_channels", in_axis)):
        if axis is None or rank < 2:
            continue
        dead, incidental, kept, count = _zero_channels(zero, axis)
        if dead and _fits(incidental, kept):
            return Pattern(kind, channels=(dead, count))
    if in_axis is not None and rank >= 2:
        moved = np.moveaxis(zero, in_axis, -1)
        for m in NM_LENGTHS:
            full = (moved.shape[-1] // m) * m
            if not full:
                break
            per = moved[..., :full].reshape(-1, m).sum(axis=1)
            n = int(per.min())
            if n >= 1 and n < m and np.mean(per == n) >= 1 - INCIDENTAL_ZEROS * m:
                return Pattern("nm", n=n, m=m)
    if rank >= 2:
        rows, cols = int(np.prod(value.shape[:-1])), int(value.shape[-1])
        mat = zero.reshape(rows, cols)
        best = None
        for r in BLOCK_SIDES:
            for c in BLOCK_SIDES:
                if r * c < 2 or r > rows or c > cols:
                    continue
                if best is not None and r * c <= best[0] * best[1]:
                    continue
                if _blocks_fit(mat, r, c):
                    best = (r, c)
        if best is not None:
            return Pattern("block", block=best)
    return Pattern("unstructured")


def _blocks_fit(mat, r, c):
    rows, cols = mat.shape
    br, bc = -(-rows // r), -(-cols // c)
    pad = np.ones((br * r, bc * c), dtype=bool)  # padding counts as zero
    pad[:rows, :cols] = mat
    blocks = pad.reshape(br, r, bc, c).transpose(0, 2, 1, 3).reshape(br * bc, r * c)
    dead = blocks.all(axis=1)
    if not dead.any():
        return False
    valid = np.ones((br * r, bc * c), dtype=bool)
    valid[:rows, :cols] = False  # True marks padding
    pads = valid.reshape(br, r, bc, c).transpose(0, 2, 1, 3).reshape(br * bc, r * c)
    live = blocks[~dead] & ~pads[~dead]
    kept = int((~pads[~dead]).sum())
    # a block of padding only (edge) is "dead" without telling anything
    real_dead = dead & ~pads.all(axis=1)
    return bool(real_dead.any()) and _fits(int(live.sum()), kept)
