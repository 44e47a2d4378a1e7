"""TensorBoard event files written (and read back) without TensorFlow.

`kprune.PruningSummaries` logs its sparsity scalars through `EventFileWriter`
on every Keras backend: JAX and torch installs have no TensorFlow, and
TensorBoard only needs the file format, which is small:

* a file `events.out.tfevents.<time>.<host>.<pid>.<n>.kprune` of records,
  each `uint64 length | uint32 masked crc32c(length) | data | uint32 masked
  crc32c(data)` (TFRecord framing, little-endian);
* each record an `Event` protocol buffer: the first holds
  `file_version = "brain.Event:2"`, the others `wall_time`, `step` and a
  `Summary` with one `Value` per scalar, as `tf.summary.scalar` writes it
  (a float32 scalar tensor tagged for TensorBoard's "scalars" plugin).

TensorBoard and `tf.compat.v1.train.summary_iterator` read these files
(tests/test_summaries.py checks it on the TensorFlow leg); `read_scalars`
reads them back without TensorFlow.

Example:
>>> with EventFileWriter("logs/pruning") as w:
...     w.scalar("sparsity/dense", 0.5, step=10)
>>> read_scalars("logs/pruning")
{'sparsity/dense': [(10, 0.5)]}
"""

from __future__ import annotations

import glob
import itertools
import os
import socket
import struct
import time

__all__ = ["EventFileWriter", "read_scalars"]

_COUNTER = itertools.count()


def _crc32c_table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def _crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data):
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value):
    out = bytearray()
    value &= (1 << 64) - 1  # negative int64 as two's complement, as protobuf does
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _field(number, wire_type):
    return _varint((number << 3) | wire_type)


def _bytes_field(number, payload):
    return _field(number, 2) + _varint(len(payload)) + payload


def _event(wall_time, step=None, file_version=None, values=()):
    """An `Event` message: wall_time=1 (double), step=2, file_version=3, summary=5."""
    out = _field(1, 1) + struct.pack("<d", wall_time)
    if step is not None:
        out += _field(2, 0) + _varint(int(step))
    if file_version is not None:
        out += _bytes_field(3, file_version.encode())
    if values:
        summary = b"".join(_bytes_field(1, _value(tag, value)) for tag, value in values)
        out += _bytes_field(5, summary)  # Summary.value = 1 (repeated Value)
    return out


#: SummaryMetadata {plugin_data=1 {plugin_name=1: "scalars"}, data_class=4: DATA_CLASS_SCALAR}
_SCALAR_METADATA = _bytes_field(1, _bytes_field(1, b"scalars")) + _field(4, 0) + _varint(1)


def _value(tag, value):
    """A `Value` as `tf.summary.scalar` writes it: tag=1, metadata=9, tensor=8,
    the tensor a float32 scalar (dtype=1: DT_FLOAT, tensor_shape=2: [], float_val=5)."""
    tensor = (_field(1, 0) + _varint(1) + _bytes_field(2, b"")
              + _bytes_field(5, struct.pack("<f", float(value))))
    return (_bytes_field(1, tag.encode()) + _bytes_field(9, _SCALAR_METADATA)
            + _bytes_field(8, tensor))


def _record(data):
    header = struct.pack("<Q", len(data))
    return (header + struct.pack("<I", _masked_crc(header)) + data
            + struct.pack("<I", _masked_crc(data)))


class EventFileWriter:
    """Appends scalars to a new TensorBoard event file in `log_dir`.

    Args:
        log_dir: directory of the event file (created on the first write).

    Example:
    >>> w = EventFileWriter("logs/pruning")
    >>> w.scalar("sparsity_total", 0.8, step=100)
    >>> w.close()
    """

    def __init__(self, log_dir):
        self.log_dir = os.fspath(log_dir)
        self.path = None
        self._file = None

    def _open(self):
        os.makedirs(self.log_dir, exist_ok=True)
        name = (f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}."
                f"{os.getpid()}.{next(_COUNTER)}.kprune")
        self.path = os.path.join(self.log_dir, name)
        self._file = open(self.path, "ab")
        self._file.write(_record(_event(time.time(), step=0, file_version="brain.Event:2")))

    def scalars(self, values, step):
        """Writes `{tag: value}` (or `(tag, value)` pairs) as one event at `step`."""
        if self._file is None:
            self._open()
        pairs = list(values.items() if isinstance(values, dict) else values)
        self._file.write(_record(_event(time.time(), step=step, values=pairs)))

    def scalar(self, tag, value, step):
        """Writes one scalar `tag` = `value` at `step`."""
        self.scalars([(tag, value)], step)

    def flush(self):
        if self._file is not None:
            self._file.flush()

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _read_varint(data, pos):
    shift = value = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _fields(data):
    """(number, wire_type, value) of a protobuf message's fields."""
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(data, pos)
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        elif wire == 2:
            size, pos = _read_varint(data, pos)
            value, pos = data[pos:pos + size], pos + size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def _tensor_scalar(data):
    """The value of a float32 scalar `TensorProto` (float_val or tensor_content)."""
    for number, wire, value in _fields(data):
        if number == 5:  # float_val, packed (wire 2) or one fixed32 (wire 5)
            return struct.unpack("<f", value[:4])[0]
        if number == 4 and len(value) >= 4:  # tensor_content
            return struct.unpack("<f", value[:4])[0]
    return None


def read_scalars(log_dir):
    """`{tag: [(step, value), ...]}` from every event file under `log_dir`.

    Reads scalar tensors (what `EventFileWriter` and `tf.summary.scalar`
    write) and TF1 `simple_value`s; records
    whose checksum does not match raise a ValueError naming the file.

    Args:
        log_dir: a directory (searched recursively) or one event file.

    Returns:
        A dict from tag to `(step, value)` pairs in file order.
    """
    log_dir = os.fspath(log_dir)
    files = [log_dir] if os.path.isfile(log_dir) else sorted(glob.glob(
        os.path.join(log_dir, "**", "events.out.tfevents.*"), recursive=True))
    out = {}
    for path in files:
        with open(path, "rb") as f:
            data = f.read()
        pos = 0
        while pos + 12 <= len(data):
            header = data[pos:pos + 8]
            (size,) = struct.unpack("<Q", header)
            body = data[pos + 12:pos + 12 + size]
            (crc,) = struct.unpack("<I", data[pos + 12 + size:pos + 16 + size])
            if struct.unpack("<I", data[pos + 8:pos + 12])[0] != _masked_crc(header) \
                    or crc != _masked_crc(body):
                raise ValueError(f"{path!r}: corrupt event record at byte {pos}")
            pos += 16 + size
            step = 0
            values = []
            for number, _, value in _fields(body):
                if number == 2:
                    step = value
                elif number == 5:
                    for n, _, v in _fields(value):
                        if n == 1:
                            tag, scalar = None, None
                            for vn, _, vv in _fields(v):
                                if vn == 1:
                                    tag = vv.decode()
                                elif vn == 2:  # simple_value
                                    scalar = struct.unpack("<f", vv)[0]
                                elif vn == 8:  # a float32 scalar tensor
                                    scalar = _tensor_scalar(vv)
                            if tag is not None and scalar is not None:
                                values.append((tag, scalar))
            for tag, scalar in values:
                out.setdefault(tag, []).append((step, scalar))
    return out
