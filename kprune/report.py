"""Per-layer reports: zeros in the prunable weights, and the pattern they form.

* `sparsity_report(model)`: zeros per prunable weight of a Keras model;
* `detect_pattern(array, layout)`: which granularity the zeros of one weight
  follow (dense / unstructured / block (r, c) / N:M / channels);
* `model_report(path)`: the `kprune report` command's data for a `.keras`
  or `.tflite` file (per-layer table, parameters, FLOPs, and for `.tflite`
  which ops run the sparse kernel and which tensors go through DENSIFY);
  `.as_json()` follows `REPORT_SCHEMA`, `.plot(png)` draws it.
"""

from __future__ import annotations

import dataclasses
import os

import keras
import numpy as np

from kprune.masking import DENSE_LAYOUT, Layout
from kprune.wrapper import PruneWrapper, is_prunable, prunable_weights, weight_path
from kprune.table import format_table

__all__ = [
    "sparsity_report", "SparsityReport", "SparsityRow", "Pattern", "detect_pattern",
    "ModelReport", "LayerRow", "model_report", "REPORT_SCHEMA",
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


def _weight_label(label, variable):
    """The variable's path below its layer: 'kernel', 'query/kernel', ..."""
    return weight_path(label.split("/")[-1], variable)


def _all_rows(model):
    """`(label, variable, value, layout)` for every prunable weight of `model`:
    first the pruned ones (`PruneWrapper`s and `PrunedModel` groups, labelled
    by layer name or path), then any other prunable layer's weights."""
    from kprune.prune import find_wrappers  # noqa: PLC0415

    for masked in find_wrappers(model) if isinstance(model, keras.layers.Layer) else []:
        if not getattr(masked, "built", True):
            continue
        for w, m, layout in zip(masked.prunable_weights, masked.masks, masked.layouts):
            value = keras.ops.convert_to_numpy(w) * keras.ops.convert_to_numpy(m)
            yield masked.label, w, value, layout
    layers = [model] if not isinstance(model, keras.Model) else list(
        model._flatten_layers(include_self=False))
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
    for name, w, value, _ in _all_rows(model):
        if id(w) not in seen:
            seen.add(id(w))
            rows.append(SparsityRow(
                layer=name,
                weight=_weight_label(name, w),
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
        layout: `kprune.masking.Layout` naming the input/output channel axes
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
        raise TypeError(f"layout must be a kprune.masking.Layout, got {type(layout).__name__}.")
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


# --------------------------------------------------------------------------
# kprune report: .keras and .tflite files
# --------------------------------------------------------------------------

#: The `--json` schema of `kprune report` (`ModelReport.as_json()`).
REPORT_SCHEMA = {
    "schema": "'kprune.report/1'",
    "file": "str: the path given",
    "format": "'keras' or 'tflite'",
    "bytes": "int: file size",
    "params": "int: scalars in all weights (keras) / constant tensors (tflite)",
    "reported_params": "int: scalars in the rows below",
    "zeros": "int: zeros in the rows below",
    "sparsity": "float: zeros / reported_params",
    "flops": "int: FLOPs of one example, 2 x multiply-accumulates (kprune.count_flops; "
             "for tflite from FULLY_CONNECTED/CONV_2D/DEPTHWISE_CONV_2D shapes)",
    "layers": [{
        "layer": "str: Keras layer name / tflite tensor name",
        "weight": "str: weight path below the layer ('kernel', ...) / tflite op",
        "shape": "list[int]: in the file's own layout",
        "dtype": "str",
        "params": "int", "zeros": "int", "sparsity": "float",
        "pattern": {"kind": "dense|unstructured|block|nm|channels|input_channels|empty|csr",
                    "block": "[r, c] or null", "n": "int or null", "m": "int or null",
                    "channels": "[zero, total] or null", "text": "str, as printed"},
        "flops": "int or null: FLOPs of the layer / op",
        "storage": "tflite only: 'dense', 'block' or 'csr' (null for keras)",
        "sparse_kernel": "tflite only: bool, the FULLY_CONNECTED runs the sparse kernel",
        "densified": "tflite only: bool, a DENSIFY op expands it at load time",
    }],
    "tflite": "null for keras; else {'ops': {op: count}, 'sparse_kernel_ops': [int], "
              "'densified_tensors': [str], 'summary': str}",
}


@dataclasses.dataclass
class LayerRow:
    """One weight of a `ModelReport` (see `REPORT_SCHEMA["layers"]`)."""

    layer: str
    weight: str
    shape: tuple
    dtype: str
    params: int
    zeros: int
    pattern: Pattern
    flops: int | None = None
    storage: str | None = None
    sparse_kernel: bool | None = None
    densified: bool | None = None

    @property
    def sparsity(self):
        return self.zeros / self.params if self.params else 0.0

    def as_dict(self):
        return {
            "layer": self.layer, "weight": self.weight, "shape": [int(d) for d in self.shape],
            "dtype": self.dtype, "params": int(self.params), "zeros": int(self.zeros),
            "sparsity": float(self.sparsity), "pattern": self.pattern.as_dict(),
            "flops": None if self.flops is None else int(self.flops),
            "storage": self.storage, "sparse_kernel": self.sparse_kernel,
            "densified": self.densified,
        }


@dataclasses.dataclass
class ModelReport:
    """What `kprune report` prints: see `model_report`."""

    file: str
    format: str
    bytes: int
    params: int
    flops: int | None
    rows: list
    tflite: dict | None = None

    @property
    def zeros(self):
        return sum(r.zeros for r in self.rows)

    @property
    def reported_params(self):
        return sum(r.params for r in self.rows)

    @property
    def sparsity(self):
        n = self.reported_params
        return self.zeros / n if n else 0.0

    def as_json(self):
        """The report as a JSON-ready dict following `REPORT_SCHEMA`."""
        return {
            "schema": "kprune.report/1", "file": self.file, "format": self.format,
            "bytes": int(self.bytes), "params": int(self.params),
            "reported_params": int(self.reported_params), "zeros": int(self.zeros),
            "sparsity": float(self.sparsity),
            "flops": None if self.flops is None else int(self.flops),
            "layers": [r.as_dict() for r in self.rows], "tflite": self.tflite,
        }

    def __str__(self):
        tfl = self.format == "tflite"
        header = ["layer", "weight", "shape", "params", "zeros", "sparsity", "pattern", "FLOPs"]
        if tfl:
            header[0], header[1] = "tensor", "op"
            header.append("runs as")
        body = []
        for r in self.rows:
            cells = [r.layer, r.weight, "x".join(map(str, r.shape)) or "scalar",
                     f"{r.params:,}", f"{r.zeros:,}", f"{r.sparsity:.1%}", str(r.pattern),
                     "" if r.flops is None else f"{r.flops:,}"]
            if tfl:
                how = {"block": "block-sparse", "csr": "CSR"}.get(r.storage, "dense")
                if r.sparse_kernel:
                    how += " -> sparse FC kernel"
                elif r.densified:
                    how += " -> DENSIFY"
                cells.append(how)
            body.append(cells)
        total = ["total", "", "", f"{self.reported_params:,}", f"{self.zeros:,}",
                 f"{self.sparsity:.1%}", "", "" if self.flops is None else f"{self.flops:,}"]
        if tfl:
            total.append("")
        head = (f"{self.file}: {self.format}, {self.bytes:,} bytes, {self.params:,} parameters"
                + ("" if self.flops is None else f", {self.flops:,} FLOPs per example"))
        lines = [head, format_table(header, body, footer=[total])]
        if tfl:
            lines.append(self.tflite["summary"])
            ops = ", ".join(f"{k} x{v}" for k, v in self.tflite["ops"].items())
            lines.append(f"ops: {ops}")
        return "\n".join(lines)

    def plot(self, path):
        """Draws per-layer sparsity and size to a PNG (matplotlib, Agg backend).

        Args:
            path: output `.png` (written atomically).

        Returns:
            The path written.
        """
        return _plot(self, path)


def _keras_rows(model):
    from kprune.flops import count_flops

    try:
        flops = count_flops(model, per_layer=True)
    except Exception:  # subclassed or unusual models: no FLOPs
        flops = None
    rows, seen = [], set()
    for name, w, value, layout in _all_rows(model):
        if id(w) not in seen:
            seen.add(id(w))
            rows.append(LayerRow(
                layer=name, weight=_weight_label(name, w), shape=tuple(value.shape),
                dtype=str(np.asarray(value).dtype), params=int(value.size),
                zeros=int(value.size - np.count_nonzero(value)),
                pattern=detect_pattern(value, layout),
                flops=None if flops is None else flops.get(name),
            ))
    total = None if flops is None else int(sum(flops.values()))
    return rows, total


def _tflite_rows(path):
    import tflite_export

    rep = tflite_export.inspect(path)
    by_index = {t.index: t for t in rep.tensors}
    users = {}
    for o in rep.ops:
        for k, i in enumerate(o.inputs):
            if i >= 0:
                users.setdefault(i, []).append((o, k))
    for o in rep.ops:
        if o.op == "DENSIFY" and o.inputs and o.inputs[0] >= 0:
            for out in o.outputs:  # the dense copy is read by the real op
                for uo, k in users.get(out, []):
                    users.setdefault(o.inputs[0], []).append((uo, k))
    op_flops = _tflite_flops(rep)
    from tflite_export.inspect import tensor_values

    dense_values = tensor_values(path, [t.index for t in rep.weights if t.format != "block"])
    rows = []
    for t in rep.weights:
        ops = [o for o, _ in users.get(t.index, []) if o.op != "DENSIFY"]
        weight_of = [o for o, k in users.get(t.index, []) if k == 1 and o.op != "DENSIFY"]
        op = (weight_of or ops or [None])[0]
        values = dense_values.get(t.index)
        if t.format == "block":
            pattern = Pattern("block", block=t.block)
        elif values is None and t.format == "csr":
            pattern = Pattern("csr")
        elif values is not None and values.ndim < 2:
            pattern = detect_pattern(values, Layout(None, None))
        elif values is not None:
            # TFLite weights are [out, ..., in]: move out to the end (Keras layout).
            pattern = detect_pattern(np.moveaxis(values, 0, -1), Layout(-2, -1))
            if pattern.kind == "block":  # back to TFLite's [out, in] orientation
                pattern = Pattern("block", block=pattern.block[::-1])
        elif t.zeros:
            pattern = Pattern("unstructured")
        else:
            pattern = Pattern("dense")
        count = int(np.prod(t.shape, dtype=np.int64)) if t.shape else 1
        zeros = int(round((t.zeros or 0.0) * count))
        rows.append(LayerRow(
            layer=_short_name(t.name), weight=op.op if op else "",
            shape=tuple(t.shape), dtype=t.dtype, params=count, zeros=zeros, pattern=pattern,
            flops=op_flops.get(op.index) if op is not None and weight_of else None,
            storage=t.format, sparse_kernel=bool(t.sparse_kernel), densified=bool(t.densified),
        ))
    info = {
        "ops": rep.op_counts,
        "sparse_kernel_ops": [o.index for o in rep.sparse_kernel_ops],
        "densified_tensors": [t.name for t in rep.densified_tensors],
        "summary": rep.summary(),
    }
    return rep, rows, int(sum(op_flops.values())), info


def _short_name(name, width=40):
    name = name.split(";")[0]
    return name if len(name) <= width else "..." + name[-(width - 3):]


def _tflite_flops(rep):
    by_index = {t.index: t for t in rep.tensors}
    out = {}
    for o in rep.ops:
        if o.op not in ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D") or len(o.inputs) < 2:
            continue
        if o.inputs[1] < 0 or not o.outputs:
            continue
        w, y = by_index[o.inputs[1]], by_index[o.outputs[0]]
        if not w.shape or not y.shape:
            continue
        outs = int(np.prod([max(int(d), 1) for d in y.shape], dtype=np.int64))
        batch = max(int(y.shape[0]), 1)
        if o.op == "FULLY_CONNECTED":
            macs = outs // batch * int(w.shape[-1])
        elif o.op == "CONV_2D":
            macs = outs // batch * int(np.prod(w.shape[1:], dtype=np.int64))
        else:
            macs = outs // batch * int(np.prod(w.shape[1:3], dtype=np.int64))
        out[o.index] = 2 * int(macs)
    return out


def model_report(path):
    """The `kprune report` data for a `.keras` or `.tflite` file.

    `.keras` files load with `safe_mode=True` (no code from the file runs)
    after `tflite_export.files.check_keras_file`; `.tflite` files are
    validated by `tflite_export.inspect` (every index and sparse array).

    Args:
        path: a `.keras`/`.h5` or `.tflite` file.

    Returns:
        A `ModelReport`: `print(report)` shows the per-layer table,
        `report.as_json()` follows `REPORT_SCHEMA`, `report.plot("x.png")`
        draws sparsity and size per layer.

    Raises:
        FileNotFoundError / tflite_export.files.InputFileError / ValueError:
            a missing, corrupt or unsupported file; the message names it.

    Example:
    >>> print(kprune.report.model_report("pruned.keras"))
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such model file: {path!r}")
    ext = os.path.splitext(path)[1].lower()
    size = os.path.getsize(path) if os.path.isfile(path) else 0
    if ext == ".tflite":
        _, rows, flops, info = _tflite_rows(path)
        return ModelReport(path, "tflite", size, sum(r.params for r in rows), flops, rows, info)
    if ext in (".keras", ".h5", ".hdf5"):
        from tflite_export.files import load_keras_file

        model = load_keras_file(path)
        rows, flops = _keras_rows(model)
        params = int(sum(int(np.prod(v.shape)) for v in model.weights))
        return ModelReport(path, "keras", size, params, flops, rows, None)
    from tflite_export.files import InputFileError

    raise InputFileError(
        f"{path!r}: expected a .keras, .h5 or .tflite file (got extension {ext or 'none'!r})"
    )


def _plot(report, path):
    import io

    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import pyplot as plt

    from tflite_export.files import atomic_write

    rows = report.rows
    if not rows:
        raise ValueError(f"{report.file!r} has no weights to plot.")
    labels = [f"{r.layer}/{r.weight}" if report.format == "keras" and r.weight != "kernel"
              else r.layer for r in rows]
    labels = [l if len(l) <= 28 else "..." + l[-25:] for l in labels]
    colors = {"dense": "#9e9e9e", "unstructured": "#1f77b4", "block": "#2ca02c", "nm": "#9467bd",
              "channels": "#d62728", "input_channels": "#ff7f0e", "empty": "#000000",
              "csr": "#17becf"}
    n = len(rows)
    height = max(3.0, 0.32 * n + 1.9)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, height), sharey=True,
                                   gridspec_kw={"width_ratios": [1, 1.2]})
    y = np.arange(n)
    sp = [100 * r.sparsity for r in rows]
    ax1.barh(y, sp, color=[colors.get(r.pattern.kind, "#1f77b4") for r in rows])
    for yi, r, v in zip(y, rows, sp):
        ax1.text(min(v, 100) + 1.5, yi, f"{v:.0f}%  {r.pattern}", va="center", fontsize=8)
    ax1.set_xlim(0, 145)
    ax1.set_xticks([0, 25, 50, 75, 100])
    ax1.set_xlabel("sparsity (% zeros)")
    ax1.set_yticks(y)
    ax1.set_yticklabels(labels, fontsize=8)
    ax1.invert_yaxis()
    kept = [r.params - r.zeros for r in rows]
    totals = [r.params for r in rows]
    ax2.barh(y, totals, color="#d9d9d9", label="all weights")
    ax2.barh(y, kept, height=0.5, color="#1f77b4", label="non-zero")
    ax2.set_xscale("log")
    ax2.set_xlim(1, max(totals) * 30)
    for yi, k, t in zip(y, kept, totals):
        ax2.text(max(t, 1) * 1.15, yi, f"{k:,} / {t:,}", va="center", fontsize=8)
    ax2.set_xlabel("weights per tensor, non-zero / all (log scale)")
    ax2.legend(loc="lower right", fontsize=8, frameon=False)
    from matplotlib.patches import Patch

    kinds = list(dict.fromkeys(r.pattern.kind for r in rows))
    fig.legend(handles=[Patch(color=colors.get(k, "#1f77b4"), label=k) for k in kinds],
               loc="lower left", fontsize=8, frameon=False, ncol=len(kinds),
               title="bar colour = pattern:", title_fontsize=8, bbox_to_anchor=(0.01, 0.0),
               alignment="left")
    for ax in (ax1, ax2):
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(axis="x", alpha=0.3)
    title = (f"{os.path.basename(report.file)} ({report.format}, {report.bytes:,} bytes): "
             f"{report.sparsity:.1%} zeros of {report.reported_params:,} weights")
    if report.flops is not None:
        title += f", {report.flops / 1e6:.2f} MFLOPs"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.55 / height, 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return atomic_write(path, buf.getvalue())
