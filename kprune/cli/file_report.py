"""`kprune report`: the per-layer report of a `.keras` or `.tflite` file.

* `model_report(path)`: per-layer table, parameters, FLOPs, and for `.tflite`
  which ops run the sparse kernel and which tensors go through DENSIFY;
  `.as_json()` follows `REPORT_SCHEMA`, `.plot(png)` draws it.

It reads files through `tflite_export` (loading, inspection), so it lives
with the command line, above both packages.
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np

from kprune.core.masking import Layout
from kprune.core.wrapping import find_wrappers, strip_pruning
from kprune.reports.flops import count_flops
from kprune.reports.sparsity import Pattern, detect_pattern, weight_label, weight_rows
from kprune.utils.table import format_table

__all__ = ["ModelReport", "LayerRow", "model_report", "REPORT_SCHEMA"]

# --------------------------------------------------------------------------
# kprune report: .keras and .tflite files
# --------------------------------------------------------------------------

#: The `--json` schema of `kprune report` (`ModelReport.as_json()`).
REPORT_SCHEMA = {
    "schema": "'kprune.report/1'",
    "file": "str: the path given",
    "format": "'keras' or 'tflite'",
    "bytes": "int: file size",
    "params": "int: scalars in the model's weights, kprune's masks and step counters not "
              "counted (keras) / in the constant tensors, index and shape constants not "
              "counted (tflite)",
    "reported_params": "int: scalars in the rows below",
    "zeros": "int: zeros in the rows below",
    "sparsity": "float: zeros / reported_params",
    "flops": "int: FLOPs of one example, 2 x multiply-accumulates (kprune.count_flops; "
             "for tflite from FULLY_CONNECTED/CONV_2D/DEPTHWISE_CONV_2D shapes)",
    "layers": [{
        "layer": "str: Keras layer name (for tflite: read from the converter's tensor "
                 "names, e.g. 'functional_1/fc1_1/MatMul' -> 'fc1')",
        "weight": "str: weight path below the layer ('kernel', ...) / tflite op and role "
                  "('FULLY_CONNECTED kernel')",
        "tensor": "tflite only: str, the tensor's name in the file (null for keras)",
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
    tensor: str | None = None

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
            "densified": self.densified, "tensor": self.tensor,
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
            header[1] = "op"
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


def _keras_rows(model, plain):
    """Rows from `model` (masked values of wrapped layers); FLOPs from `plain`,
    the same model without kprune's wrappers."""
    try:
        flops = count_flops(plain, per_layer=True)
    except Exception:  # subclassed or unusual models: no FLOPs
        flops = None
    rows, seen = [], set()
    for name, w, value, layout in weight_rows(model):
        if id(w) not in seen:
            seen.add(id(w))
            rows.append(LayerRow(
                layer=name, weight=weight_label(name, w), shape=tuple(value.shape),
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
    from tflite_export.inspection import tensor_values

    dense_values = tensor_values(path, [t.index for t in rep.weights if t.format != "block"])
    rows = []
    for t in rep.weights:
        ops = [o for o, _ in users.get(t.index, []) if o.op != "DENSIFY"]
        weight_of = [o for o, k in users.get(t.index, []) if k == 1 and o.op != "DENSIFY"]
        op = (weight_of or ops or [None])[0]
        role = _role(t, users.get(t.index, []))
        if role is None:
            continue  # an index or shape constant (Reshape, StridedSlice ...): no parameter
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
            layer=_layer_name(t, op, by_index),
            weight=f"{op.op} {role}".strip() if op else role,
            shape=tuple(t.shape), dtype=t.dtype, params=count, zeros=zeros, pattern=pattern,
            flops=op_flops.get(op.index) if op is not None and weight_of else None,
            storage=t.format, sparse_kernel=bool(t.sparse_kernel), densified=bool(t.densified),
            tensor=t.name,
        ))
    info = {
        "ops": rep.op_counts,
        "sparse_kernel_ops": [o.index for o in rep.sparse_kernel_ops],
        "densified_tensors": [t.name for t in rep.densified_tensors],
        "summary": rep.summary(),
    }
    return rep, rows, int(sum(op_flops.values())), info


#: Ops whose input 1 is a kernel and input 2 a bias (int32 for int8 models).
_WEIGHT_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "CONV_3D", "TRANSPOSE_CONV",
               "BATCH_MATMUL")


def _role(tensor, uses):
    """"kernel", "bias", "" (another parameter) or None (an index/shape constant)."""
    for o, k in uses:
        if o.op in _WEIGHT_OPS:
            if o.op == "TRANSPOSE_CONV":
                k = {1: 1, 3: 2}.get(k, k)  # (output_shape, weights, input, bias)
            if k == 1:
                return "kernel"
            if k == 2:
                return "bias"
    if tensor.dtype.startswith(("int32", "int64", "uint32", "uint64", "bool")):
        return None
    return ""


def _layer_name(tensor, op, by_index):
    """The Keras layer a tflite weight belongs to, read from the converter's names.

    TensorFlow traces a Keras model under name scopes `model/layer/...`,
    uniquified with a `_1` suffix (`functional_1/fc1_1/MatMul`); constants
    the converter made up (`arith.constant`, `StatefulPartitionedCall:0`)
    are named through the op that reads them.
    """
    candidates = [tensor.name]
    if op is not None:
        candidates += [by_index[i].name for i in op.outputs if i in by_index]
    for name in candidates:
        parts = name.split(";")[0].split("/")
        if len(parts) >= 3:
            return re.sub(r"_\d+$", "", parts[1])
    return _short_name(tensor.name)


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
    validated by `tflite_export.inspection` (every index and sparse array).

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
    >>> print(kprune.reports.sparsity.model_report("pruned.keras"))
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
        # A pruned model still in its wrappers: its masks and step counters
        # are not parameters, and FLOPs are those of the layers inside.
        plain = strip_pruning(model) if find_wrappers(model) else model
        rows, flops = _keras_rows(model, plain)
        params = int(sum(int(np.prod(v.shape)) for v in plain.weights))
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
