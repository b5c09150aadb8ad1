"""Large inputs through Triton's system shared memory (``proxy/backend/shared_memory.py``), on the real Triton.

A gateway of its own with ``triton_shared_memory = "system"``, a small
threshold and few slots, so that one test sees both ways: through a slot, and
as bytes when the tensor is small, too large for a slot, or no slot is free.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from multiprocessing import shared_memory
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as tritongrpc

from switchyard.models import cnn
from switchyard.models.datasets import digits_split
from switchyard.proxy.backend.shared_memory import SHM_INPUTS, PoolStats, SharedMemoryPool
from switchyard.proxy.routes.schema import parse_routes
from switchyard.proxy.settings import GatewaySettings
from switchyard.server.local_triton import LocalTriton
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc
from switchyard.v1.channel import channel_options
from switchyard.v1.tensors import from_numpy, to_numpy

from ..proxy.array_modules import CUPY
from .gateway_thread import GatewayThread

# No micro-batching: these tests follow each request's own slots.
ROUTES = """
[[routes]]
name = "digits"
model = "digits_logreg"
batching = false

[[routes]]
name = "cnn"
model = "image_cnn"
batching = false

[[routes]]
name = "digits_u8"
model = "digits_logreg"
inputs = [{ name = "image", datatype = "UINT8", shape = [-1, 64] }]
pre = [{ op = "cast", tensor = "image", datatype = "FP32" }]
"""
THRESHOLD = 4096  # a digits batch of 64 rows (16 KB) goes through shared memory, one row (256 B) does not
SLOT_BYTES = 1024 * 1024  # one CNN image (602 KB) fits, two do not
SLOTS = 16
QUARANTINE_S = 4.0
IMAGE = (3, cnn.IMAGE_SIDE, cnn.IMAGE_SIDE)


def _settings(triton: LocalTriton) -> GatewaySettings:
    return GatewaySettings(
        triton_url=triton.grpc_url,
        host="127.0.0.1",
        port=0,
        metrics_port=None,
        max_message_bytes=32 * 1024 * 1024,
        jobs_store="off",
        triton_shared_memory="system",
        triton_shm_threshold_bytes=THRESHOLD,
        triton_shm_slot_bytes=SLOT_BYTES,
        triton_shm_slots=SLOTS,
        triton_shm_quarantine_s=QUARANTINE_S,
    )


@pytest.fixture(scope="module")
def shm_gateway(local_triton: LocalTriton) -> Iterator[GatewayThread]:
    with GatewayThread(_settings(local_triton), parse_routes(ROUTES)) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def stub(shm_gateway: GatewayThread) -> Iterator[gateway_pb2_grpc.GatewayStub]:
    with grpc.insecure_channel(shm_gateway.target, options=channel_options()) as channel:
        yield gateway_pb2_grpc.GatewayStub(channel)


@pytest.fixture(scope="module")
def triton_client(local_triton: LocalTriton) -> Iterator[tritongrpc.InferenceServerClient]:
    client = tritongrpc.InferenceServerClient(local_triton.grpc_url)
    try:
        yield client
    finally:
        client.close()


def _pool(gateway: GatewayThread) -> SharedMemoryPool:
    pool = gateway.gateway._backend
    assert pool is not None
    (backend,) = pool.endpoints.values()
    assert backend.shared_memory is not None
    return backend.shared_memory


def _stats(gateway: GatewayThread) -> PoolStats:
    async def stats() -> PoolStats:  # on the gateway's loop: the pool belongs to it
        return _pool(gateway).stats()

    return gateway.call(stats())


def _count(triton: LocalTriton, way: str) -> float:
    return float(SHM_INPUTS.labels(triton.grpc_url, way)._value.get())


def _regions(client: tritongrpc.InferenceServerClient) -> set[str]:
    return set(client.get_system_shared_memory_status().regions)


def _cnn(stub: gateway_pb2_grpc.GatewayStub, images: np.ndarray, timeout: float = 30.0) -> np.ndarray:
    reply = stub.Infer(pb.InferRequest(route="cnn", inputs=[from_numpy("image", images)]), timeout=timeout)
    return np.asarray(to_numpy(reply.outputs[0]))


def _direct_cnn(client: tritongrpc.InferenceServerClient, images: np.ndarray) -> np.ndarray:
    tensor = tritongrpc.InferInput("image", list(images.shape), "FP32")
    tensor.set_data_from_numpy(images)
    result = client.infer("image_cnn", [tensor], client_timeout=30.0)
    out = result.as_numpy("probabilities")
    assert out is not None
    return out


def _digits(stub: gateway_pb2_grpc.GatewayStub, rows: np.ndarray) -> dict[str, np.ndarray]:
    reply = stub.Infer(pb.InferRequest(route="digits", inputs=[from_numpy("image", rows)]), timeout=30)
    return {t.name: np.asarray(to_numpy(t)) for t in reply.outputs}


def test_large_tensor_through_shared_memory_equals_bytes(
    stub: gateway_pb2_grpc.GatewayStub,
    shm_gateway: GatewayThread,
    local_triton: LocalTriton,
    triton_client: tritongrpc.InferenceServerClient,
) -> None:
    rng = np.random.default_rng(1)
    image = rng.random((1, *IMAGE), dtype=np.float32)
    before = _count(local_triton, "shm")
    through_shm = _cnn(stub, image)
    assert _count(local_triton, "shm") == before + 1
    assert _pool(shm_gateway).region in _regions(triton_client)
    np.testing.assert_array_equal(through_shm, _direct_cnn(triton_client, image))  # the same batch of one: exact
    # Two images (1.2 MB) do not fit a slot: bytes, same answers.
    two = rng.random((2, *IMAGE), dtype=np.float32)
    too_large = _count(local_triton, "bytes_too_large")
    np.testing.assert_array_equal(_cnn(stub, two), _direct_cnn(triton_client, two))
    assert _count(local_triton, "bytes_too_large") == too_large + 1
    assert _stats(shm_gateway) == PoolStats(SLOTS, SLOTS, 0, 0)


def test_small_tensors_go_as_bytes(
    stub: gateway_pb2_grpc.GatewayStub, local_triton: LocalTriton, model_repository: Path
) -> None:
    _, x_test, _, _ = digits_split()
    counts = {way: _count(local_triton, way) for way in ("shm", "bytes_exhausted", "bytes_too_large")}
    out = _digits(stub, x_test[:1])
    assert {way: _count(local_triton, way) for way in counts} == counts
    session = ort.InferenceSession(str(model_repository / "digits_logreg" / "1" / "model.onnx"))
    np.testing.assert_array_equal(out["label"].reshape(-1), session.run(["label"], {"image": x_test[:1]})[0])


def test_concurrent_requests_each_get_their_own_answer(
    stub: gateway_pb2_grpc.GatewayStub, shm_gateway: GatewayThread, local_triton: LocalTriton, model_repository: Path
) -> None:
    _, x_test, _, _ = digits_split()
    rng = np.random.default_rng(2)
    batches = [x_test[rng.permutation(len(x_test))[:64]] for _ in range(32)]  # 32 different 16 KB inputs
    session = ort.InferenceSession(str(model_repository / "digits_logreg" / "1" / "model.onnx"))
    shm_before, exhausted_before = _count(local_triton, "shm"), _count(local_triton, "bytes_exhausted")
    for _ in range(3):
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(lambda rows: _digits(stub, rows), batches))
        for rows, answer in zip(batches, answers, strict=True):
            labels, probabilities = session.run(["label", "probabilities"], {"image": rows})
            np.testing.assert_array_equal(answer["label"].reshape(-1), labels.reshape(-1))
            np.testing.assert_allclose(answer["probabilities"], probabilities, atol=1e-6, rtol=0)
    shm = _count(local_triton, "shm") - shm_before
    exhausted = _count(local_triton, "bytes_exhausted") - exhausted_before
    assert shm + exhausted == 3 * 32 and shm >= SLOTS  # 16 slots for 32 callers: both ways were taken
    assert _stats(shm_gateway) == PoolStats(SLOTS, SLOTS, 0, 0)


def test_abandoned_requests_quarantine_their_slots(
    stub: gateway_pb2_grpc.GatewayStub,
    shm_gateway: GatewayThread,
    local_triton: LocalTriton,
    triton_client: tritongrpc.InferenceServerClient,
) -> None:
    rng = np.random.default_rng(3)
    images = [rng.random((1, *IMAGE), dtype=np.float32) for _ in range(4)]
    expected = [_direct_cnn(triton_client, image) for image in images]
    busy = rng.random((16, *IMAGE), dtype=np.float32)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        # Keep Triton busy (over a second of CNN work) so the short-deadline and the cancelled calls
        # are still waiting in its queue when they end.
        load = [pool.submit(_direct_cnn, triton_client, busy) for _ in range(8)]
        time.sleep(0.05)
        with pytest.raises(grpc.RpcError) as info:
            _cnn(stub, images[0], timeout=0.1)
        assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        cancelled = stub.Infer.future(pb.InferRequest(route="cnn", inputs=[from_numpy("image", images[1])]))
        time.sleep(0.05)
        cancelled.cancel()
        # Meanwhile, and after: other requests get their own answers.
        for image, want in zip(images[2:], expected[2:], strict=True):
            np.testing.assert_array_equal(_cnn(stub, image), want)
        for future in load:
            future.result()
    stats = _stats(shm_gateway)
    assert stats.quarantined == 2 and stats.in_use == 0
    for image, want in zip(images, expected, strict=True):
        np.testing.assert_array_equal(_cnn(stub, image), want)
    time.sleep(QUARANTINE_S)
    assert _stats(shm_gateway) == PoolStats(SLOTS, SLOTS, 0, 0)


def test_region_lost_by_triton_is_registered_again(
    stub: gateway_pb2_grpc.GatewayStub,
    shm_gateway: GatewayThread,
    triton_client: tritongrpc.InferenceServerClient,
) -> None:
    # What a restarted Triton looks like to the gateway: the region is gone, the gateway still thinks it is there.
    region = _pool(shm_gateway).region
    image = np.random.default_rng(4).random((1, *IMAGE), dtype=np.float32)
    _cnn(stub, image)
    triton_client.unregister_system_shared_memory(region)
    assert region not in _regions(triton_client)
    np.testing.assert_array_equal(_cnn(stub, image), _direct_cnn(triton_client, image))
    assert region in _regions(triton_client)
    assert _stats(shm_gateway) == PoolStats(SLOTS, SLOTS, 0, 0)


def test_stop_unregisters_and_removes_the_segment(
    local_triton: LocalTriton, triton_client: tritongrpc.InferenceServerClient
) -> None:
    gateway = GatewayThread(_settings(local_triton), parse_routes(ROUTES))
    try:
        region = _pool(gateway).region
        with grpc.insecure_channel(gateway.target, options=channel_options()) as channel:
            _cnn(gateway_pb2_grpc.GatewayStub(channel), np.zeros((1, *IMAGE), np.float32))
        assert region in _regions(triton_client)
    finally:
        gateway.stop()
    assert region not in _regions(triton_client)
    with pytest.raises(FileNotFoundError):
        shared_memory.SharedMemory(name=region)


@pytest.mark.skipif(CUPY is None, reason="no CUDA device or CuPy: the ops run on NumPy")
def test_inputs_pre_processed_on_the_gpu_reach_triton_through_cuda_shared_memory(
    stub: gateway_pb2_grpc.GatewayStub, triton_client: tritongrpc.InferenceServerClient
) -> None:
    images = np.random.default_rng(5).integers(0, 17, size=(64, 64), dtype=np.uint8)  # 16 KB as FP32
    try:
        reply = stub.Infer(pb.InferRequest(route="digits_u8", inputs=[from_numpy("image", images)]), timeout=30)
    except grpc.RpcError as exc:
        pytest.skip(f"this Triton takes no CUDA shared memory: {exc.details()}")  # type: ignore[attr-defined]
    regions = triton_client.get_cuda_shared_memory_status(as_json=True).get("regions", {})
    if not any(name.startswith("switchyard_cuda_") for name in regions):
        pytest.skip("this Triton has no CUDA shared-memory support (a CPU build): inputs went as bytes")
    direct = stub.Infer(
        pb.InferRequest(route="digits", inputs=[from_numpy("image", images.astype(np.float32))]), timeout=30
    )
    assert [to_numpy(t).tolist() for t in reply.outputs] == [to_numpy(t).tolist() for t in direct.outputs]
