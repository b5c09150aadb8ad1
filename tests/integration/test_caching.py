"""Prediction cache, request coalescing and data cache against real Triton (and real Redis).

Backend executions are counted with Triton's own inference statistics, so a
hit is proven by the model not running, not by timing.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client import REGISTRY

from switchyard.models.datasets import digits_png, digits_split
from switchyard.server.local_triton import LocalTriton
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc
from switchyard.v1.tensors import from_numpy, to_numpy
from tests.redis_server import RedisServer

from .gateway_thread import GatewayThread
from .triton_stats import model_counts


def executions(triton: LocalTriton, model: str) -> int:
    """Requests Triton has answered successfully for ``model`` (all versions)."""
    return model_counts(triton.grpc_url, model).requests


def executions_since(triton: LocalTriton, model: str, before: int, expected: int, timeout: float = 3.0) -> int:
    """Executions of ``model`` since ``before``, read once they reach ``expected`` or ``timeout`` passes.

    Triton counts a request in its statistics just after it answers, so a read
    right after the reply may miss the last one.
    """
    deadline = time.monotonic() + timeout
    while True:
        seen = executions(triton, model) - before
        if seen >= expected or time.monotonic() > deadline:
            return seen
        time.sleep(0.02)


def fresh_images(seed: int, n: int = 4) -> np.ndarray:
    """Digit-like inputs no other test sends, so they start uncached."""
    return np.random.default_rng(seed).integers(0, 17, size=(n, 64)).astype(np.float32)


def infer(stub: gateway_pb2_grpc.GatewayStub, route: str, images: np.ndarray, **fields: object) -> pb.InferResponse:
    return stub.Infer(pb.InferRequest(route=route, inputs=[from_numpy("image", images)], **fields), timeout=10)


def test_cache_hit_skips_the_model_and_bypass_refreshes(
    gateway_stub: gateway_pb2_grpc.GatewayStub, local_triton: LocalTriton
) -> None:
    images = fresh_images(1)
    before = executions(local_triton, "digits_logreg")
    first = infer(gateway_stub, "digits_cached", images, request_id="first")
    second = infer(gateway_stub, "digits_cached", images, request_id="second")
    assert (first.cached, second.cached) == (False, True)
    assert second.request_id == "second"
    assert [to_numpy(t).tolist() for t in first.outputs] == [to_numpy(t).tolist() for t in second.outputs]
    assert executions_since(local_triton, "digits_logreg", before, 1) == 1

    bypassed = infer(gateway_stub, "digits_cached", images, bypass_cache=True)
    assert not bypassed.cached
    assert executions_since(local_triton, "digits_logreg", before, 2) == 2

    other = infer(gateway_stub, "digits_cached", fresh_images(2))  # other bytes, other key
    assert not other.cached
    only_label = infer(gateway_stub, "digits_cached", images, outputs=["label"])  # other outputs, other key
    assert not only_label.cached and [t.name for t in only_label.outputs] == ["label"]
    assert executions_since(local_triton, "digits_logreg", before, 4) == 4


def test_identical_requests_in_flight_are_coalesced(gateway_thread: GatewayThread, local_triton: LocalTriton) -> None:
    images = fresh_images(3)
    n = 24

    async def burst() -> list[pb.InferResponse]:
        async with grpc.aio.insecure_channel(gateway_thread.target) as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            request = pb.InferRequest(route="digits_cached", inputs=[from_numpy("image", images)])
            return list(await asyncio.gather(*(stub.Infer(request, timeout=10) for _ in range(n))))

    joined_before = REGISTRY.get_sample_value("switchyard_coalesced_requests_total", {"route": "digits_cached"}) or 0
    before = executions(local_triton, "digits_logreg")
    replies = asyncio.run(burst())
    executed = executions_since(local_triton, "digits_logreg", before, 1)
    assert executed == 1, "N identical requests, one backend execution"
    labels = {tuple(to_numpy(r.outputs[0]).reshape(-1).tolist()) for r in replies}
    assert len(labels) == 1
    joined = (REGISTRY.get_sample_value("switchyard_coalesced_requests_total", {"route": "digits_cached"}) or 0) - (
        joined_before
    )
    cached = sum(r.cached for r in replies)
    # Every request but the first either joined its flight or (arriving after it ended) hit the cache.
    assert joined + cached == n - 1, (joined, cached)
    assert joined > 0


def test_data_cache_skips_preprocessing(gateway_stub: gateway_pb2_grpc.GatewayStub) -> None:
    _, x_test, _, _ = digits_split()
    pngs = np.array(digits_png(x_test[100:108].reshape(-1, 8, 8)), dtype=object)

    def data_hits() -> float:
        return (
            REGISTRY.get_sample_value(
                "switchyard_cache_requests_total", {"cache": "data", "route": "digits_png", "result": "hit"}
            )
            or 0.0
        )

    def pre_runs() -> float:
        return (
            REGISTRY.get_sample_value("switchyard_stage_latency_seconds_count", {"route": "digits_png", "stage": "pre"})
            or 0.0
        )

    hits, runs = data_hits(), pre_runs()
    # bypass_cache skips the prediction cache, so only the data cache can save work.
    request = pb.InferRequest(route="digits_png", inputs=[from_numpy("png", pngs)], bypass_cache=True)
    first = gateway_stub.Infer(request, timeout=10)
    second = gateway_stub.Infer(request, timeout=10)
    assert (data_hits() - hits, pre_runs() - runs) == (1, 1)
    assert [t.raw_data for t in first.outputs] == [t.raw_data for t in second.outputs]

    # A client-chosen key names the inputs: the bytes are not even hashed.
    keyed = pb.InferRequest(route="digits_png", inputs=[from_numpy("png", pngs)], bypass_cache=True, data_key="batch-7")
    gateway_stub.Infer(keyed, timeout=10)
    gateway_stub.Infer(keyed, timeout=10)
    assert (data_hits() - hits, pre_runs() - runs) == (2, 2)


# -- Redis: two gateway processes share hits ----------------------------------

CACHED_ROUTES = """
[[routes]]
name = "digits_shared"
model = "digits_logreg"
cache = { ttl_s = 60 }
"""


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


def start_gateway_process(triton: LocalTriton, routes: Path, redis_url: str) -> tuple[subprocess.Popen[str], str]:
    exe = os.path.join(sys.exec_prefix, "bin", "switchyard")
    env = dict(os.environ, SWITCHYARD_CACHE_BACKEND="redis", SWITCHYARD_REDIS_URL=redis_url)
    proc = subprocess.Popen(
        [exe, "serve", "--triton-url", triton.grpc_url, "--config", str(routes), "--host", "127.0.0.1"]
        + ["--port", "0", "--no-metrics"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if match := re.search(r"serving on [\d.]+:(\d+)", line):
            return proc, f"127.0.0.1:{match.group(1)}"
    proc.kill()
    raise AssertionError("gateway did not start:\n" + "".join(lines))


def test_redis_cache_is_shared_by_two_gateway_processes(
    local_triton: LocalTriton, redis: RedisServer, tmp_path: Path
) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text(CACHED_ROUTES)
    procs = [start_gateway_process(local_triton, routes, redis.url) for _ in range(2)]
    try:
        (_, target_a), (_, target_b) = procs
        images = fresh_images(4)
        before = executions(local_triton, "digits_logreg")
        with grpc.insecure_channel(target_a) as a, grpc.insecure_channel(target_b) as b:
            stub_a, stub_b = gateway_pb2_grpc.GatewayStub(a), gateway_pb2_grpc.GatewayStub(b)
            assert not infer(stub_a, "digits_shared", images).cached
            assert infer(stub_b, "digits_shared", images).cached, "process B hits what process A stored"
            assert executions_since(local_triton, "digits_logreg", before, 1) == 1

            # Redis goes away: calls still succeed, as misses, and promptly.
            redis.stop()
            started = time.monotonic()
            reply = infer(stub_b, "digits_shared", images)
            assert not reply.cached
            assert time.monotonic() - started < 5
            assert executions_since(local_triton, "digits_logreg", before, 2) == 2
    finally:
        for proc, _ in procs:
            proc.terminate()
        for proc, _ in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
            if proc.stdout is not None:
                proc.stdout.close()
