"""What is inside a .tflite file: ops, tensors, and how each weight is stored.

The flatbuffer is parsed with TFLite's generated schema (shipped with
ai-edge-litert), never guessed from the file size. A constant tensor is
stored one of three ways:

* `dense`: all values;
* `block`: TFLite block-sparse format (a block map in the sparsity
  parameters), e.g. 1x4 blocks of a FullyConnected weight `[out, in]`;
* `csr`: compressed sparse rows with no block.

A FULLY_CONNECTED op whose weight is float32 1x4 block-sparse or int8 1x16
block-sparse runs TFLite's sparse FullyConnected kernel (the fast path). Any
sparse tensor read by a DENSIFY op is expanded to dense when the interpreter
prepares: a smaller file, no speed-up.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tflite_export._source import ITEMSIZE, element_count, load_checked, schema, type_names
from kprune.utils.table import format_table

# Block shapes of TFLite's sparse FullyConnected kernel, by weight dtype.
SPARSE_FC_BLOCKS = {"float32": (1, 4), "int8": (1, 16)}



@dataclasses.dataclass
class TensorInfo:
    """One tensor of the main subgraph.

    Attributes:
        index: tensor index in the subgraph.
        name: tensor name written by the converter.
        shape: shape (TFLite layout, e.g. `[out, in]` for FullyConnected).
        dtype: element type name, e.g. `"float32"`, `"int8"`.
        constant: True when the tensor has data in the file (a weight).
        format: `"dense"`, `"block"` or `"csr"`.
        block: block shape for `"block"` tensors, e.g. `(1, 4)`, else None.
        bytes: bytes stored in the file (values plus sparse index arrays).
        dense_bytes: bytes it would take stored dense.
        zeros: fraction of zeros (over stored values for sparse tensors,
            counting the zeros the format leaves out), None for activations.
        densified: True when a DENSIFY op expands it at load time.
        sparse_kernel: True when it is the weight of a FULLY_CONNECTED op
            that runs TFLite's sparse kernel.
    """

    index: int
    name: str
    shape: tuple
    dtype: str
    constant: bool
    format: str = "dense"
    block: tuple | None = None
    bytes: int = 0
    dense_bytes: int = 0
    zeros: float | None = None
    densified: bool = False
    sparse_kernel: bool = False


@dataclasses.dataclass
class OpInfo:
    """One operator of the main subgraph.

    Attributes:
        index: execution order.
        op: builtin op name (e.g. `"FULLY_CONNECTED"`) or custom code.
        inputs: tensor indices read (-1 for an omitted optional input).
        outputs: tensor indices written.
        sparse_kernel: True for a FULLY_CONNECTED op on TFLite's sparse kernel.
    """

    index: int
    op: str
    inputs: tuple
    outputs: tuple
    sparse_kernel: bool = False


@dataclasses.dataclass
class TFLiteReport:
    """Result of `inspect`: per-tensor and per-op facts about a .tflite file.

    Attributes:
        size: file size in bytes.
        tensors: list of `TensorInfo` (main subgraph).
        ops: list of `OpInfo` (main subgraph, execution order).
        subgraphs: number of subgraphs in the file.
    """

    size: int
    tensors: list
    ops: list
    subgraphs: int = 1

    @property
    def weights(self):
        """Constant tensors (weights and biases)."""
        return [t for t in self.tensors if t.constant]

    @property
    def sparse_tensors(self):
        """Constant tensors stored block-sparse or CSR."""
        return [t for t in self.tensors if t.format != "dense"]

    @property
    def sparse_kernel_ops(self):
        """FULLY_CONNECTED ops that run TFLite's sparse kernel."""
        return [o for o in self.ops if o.sparse_kernel]

    @property
    def densified_tensors(self):
        """Sparse tensors expanded to dense by a DENSIFY op at load time."""
        return [t for t in self.tensors if t.densified]

    @property
    def op_counts(self):
        """dict op name -> count."""
        counts = {}
        for o in self.ops:
            counts[o.op] = counts.get(o.op, 0) + 1
        return counts

    def summary(self):
        """One line: size, ops, and sparse storage."""
        s = self.sparse_tensors
        return (
            f"{self.size:,} bytes, {len(self.ops)} ops, {len(self.weights)} weight "
            f"tensors, {len(s)} sparse ({sum(t.format == 'block' for t in s)} block, "
            f"{sum(t.format == 'csr' for t in s)} CSR), "
            f"{len(self.sparse_kernel_ops)} FULLY_CONNECTED on the sparse kernel, "
            f"{len(self.densified_tensors)} tensors through DENSIFY"
        )

    def __str__(self):
        rows = []
        for t in self.weights:
            how = "dense"
            if t.format == "block":
                how = f"block {t.block[0]}x{t.block[1]}"
            elif t.format == "csr":
                how = "CSR"
            if t.sparse_kernel:
                how += " -> sparse FC kernel"
            elif t.densified:
                how += " -> DENSIFY"
            rows.append([
                t.index, _short(t.name), "x".join(map(str, t.shape)) or "scalar",
                t.dtype, how,
                "" if t.zeros is None else f"{t.zeros:.0%}", f"{t.bytes:,}",
            ])
        table = format_table(
            ["#", "tensor", "shape", "dtype", "storage", "zeros", "bytes"], rows
        )
        ops = ", ".join(f"{k} x{v}" for k, v in self.op_counts.items())
        return f"{self.summary()}\nops: {ops}\n{table}"


def inspect(tflite):
    """Reports every op and tensor of a .tflite model and how weights are stored.

    Args:
        tflite: .tflite bytes or a path to a .tflite file.

    Returns:
        A `TFLiteReport`. `print(report)` shows one table of weights; its
        `sparse_kernel_ops` lists the FULLY_CONNECTED ops that take the sparse
        kernel and `densified_tensors` the tensors that go through DENSIFY.

    Raises:
        FileNotFoundError: missing path.
        ValueError: not a TFLite file, or a truncated/corrupt one: every
            index (buffers, tensors, op inputs/outputs, opcodes, signatures)
            and every sparsity array (traversal order, block map, dense
            sizes, array segments/indices) is checked against what it points
            to; the message names the file and what is wrong.

    Example:
    >>> report = tflite_export.inspect("model.tflite")
    >>> print(report)
    >>> len(report.sparse_kernel_ops)
    3
    """
    data, where, model = load_checked(tflite)
    s = schema()
    op_names = {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}
    dtypes = type_names()
    sg = model.subgraphs[0]
    buffers = model.buffers or []

    tensors = []
    for i, t in enumerate(sg.tensors or []):
        dtype = dtypes[t.type]
        shape = tuple(int(d) for d in (t.shape if t.shape is not None else ()))
        buf = buffers[t.buffer] if 0 < t.buffer < len(buffers) else None
        count = element_count(shape, where)
        stored = _buffer_bytes(buf)
        info = TensorInfo(
            index=i,
            name=_decode(t.name),
            shape=shape,
            dtype=dtype,
            constant=stored > 0,
            bytes=stored,
            dense_bytes=int(count * ITEMSIZE.get(dtype, 0)),
        )
        if info.constant:
            values = _buffer_values(buf, dtype)
            if t.sparsity is not None:
                _describe_sparsity(info, t.sparsity, values)
            elif values is not None and values.size:
                info.zeros = float(np.mean(values == 0))
        tensors.append(info)

    ops = []
    for j, o in enumerate(sg.operators or []):
        code = model.operatorCodes[o.opcodeIndex]
        builtin = max(int(code.builtinCode or 0), int(code.deprecatedBuiltinCode or 0))
        name = op_names.get(builtin, str(builtin))
        if name == "CUSTOM":
            name = f"CUSTOM:{_decode(code.customCode)}"
        inputs = tuple(int(x) for x in (o.inputs if o.inputs is not None else ()))
        outputs = tuple(int(x) for x in (o.outputs if o.outputs is not None else ()))
        ops.append(OpInfo(j, name, inputs, outputs))

    densify_out = {}
    for o in ops:
        if o.op == "DENSIFY" and o.inputs and o.inputs[0] >= 0:
            tensors[o.inputs[0]].densified = True
            for out in o.outputs:
                densify_out[out] = o.inputs[0]
    for o in ops:
        if o.op == "FULLY_CONNECTED" and len(o.inputs) > 1 and o.inputs[1] >= 0:
            w = tensors[o.inputs[1]]
            if w.format == "block" and SPARSE_FC_BLOCKS.get(w.dtype) == w.block:
                o.sparse_kernel = True
                w.sparse_kernel = True
    return TFLiteReport(
        size=len(data), tensors=tensors, ops=ops, subgraphs=len(model.subgraphs)
    )


def tensor_values(tflite, index):
    """Values of constant tensors of the main subgraph, as dense numpy arrays.

    Args:
        tflite: .tflite bytes or path.
        index: a tensor index (`TensorInfo.index`), or a list of them (the
            file is then parsed once).

    Returns:
        A numpy array of the tensor's shape and dtype (a copy); for a list,
        a dict `{index: array or None}` (None: not a dense constant).

    Sparse (CSR or block) tensors are expanded with `densify`.

    Raises:
        ValueError: corrupt file, index out of range, or a tensor that is
            not a constant (activations).

    Example:
    >>> w = tensor_values("model.tflite", report.weights[0].index)
    """
    data, where, model = load_checked(tflite)
    if isinstance(index, (list, tuple)):
        out = {}
        for i in index:
            try:
                out[i] = _dense_values(model, where, i)
            except ValueError:
                out[i] = None
        return out
    return _dense_values(model, where, index)


def _dense_values(model, where, index):
    tensors = model.subgraphs[0].tensors or []
    if not isinstance(index, (int, np.integer)) or not 0 <= index < len(tensors):
        raise ValueError(f"{where}: tensor index {index!r} is not in 0..{len(tensors) - 1}.")
    t = tensors[index]
    buffers = model.buffers or []
    buf = buffers[t.buffer] if 0 < t.buffer < len(buffers) else None
    dtype = type_names()[t.type]
    values = _buffer_values(buf, dtype)
    if values is None:
        raise ValueError(f"{where}: tensor {index} has no constant {dtype} data.")
    shape = tuple(int(d) for d in (t.shape if t.shape is not None else ()))
    if t.sparsity is not None:
        return densify(values, shape, t.sparsity)
    return values.reshape(shape).copy()


def densify(values, shape, sparsity):
    """Expands TFLite sparse storage (CSR or block) to a dense array.

    Follows the TFLite sparsity format: `traversal_order` lists the
    dimensions (the tensor's, then the block dimensions of `block_map`) from
    outer to inner; a DENSE dimension visits every index, a SPARSE_CSR one
    the `array_indices` of its `array_segments`; `values` are the stored
    elements in that order. The parameters must already be validated
    (`parse_model` does it).

    Args:
        values: the stored values (1-D numpy array).
        shape: the dense shape.
        sparsity: the schema's `SparsityParametersT`.

    Returns:
        A numpy array of `shape` (zeros where nothing is stored).
    """
    rank = len(shape)
    order = [int(v) for v in sparsity.traversalOrder]
    block_map = [int(v) for v in (sparsity.blockMap if sparsity.blockMap is not None else [])]
    dims = list(sparsity.dimMetadata)
    blocks = {b: int(dims[rank + k].denseSize) for k, b in enumerate(block_map)}
    coords = np.zeros((1, rank + len(block_map)), dtype=np.int64)
    pos = np.zeros(1, dtype=np.int64)  # position of each partial path at its level
    for level, d in enumerate(dims):
        axis = order[level]
        if int(d.format) == 0:
            size = int(d.denseSize)
            j = np.tile(np.arange(size, dtype=np.int64), len(pos))
            coords = np.repeat(coords, size, axis=0)
            pos = np.repeat(pos, size) * size + j
        else:
            seg = np.asarray(d.arraySegments.values).astype(np.int64)
            idx = np.asarray(d.arrayIndices.values).astype(np.int64)
            counts = seg[pos + 1] - seg[pos]
            starts = np.repeat(seg[pos], counts)
            offsets = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(
                np.cumsum(counts) - counts, counts)
            pos = starts + offsets
            j = idx[pos]
            coords = np.repeat(coords, counts, axis=0)
        coords[:, axis] = j
    full = coords[:, :rank].copy()
    for k, b in enumerate(block_map):
        full[:, b] = full[:, b] * blocks[b] + coords[:, rank + k]
    out = np.zeros(shape, dtype=values.dtype)
    if len(full):
        out[tuple(full.T)] = values[: len(full)]
    return out


def _decode(name):
    if name is None:
        return ""
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)


def _short(name, width=48):
    name = name.split(";")[0]
    return name if len(name) <= width else "..." + name[-(width - 3):]


def _buffer_bytes(buf):
    if buf is None:
        return 0
    if getattr(buf, "data", None) is not None:
        return int(len(buf.data))
    return int(getattr(buf, "size", 0) or 0)


def _buffer_values(buf, dtype):
    if buf is None or getattr(buf, "data", None) is None:
        return None
    try:
        np_dtype = np.dtype(dtype)
    except TypeError:
        return None
    raw = np.asarray(buf.data, dtype=np.uint8)
    if raw.size % np_dtype.itemsize:
        return None
    return raw.view(np_dtype)


def _vector_bytes(vec):
    if vec is None or getattr(vec, "values", None) is None:
        return 0
    return int(np.asarray(vec.values).nbytes)


def _describe_sparsity(info, sp, values):
    dims = sp.dimMetadata or []
    rank = len(info.shape)
    block_map = list(sp.blockMap if sp.blockMap is not None else [])
    index_bytes = sum(
        _vector_bytes(d.arraySegments) + _vector_bytes(d.arrayIndices) for d in dims
    )
    info.bytes += index_bytes
    if block_map:
        info.format = "block"
        block = [1] * rank
        for k, dim in enumerate(block_map):
            block[int(dim)] = int(dims[rank + k].denseSize)
        info.block = tuple(block)
    else:
        info.format = "csr"
    total = element_count(info.shape)
    if values is not None and total:
        info.zeros = 1.0 - float(np.count_nonzero(values)) / total
