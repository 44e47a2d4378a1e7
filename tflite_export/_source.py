"""Reading a .tflite model from bytes or a path, with clear errors."""

from __future__ import annotations

import os

import numpy as np

_IDENTIFIER = b"TFL3"


def schema():
    """Returns the generated TFLite flatbuffer schema module.

    The schema ships with ai-edge-litert (`ai_edge_litert.schema_py_generated`)
    and with TensorFlow (`tensorflow.lite.python.schema_py_generated`); the
    first one found is used.
    """
    try:
        from ai_edge_litert import schema_py_generated as s
    except ImportError:  # pragma: no cover - depends on the install
        from tensorflow.lite.python import schema_py_generated as s
    return s


def read_tflite(tflite, name="tflite"):
    """Returns the bytes of a TFLite model given as bytes or a file path.

    Args:
        tflite: `bytes`/`bytearray` holding a .tflite flatbuffer, or a path
            (`str` or `os.PathLike`) to a .tflite file.
        name: parameter name used in error messages.

    Returns:
        `bytes`.

    Raises:
        FileNotFoundError: the path does not exist.
        TypeError: `tflite` is neither bytes nor a path.
        ValueError: the content is not a TFLite flatbuffer.

    Example:
    >>> data = read_tflite("model.tflite")
    """
    if isinstance(tflite, (bytes, bytearray, memoryview)):
        data = bytes(tflite)
        where = f"{name} (bytes)"
    elif isinstance(tflite, (str, os.PathLike)):
        path = os.fspath(tflite)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{name}: no such file: {path!r}.")
        if os.path.isdir(path):
            raise ValueError(f"{name}: {path!r} is a directory, expected a .tflite file.")
        with open(path, "rb") as f:
            data = f.read()
        where = repr(path)
    else:
        raise TypeError(
            f"{name} must be the .tflite bytes or a path to a .tflite file, "
            f"got {type(tflite).__name__}."
        )
    if len(data) < 8 or data[4:8] != _IDENTIFIER:
        raise ValueError(
            f"{where} is not a TFLite model: the flatbuffer identifier "
            f"{_IDENTIFIER.decode()!r} is missing ({len(data)} bytes)."
        )
    return data


def describe(tflite, name="tflite"):
    """How error messages name `tflite`: the path's repr, or `name (bytes)`."""
    if isinstance(tflite, (str, os.PathLike)):
        return repr(os.fspath(tflite))
    return f"{name} (bytes)"


def load_checked(tflite, name="tflite"):
    """Reads, parses and validates a model: returns `(data, where, ModelT)`.

    Args:
        tflite: .tflite bytes or path.
        name: parameter name for error messages about bytes.

    Raises:
        FileNotFoundError, TypeError, ValueError: as `read_tflite` and
            `parse_model`; every message names the file.
    """
    data = read_tflite(tflite, name)
    where = describe(tflite, name)
    return data, where, parse_model(data, where)


def parse_model(data, where="tflite"):
    """Parses validated bytes into the schema's object API (`ModelT`).

    Every index and sparsity array is checked (`validate_model`): LiteRT
    does not check them and reads out of bounds on a corrupt file.

    Raises:
        ValueError: the flatbuffer is truncated or corrupt; the message names
            `where` and what is wrong.
    """
    s = schema()
    try:
        model = s.ModelT.InitFromPackedBuf(data, 0)
    except Exception as e:  # flatbuffers raises IndexError/struct.error/...
        raise ValueError(
            f"{where} is a truncated or corrupt TFLite file ({len(data)} bytes): "
            f"{type(e).__name__}: {str(e)[:200]}"
        ) from None
    if not model.subgraphs:
        raise ValueError(f"{where} is a corrupt TFLite file: it has no subgraph.")
    try:
        validate_model(model, len(data), where)
    except ValueError:
        raise
    except Exception as e:  # a field of an unexpected type: still corrupt
        raise ValueError(
            f"{where} is a corrupt TFLite file: {type(e).__name__}: {str(e)[:200]}"
        ) from None
    return model


# ---------------------------------------------------------------- validation
#
# LiteRT trusts the indices and sparse arrays of a flatbuffer: an index past
# the end of a vector is a native out-of-bounds read. Every index and every
# sparsity array is checked here, against what it points to, before any
# report is built or any file reaches the interpreter.

#: Bytes per element of each TensorType (int4/int2 are packed).
ITEMSIZE = {
    "float32": 4, "float16": 2, "int32": 4, "uint8": 1, "int64": 8, "string": 1,
    "bool": 1, "int16": 2, "complex64": 8, "int8": 1, "float64": 8,
    "complex128": 16, "uint64": 8, "resource": 0, "variant": 0, "uint32": 4,
    "uint16": 2, "int4": 0.5, "bfloat16": 2, "int2": 0.25,
}
#: Largest tensor `validate_model` accepts, in bytes (dense size).
MAX_TENSOR_BYTES = 1 << 40
_MAX_DIM = (1 << 31) - 1


def _ints(values):
    if values is None:
        return []
    try:
        return [int(v) for v in values]
    except (TypeError, ValueError, OverflowError):
        raise ValueError("an integer vector holds non-integers") from None


def _bad(where, what):
    return ValueError(f"{where} is a corrupt TFLite file: {what}.")


def type_names():
    """`{TensorType value: lowercase name}` of the schema."""
    s = schema()
    return {v: k.lower() for k, v in vars(s.TensorType).items() if not k.startswith("_")}


def element_count(shape, where="tflite", what="tensor"):
    """Number of elements of `shape`, checked: no negative dim, no overflow."""
    n = 1
    for d in shape:
        if d < 0 or d > _MAX_DIM:
            raise _bad(where, f"{what} has shape {list(shape)} (a dimension out of range)")
        n *= d
    return n


def validate_model(model, size, where="tflite"):
    """Checks every index and sparsity array of a parsed `ModelT`.

    Args:
        model: the schema's `ModelT`.
        size: file size in bytes.
        where: file name for error messages.

    Raises:
        ValueError: naming `where` and what is wrong.
    """
    buffers = model.buffers or []
    codes = model.operatorCodes or []
    names = type_names()
    for i, buf in enumerate(buffers):
        offset = int(getattr(buf, "offset", 0) or 0)
        length = int(getattr(buf, "size", 0) or 0)
        if offset < 0 or length < 0 or (offset and offset + length > size):
            raise ValueError(
                f"{where} is a truncated or corrupt TFLite file: buffer {i} ends at "
                f"byte {offset + length} but the file has {size} bytes."
            )
    if model.metadataBuffer is not None:
        for b in _ints(model.metadataBuffer):
            if not 0 <= b < len(buffers):
                raise _bad(where, f"metadata buffer index {b} is out of range (0..{len(buffers) - 1})")
    for m in model.metadata or []:
        if not 0 <= int(m.buffer) < len(buffers):
            raise _bad(where, f"metadata buffer index {m.buffer} is out of range (0..{len(buffers) - 1})")
    subgraphs = model.subgraphs or []
    for g, sg in enumerate(subgraphs):
        _validate_subgraph(sg, g, buffers, codes, names, where)
    for sig in model.signatureDefs or []:
        g = int(sig.subgraphIndex)
        if not 0 <= g < len(subgraphs):
            raise _bad(where, f"a signature names subgraph {g}, but the file has {len(subgraphs)}")
        n = len(subgraphs[g].tensors or [])
        for tm in list(sig.inputs or []) + list(sig.outputs or []):
            if not 0 <= int(tm.tensorIndex) < n:
                raise _bad(where, f"a signature names tensor {tm.tensorIndex} of subgraph {g}, "
                                  f"which has {n} tensors")


def _validate_subgraph(sg, g, buffers, codes, names, where):
    tensors = sg.tensors or []
    n = len(tensors)
    for k, t in enumerate(tensors):
        what = f"tensor {k} of subgraph {g}"
        b = int(t.buffer)
        if not 0 <= b < max(len(buffers), 1):
            raise _bad(where, f"{what} points to buffer {b}, but the file has {len(buffers)} buffers")
        if int(t.type) not in names:
            raise _bad(where, f"{what} has an unknown type {t.type}")
        shape = _ints(t.shape)
        count = element_count(shape, where, what)
        dtype = names[int(t.type)]
        itemsize = ITEMSIZE.get(dtype, 0)
        if count * itemsize > MAX_TENSOR_BYTES:
            raise _bad(where, f"{what} has shape {shape}: {count * itemsize:,.0f} bytes")
        sig = _ints(t.shapeSignature)
        if sig and (len(sig) != len(shape) or any(d < -1 or d > _MAX_DIM for d in sig)):
            raise _bad(where, f"{what} has shape signature {sig} for shape {shape}")
        buf = buffers[b] if b < len(buffers) else None
        stored = 0
        if buf is not None and getattr(buf, "data", None) is not None:
            stored = len(buf.data)
        elif buf is not None:
            stored = int(getattr(buf, "size", 0) or 0)
        if t.quantization is not None:
            _validate_quantization(t.quantization, shape, what, where, dtype)
        if t.sparsity is not None:
            values = _validate_sparsity(t.sparsity, shape, what, where)
            if stored and itemsize and stored != values * itemsize:
                raise _bad(where, f"{what} is sparse with {values} stored values "
                                  f"({values * itemsize} bytes), but its buffer has {stored} bytes")
        elif stored and itemsize and dtype != "string" and itemsize >= 1 \
                and stored != count * itemsize:
            raise _bad(where, f"{what} has shape {shape} ({count * itemsize:.0f} bytes of "
                              f"{dtype}), but its buffer has {stored} bytes")
    for name, idx in (("input", sg.inputs), ("output", sg.outputs)):
        for i in _ints(idx):
            if not 0 <= i < n:
                raise _bad(where, f"subgraph {g} {name} {i} is not a tensor index (0..{n - 1})")
    for j, op in enumerate(sg.operators or []):
        what = f"operator {j} of subgraph {g}"
        if not 0 <= int(op.opcodeIndex) < len(codes):
            raise _bad(where, f"{what} has opcode index {op.opcodeIndex}, but the file "
                              f"has {len(codes)} operator codes")
        for name, idx, low in (("input", op.inputs, -1), ("output", op.outputs, 0),
                               ("intermediate", op.intermediates, 0)):
            for i in _ints(idx):
                if not low <= i < n:
                    raise _bad(where, f"{what} {name} {i} is not a tensor index (0..{n - 1})")


_ZERO_POINT_RANGE = {
    "int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767), "int4": (-8, 7),
    "uint16": (0, 65535), "int32": (-(1 << 31), (1 << 31) - 1),
}


def _validate_quantization(q, shape, what, where, dtype=None):
    scale = q.scale if q.scale is not None else []
    zero = q.zeroPoint if q.zeroPoint is not None else []
    if len(zero) and dtype in _ZERO_POINT_RANGE:
        low, high = _ZERO_POINT_RANGE[dtype]
        z = np.asarray(zero, dtype=np.int64)
        if z.min() < low or z.max() > high:
            raise _bad(where, f"{what} ({dtype}) has a zero point out of range {low}..{high}")
    if len(scale) and not np.all(np.isfinite(np.asarray(scale, dtype=np.float64))):
        raise _bad(where, f"{what} has a non-finite quantization scale")
    if len(scale) > 1 or len(zero) > 1:
        dim = int(q.quantizedDimension or 0)
        if not 0 <= dim < len(shape):
            raise _bad(where, f"{what} is quantized along axis {dim} but has rank {len(shape)}")
        if len(scale) != shape[dim] or len(zero) not in (0, len(scale)):
            raise _bad(where, f"{what} has {len(scale)} scales and {len(zero)} zero points "
                              f"for {shape[dim]} channels on axis {dim}")
    if len(zero) > len(scale):
        raise _bad(where, f"{what} has {len(zero)} zero points for {len(scale)} scales")


def _vector(vec):
    if vec is None or getattr(vec, "values", None) is None:
        return None
    return np.asarray(vec.values).astype(np.int64).reshape(-1)


def _validate_sparsity(sp, shape, what, where):
    """Checks TFLite sparsity parameters against `shape`; returns stored values."""
    rank = len(shape)
    order = _ints(sp.traversalOrder)
    block_map = _ints(sp.blockMap)
    dims = list(sp.dimMetadata or [])
    total = rank + len(block_map)
    if sorted(order) != list(range(total)):
        raise _bad(where, f"{what} has traversal order {order}, expected a permutation "
                          f"of 0..{total - 1} (rank {rank} + {len(block_map)} block dims)")
    if any(not 0 <= b < rank for b in block_map) or len(set(block_map)) != len(block_map):
        raise _bad(where, f"{what} has block map {block_map} for rank {rank}")
    if len(dims) != total:
        raise _bad(where, f"{what} has {len(dims)} dimension metadata for {total} "
                          "traversal dimensions")
    # Size of each traversal dimension: original dims (divided by their
    # block size when blocked), then the block sizes.
    sizes = list(shape) + [0] * len(block_map)
    for k, b in enumerate(block_map):
        block = int(dims[rank + k].denseSize)
        if block < 1 or int(dims[rank + k].format) != 0:
            raise _bad(where, f"{what} has block dimension {k} of size {block} "
                              "(expected a dense dimension of positive size)")
        if shape[b] % block:
            raise _bad(where, f"{what} has shape {shape}: axis {b} is not a multiple "
                              f"of its block size {block}")
        sizes[b] = shape[b] // block
        sizes[rank + k] = block
    count = 1
    for k, d in enumerate(dims):
        size = sizes[order[k]]
        fmt = int(d.format)
        if fmt == 0:  # DENSE
            if int(d.denseSize) != size:
                raise _bad(where, f"{what}: dense dimension {k} has dense_size "
                                  f"{d.denseSize}, expected {size}")
            count *= size
        elif fmt == 1:  # SPARSE_CSR
            seg, idx = _vector(d.arraySegments), _vector(d.arrayIndices)
            if seg is None or idx is None:
                raise _bad(where, f"{what}: sparse dimension {k} has no array_segments "
                                  "or array_indices")
            if len(seg) != count + 1 or seg[0] != 0:
                raise _bad(where, f"{what}: sparse dimension {k} has {len(seg)} array "
                                  f"segments, expected {count + 1} starting at 0")
            if np.any(np.diff(seg) < 0) or seg[-1] != len(idx):
                raise _bad(where, f"{what}: sparse dimension {k} has array segments that "
                                  f"are not non-decreasing up to {len(idx)} indices")
            if idx.size and (idx.min() < 0 or idx.max() >= size):
                raise _bad(where, f"{what}: sparse dimension {k} has an array index out "
                                  f"of range 0..{size - 1}")
            count = len(idx)
        else:
            raise _bad(where, f"{what}: dimension {k} has unknown format {fmt}")
    return count
