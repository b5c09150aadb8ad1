from __future__ import annotations

import struct

import numpy as np
import pytest

from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1.tensors import (
    DATATYPES,
    TensorDecodeError,
    datatype_of,
    decode_bytes,
    encode_bytes,
    from_numpy,
    itemsize,
    raw_bytes,
    to_numpy,
)

NUMERIC = [name for name in DATATYPES if name != "BYTES"]


def sample(datatype: str) -> np.ndarray:
    """A 2x3 array of ``datatype`` that uses the type's extremes where it has them."""
    dtype = DATATYPES[datatype]
    if datatype == "BOOL":
        return np.array([[True, False, True], [False, False, True]])
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.array([[info.min, 0, 1], [2, info.max - 1, info.max]], dtype=dtype)
    info_f = np.finfo(dtype)
    return np.array([[info_f.min, -1.5, 0.0], [np.inf, info_f.tiny, info_f.max]], dtype=dtype)


@pytest.mark.parametrize("datatype", NUMERIC)
def test_every_numeric_datatype_round_trips(datatype: str) -> None:
    array = sample(datatype)
    tensor = from_numpy("t", array)
    assert tensor.datatype == datatype
    assert list(tensor.shape) == [2, 3]
    assert len(tensor.raw_data) == 6 * itemsize(datatype)
    # The wire carries little-endian bytes whatever the host order.
    assert tensor.raw_data == array.astype(DATATYPES[datatype]).tobytes()
    decoded = to_numpy(pb.Tensor.FromString(tensor.SerializeToString()))
    assert decoded.dtype == DATATYPES[datatype]
    np.testing.assert_array_equal(decoded, array)


def test_fp_nan_survives() -> None:
    decoded = to_numpy(from_numpy("t", np.array([np.nan, 1.0], dtype=np.float16)))
    assert np.isnan(decoded[0]) and decoded[1] == 1.0


def test_big_endian_input_is_sent_little_endian() -> None:
    array = np.array([1, 256], dtype=">i4")
    tensor = from_numpy("t", array)
    assert tensor.datatype == "INT32"
    assert tensor.raw_data == struct.pack("<2i", 1, 256)
    np.testing.assert_array_equal(to_numpy(tensor), [1, 256])


def test_non_contiguous_array_is_sent_row_major() -> None:
    array = np.arange(6, dtype=np.int64).reshape(2, 3).T  # Fortran-ordered view
    np.testing.assert_array_equal(to_numpy(from_numpy("t", array)), array)


def test_scalar_and_empty_shapes_round_trip() -> None:
    scalar = to_numpy(from_numpy("s", np.float32(2.5)))
    assert scalar.shape == () and scalar == np.float32(2.5)
    empty = to_numpy(from_numpy("e", np.zeros((0, 4), dtype=np.int8)))
    assert empty.shape == (0, 4) and empty.dtype == np.int8


def test_numeric_decode_is_zero_copy_and_read_only() -> None:
    decoded = to_numpy(from_numpy("t", np.arange(4, dtype=np.float32)))
    assert not decoded.flags.writeable


def test_bytes_round_trip_with_str_bytes_empty_and_non_ascii() -> None:
    array = np.array([["héllo", ""], ["a\x00b", "x" * 300]], dtype=object)
    array[1, 0] = b"\xff\x00raw"
    tensor = from_numpy("b", array)
    assert tensor.datatype == "BYTES"
    assert list(tensor.shape) == [2, 2]
    decoded = to_numpy(tensor)
    assert decoded.dtype == object and decoded.shape == (2, 2)
    assert decoded.tolist() == [["héllo".encode(), b""], [b"\xff\x00raw", b"x" * 300]]
    assert all(type(item) is bytes for item in decoded.flat)


def test_empty_bytes_tensor_round_trips() -> None:
    decoded = to_numpy(from_numpy("b", np.empty((0, 2), dtype=object)))
    assert decoded.shape == (0, 2) and decoded.dtype == object


def test_bytes_wire_format_is_length_prefixed() -> None:
    assert encode_bytes(np.array([b"ab", b""], dtype=object)) == b"\x02\x00\x00\x00ab\x00\x00\x00\x00"


@pytest.mark.parametrize(
    ("array", "datatype"),
    [
        (np.array(["a", "bc"]), "BYTES"),  # numpy unicode
        (np.array([b"a", b"bc"]), "BYTES"),  # numpy fixed bytes
        (np.array([1, 2], dtype=np.uint16), "UINT16"),
        (np.array([1.0], dtype=np.float64), "FP64"),
    ],
)
def test_datatype_of(array: np.ndarray, datatype: str) -> None:
    assert datatype_of(array) == datatype


def test_string_arrays_decode_as_bytes() -> None:
    assert to_numpy(from_numpy("s", np.array(["a", "bc"]))).tolist() == [b"a", b"bc"]


def test_unsupported_dtype_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"dtype complex64 has no Open Inference Protocol datatype"):
        from_numpy("c", np.zeros(2, dtype=np.complex64))


@pytest.mark.parametrize("datatype", NUMERIC)
@pytest.mark.parametrize("delta", [-1, 1])
def test_numeric_raw_data_of_wrong_length_is_rejected(datatype: str, delta: int) -> None:
    size = 3 * itemsize(datatype) + delta
    tensor = pb.Tensor(name="t", datatype=datatype, shape=[3], raw_data=b"\x00" * size)
    needed = 3 * itemsize(datatype)
    with pytest.raises(
        TensorDecodeError, match=rf"raw_data has {size} bytes, shape \[3\] of {datatype} needs {needed}"
    ):
        to_numpy(tensor)


@pytest.mark.parametrize(
    ("raw", "count", "message"),
    [
        (b"\x05\x00\x00\x00abc", 1, "BYTES element 0 declares 5 bytes but only 3 remain"),
        (b"\x01\x00\x00\x00a\x00\x00\x00", 2, "BYTES element 1 has no length prefix"),
        (b"\x01\x00\x00\x00ab", 1, "BYTES data has 1 trailing bytes after 1 elements"),
        (b"\x00\x00", 1, "BYTES element 0 has no length prefix"),
        (b"", 10**12, "BYTES element 0 has no length prefix"),  # fails before allocating 10**12 slots
    ],
)
def test_bad_bytes_encoding_is_rejected(raw: bytes, count: int, message: str) -> None:
    with pytest.raises(TensorDecodeError, match=message):
        decode_bytes(raw, count)


def test_bad_bytes_tensor_is_rejected_through_to_numpy() -> None:
    tensor = pb.Tensor(name="b", datatype="BYTES", shape=[2], raw_data=b"\x01\x00\x00\x00a")
    with pytest.raises(TensorDecodeError):
        to_numpy(tensor)


def test_unknown_datatype_is_rejected() -> None:
    with pytest.raises(TensorDecodeError, match="unknown datatype 'FP8'"):
        to_numpy(pb.Tensor(name="t", datatype="FP8", shape=[1], raw_data=b"\x00"))


@pytest.mark.parametrize(("datatype", "shape"), [("FP32", [-1]), ("FP32", [-2, -2]), ("BYTES", [-1])])
def test_negative_dimensions_are_rejected(datatype: str, shape: list[int]) -> None:
    tensor = pb.Tensor(name="t", datatype=datatype, shape=shape, raw_data=b"\x00" * 16)
    with pytest.raises(TensorDecodeError, match=r"has a negative dimension"):
        to_numpy(tensor)


def test_raw_bytes_matches_from_numpy() -> None:
    array = np.arange(5, dtype=np.uint32)
    assert raw_bytes(array) == from_numpy("t", array).raw_data
