"""Tensor codec: NumPy arrays <-> ``switchyard.v1.Tensor`` messages.

Owns the datatype table of the Open Inference Protocol (``FP32`` <-> float32,
...) and Triton's BYTES encoding (each element a 4-byte little-endian length,
then its bytes). Used by the SDK and by the proxy, so both speak exactly the
same wire format. It does not validate tensors against a route; the proxy's
validation module does that.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping

import numpy as np
import numpy.typing as npt

from switchyard.v1 import gateway_pb2 as pb

# Open Inference Protocol datatype -> NumPy dtype (always little-endian).
DATATYPES: Mapping[str, np.dtype[np.generic]] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(np.object_),
}

_BY_KIND: Mapping[tuple[str, int], str] = {
    (dt.kind, dt.itemsize): name for name, dt in DATATYPES.items() if name != "BYTES"
}

_LENGTH = struct.Struct("<I")


class TensorDecodeError(ValueError):
    """Raised when a tensor's bytes do not match its datatype and shape."""


def itemsize(datatype: str) -> int:
    """Bytes per element of a fixed-size datatype (0 for BYTES)."""
    if datatype == "BYTES":
        return 0
    return DATATYPES[datatype].itemsize


def datatype_of(array: npt.NDArray[np.generic]) -> str:
    """The protocol datatype name for a NumPy array's dtype."""
    dt = array.dtype
    if dt.kind in ("O", "S", "U"):
        return "BYTES"
    name = _BY_KIND.get((dt.kind, dt.itemsize))
    if name is None:
        raise TypeError(f"dtype {dt} has no Open Inference Protocol datatype")
    return name


def element_count(shape: Iterable[int]) -> int:
    count = 1
    for dim in shape:
        count *= int(dim)
    return count


def encode_bytes(array: npt.NDArray[np.generic]) -> bytes:
    """Triton's BYTES serialisation of an array of bytes/str objects."""
    parts: list[bytes] = []
    for item in array.reshape(-1):
        data = item.encode("utf-8") if isinstance(item, str) else bytes(item)
        parts.append(_LENGTH.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def decode_bytes(raw: bytes, count: int) -> npt.NDArray[np.object_]:
    """Inverse of :func:`encode_bytes`; checks every length prefix."""
    # Elements are collected before the array is allocated, so a forged
    # shape fails on the missing bytes instead of costing memory.
    items: list[bytes] = []
    offset = 0
    view = memoryview(raw)
    for i in range(count):
        if offset + 4 > len(raw):
            raise TensorDecodeError(f"BYTES element {i} has no length prefix (data ends at byte {len(raw)})")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > len(raw):
            raise TensorDecodeError(f"BYTES element {i} declares {length} bytes but only {len(raw) - offset} remain")
        items.append(bytes(view[offset : offset + length]))
        offset += length
    if offset != len(raw):
        raise TensorDecodeError(f"BYTES data has {len(raw) - offset} trailing bytes after {count} elements")
    return np.fromiter(items, dtype=np.object_, count=count)


def to_numpy(tensor: pb.Tensor) -> npt.NDArray[np.generic]:
    """Decodes a Tensor message into a NumPy array (zero-copy for numbers)."""
    shape = tuple(int(d) for d in tensor.shape)
    if tensor.datatype not in DATATYPES:
        raise TensorDecodeError(f"unknown datatype {tensor.datatype!r}")
    if any(dim < 0 for dim in shape):
        raise TensorDecodeError(f"shape {list(shape)} has a negative dimension")
    count = element_count(shape)
    if tensor.datatype == "BYTES":
        return decode_bytes(tensor.raw_data, count).reshape(shape)
    dtype = DATATYPES[tensor.datatype]
    expected = count * dtype.itemsize
    if len(tensor.raw_data) != expected:
        raise TensorDecodeError(
            f"raw_data has {len(tensor.raw_data)} bytes, shape {list(shape)} of {tensor.datatype} needs {expected}"
        )
    return np.frombuffer(tensor.raw_data, dtype=dtype).reshape(shape)


def raw_bytes(array: npt.NDArray[np.generic]) -> bytes:
    """The wire bytes of an array: little-endian, row-major."""
    if datatype_of(array) == "BYTES":
        return encode_bytes(array)
    dt = array.dtype
    if dt.byteorder == ">":
        array = array.astype(dt.newbyteorder("<"))
    return np.ascontiguousarray(array).tobytes()


def from_numpy(name: str, array: npt.ArrayLike) -> pb.Tensor:
    """Encodes an array as a Tensor message called ``name``."""
    arr = np.asarray(array)
    return pb.Tensor(name=name, datatype=datatype_of(arr), shape=list(arr.shape), raw_data=raw_bytes(arr))
