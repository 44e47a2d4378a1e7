"""Reading a .tflite model from bytes or a path, with clear errors."""

from __future__ import annotations

import os

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


def parse_model(data, where="tflite"):
    """Parses validated bytes into the schema's object API (`ModelT`).

    Raises:
        ValueError: the flatbuffer is truncated or corrupt.
    """
    s = schema()
    try:
        model = s.ModelT.InitFromPackedBuf(data, 0)
        _check_buffers(model, len(data))
    except ValueError:
        raise
    except Exception as e:  # flatbuffers raises IndexError/struct.error/...
        raise ValueError(
            f"{where} is a truncated or corrupt TFLite file ({len(data)} bytes): "
            f"{type(e).__name__}: {e}"
        ) from None
    if not model.subgraphs:
        raise ValueError(f"{where} is a corrupt TFLite file: it has no subgraph.")
    return model


def _check_buffers(model, size):
    for buf in model.buffers or []:
        offset = getattr(buf, "offset", 0) or 0
        length = getattr(buf, "size", 0) or 0
        if offset and offset + length > size:
            raise ValueError(
                f"truncated TFLite file: a buffer ends at byte {offset + length} "
                f"but the file has {size} bytes."
            )
