"""Inputs left on the GPU by pre-processing: kept there by the ops, copied into CUDA slots, named in the request.

The NumPy cases run everywhere; the CuPy ones where a CUDA device and CuPy
exist (scripts/gpu_check.sh runs them on a GPU machine).
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from switchyard.proxy.backend.cuda_shared_memory import CudaSharedMemoryPool, DeviceTensor, as_message
from switchyard.proxy.backend.triton import TritonBackend
from switchyard.proxy.ops import build_op
from switchyard.proxy.routes.base import run_ops, run_ops_on_device
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1.tensors import from_numpy, to_numpy

from .array_modules import CUPY

needs_cupy = pytest.mark.skipif(CUPY is None, reason="no CUDA device or CuPy")

OPS = [
    build_op("cast", {"tensor": "x", "datatype": "FP32"}, "pre[0]"),
    build_op("scale", {"tensor": "x", "factor": 0.5}, "pre[1]"),
]
IMAGE = np.arange(2 * 64 * 64, dtype=np.uint8).reshape(2, 64, 64)


def _pool(slots: int = 2, slot_bytes: int = 1 << 16) -> CudaSharedMemoryPool:
    return CudaSharedMemoryPool(slots=slots, slot_bytes=slot_bytes, threshold_bytes=1024, quarantine_s=60.0)


async def test_on_numpy_the_ops_answer_messages_as_always() -> None:
    tensors = await run_ops_on_device(OPS, [from_numpy("x", IMAGE)], ["x"])
    expected = await run_ops(OPS, [from_numpy("x", IMAGE)], ["x"])
    if CUPY is None:
        assert all(isinstance(t, pb.Tensor) for t in tensors)
    assert [as_message(t) for t in tensors] == expected


@needs_cupy
async def test_on_cupy_the_ops_leave_their_outputs_on_the_device() -> None:
    (tensor,) = await run_ops_on_device(OPS, [from_numpy("x", IMAGE)], ["x"])
    assert isinstance(tensor, DeviceTensor)
    assert (tensor.name, tensor.datatype, tensor.shape) == ("x", "FP32", [2, 64, 64])
    np.testing.assert_array_equal(to_numpy(tensor.to_message()), IMAGE.astype(np.float32) * 0.5)


@needs_cupy
def test_a_slot_holds_the_tensors_bytes_and_follows_the_slot_lifecycle() -> None:
    assert CUPY is not None
    pool = _pool()
    assert len(pool.raw_handle) == 64  # a cudaIpcMemHandle_t
    array = CUPY.asarray(np.random.default_rng(0).random((4, 1024), dtype=np.float32))
    tensor = DeviceTensor("x", "FP32", array)
    first, second = pool.take(tensor), pool.take(tensor)
    assert first is not None and second is not None and first != second
    assert pool.take(tensor) is None, "two slots, both taken"
    assert pool.read(first, tensor.nbytes) == array.get().tobytes()
    pool.release(first)
    pool.quarantine(second)
    assert (pool.stats().free, pool.stats().quarantined) == (1, 1)
    assert pool.take(DeviceTensor("big", "FP32", CUPY.zeros((1 << 15,), CUPY.float32))) is None, "larger than a slot"
    pool.close()


@needs_cupy
async def test_a_device_input_is_named_by_region_not_sent_as_bytes() -> None:
    assert CUPY is not None
    pool = _pool()
    pool.registered = True  # as after CudaSharedMemoryRegister: no Triton needed to build the request
    backend = TritonBackend("127.0.0.1:1", max_message_bytes=1 << 20, cuda_shared_memory=pool)
    try:
        device = DeviceTensor("x", "FP32", CUPY.asarray(IMAGE.astype(np.float32)))
        small = from_numpy("y", np.ones((2, 1), np.float32))
        raws: list[bytes | None] = [None, small.raw_data]
        request, slots = await backend._infer_request("m", "", "id", [device, small], raws, [], 1e9)
        (x, y) = request.inputs
        assert x.parameters["shared_memory_region"].string_param == pool.region
        assert x.parameters["shared_memory_byte_size"].int64_param == device.nbytes
        offset = x.parameters["shared_memory_offset"].int64_param
        assert pool.read(offset, device.nbytes) == IMAGE.astype(np.float32).tobytes()
        assert "shared_memory_region" not in y.parameters
        assert list(request.raw_input_contents) == [small.raw_data], "only the host input travels as bytes"
        assert raws[0] is None, "the device tensor was never copied to the host"
        assert slots == [(pool, offset)]
    finally:
        await backend.close()
        await asyncio.sleep(0)


@needs_cupy
async def test_without_a_cuda_pool_a_device_input_travels_as_its_bytes() -> None:
    assert CUPY is not None
    backend = TritonBackend("127.0.0.1:1", max_message_bytes=1 << 20)
    try:
        device = DeviceTensor("x", "FP32", CUPY.asarray(IMAGE.astype(np.float32)))
        request, slots = await backend._infer_request("m", "", "id", [device], [None], [], 1e9)
        assert list(request.raw_input_contents) == [IMAGE.astype(np.float32).tobytes()] and slots == []
    finally:
        await backend.close()
