"""A pool of Tritons behind one gateway: failover with no failed call, rejoining, balancing away from a slow one.

Each test runs Tritons of its own on a small repository (the digits model
only, so they start in seconds) and kills or slows them; every test prints its
figures (``pytest -s``).
"""

from __future__ import annotations

import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from switchyard.models.datasets import digits_split
from switchyard.proxy.routes.schema import parse_routes
from switchyard.proxy.settings import GatewaySettings
from switchyard.server.local_triton import LocalTriton
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc
from switchyard.v1.tensors import from_numpy

from .gateway_thread import GatewayThread
from .links import StallingForwarder
from .waiting import wait_for

pytestmark = pytest.mark.integration

ROUTES = parse_routes('[[routes]]\nname = "digits"\nmodel = "digits_logreg"\n', "pool routes")
MODEL = "digits_logreg"


@pytest.fixture(scope="module")
def digits_repository(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository holding the digits model alone."""
    repository = tmp_path_factory.mktemp("digits-only")
    shutil.copytree(model_repository / MODEL, repository / MODEL)
    return repository


@pytest.fixture
def two_tritons(digits_repository: Path, tmp_path: Path) -> Iterator[list[LocalTriton]]:
    tritons = [LocalTriton(digits_repository, work_dir=tmp_path / f"triton-{i}") for i in range(2)]
    try:
        for triton in tritons:
            triton.start_sync()
        for triton in tritons:
            triton.wait_ready_sync(120)
        yield tritons
    finally:
        for triton in tritons:
            triton.stop_sync()


def _gateway(triton_url: str) -> GatewayThread:
    settings = GatewaySettings(
        triton_url=triton_url, host="127.0.0.1", port=0, metrics_port=None, jobs_store="off", health_interval_s=0.2
    )
    return GatewayThread(settings, ROUTES)


def _answered(endpoint: str) -> float:
    return REGISTRY.get_sample_value("switchyard_backend_requests_total", {"endpoint": endpoint, "code": "OK"}) or 0.0


def _failovers(endpoint: str) -> float:
    return REGISTRY.get_sample_value("switchyard_backend_failovers_total", {"endpoint": endpoint}) or 0.0


def _health(channel: grpc.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return int(stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status)


class SteadyLoad:
    """``threads`` clients calling ``digits`` back to back (deadline 5 s), each call's outcome timed."""

    def __init__(self, target: str, threads: int = 8) -> None:
        self._channel = grpc.insecure_channel(target)
        self._stub = gateway_pb2_grpc.GatewayStub(self._channel)
        images = digits_split().X_test[:64]
        self._request = pb.InferRequest(route="digits", inputs=[from_numpy("image", images[:4])])
        self.outcomes: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        self._channel.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._stub.Infer(self._request, timeout=5)
                code = "OK"
            except grpc.RpcError as exc:
                code = exc.code().name  # type: ignore[attr-defined]
            with self._lock:
                self.outcomes.append((time.monotonic(), code))

    def between(self, start: float, end: float) -> Counter[str]:
        with self._lock:
            return Counter(code for at, code in self.outcomes if start <= at < end)


def test_a_killed_triton_costs_no_call_and_rejoins(two_tritons: list[LocalTriton]) -> None:
    first, second = two_tritons
    gateway = _gateway(f"{first.grpc_url},{second.grpc_url}")
    channel = grpc.insecure_channel(gateway.target)
    try:
        failovers_before = _failovers(first.grpc_url)
        with SteadyLoad(gateway.target) as load:
            t0 = time.monotonic()
            wait_for(lambda: _answered(first.grpc_url) > 20 and _answered(second.grpc_url) > 20, 20, "both serve")
            time.sleep(1.0)
            killed_at = time.monotonic()
            first.kill()
            time.sleep(3.0)
            restarted_at = time.monotonic()
            answered_before_restart = _answered(first.grpc_url)
            first.start_sync()
            first.wait_ready_sync(120)
            back = wait_for(lambda: _answered(first.grpc_url) > answered_before_restart + 20, 30, "killed one rejoins")
            rejoined_at = time.monotonic()
            time.sleep(1.0)
            ended = time.monotonic()
        before, during, after = (
            load.between(t0, killed_at),
            load.between(killed_at, rejoined_at),
            load.between(rejoined_at, ended),
        )
        total = before + during + after
        failed = sum(n for code, n in total.items() if code != "OK")

        def rate(counts: Counter[str], seconds: float) -> str:
            return f"{counts['OK'] / seconds:.0f}/s"

        print(
            f"\nfailover: {sum(total.values())} calls, {failed} failed, "
            f"{_failovers(first.grpc_url) - failovers_before:g} sent to the other Triton after the kill; "
            f"throughput before {rate(before, killed_at - t0)}, with one Triton "
            f"{rate(during, rejoined_at - killed_at)}, after it rejoined {rate(after, ended - rejoined_at)}; "
            f"the restarted Triton took calls again {back:.1f} s after it was ready "
            f"({restarted_at - killed_at:.1f} s after the kill it was started again)"
        )
        assert failed == 0, total

        # Both down: calls fail fast with UNAVAILABLE and health turns NOT_SERVING.
        first.kill()
        second.kill()
        stub = gateway_pb2_grpc.GatewayStub(channel)
        request = pb.InferRequest(route="digits", inputs=[from_numpy("image", np.zeros((1, 64), np.float32))])
        for _ in range(5):
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as info:
                stub.Infer(request, timeout=5)
            assert info.value.code() is grpc.StatusCode.UNAVAILABLE, info.value.details()
            assert time.monotonic() - started < 2.0
        wait_for(lambda: _health(channel, "") == health_pb2.HealthCheckResponse.NOT_SERVING, 5, "NOT_SERVING")
        assert _health(channel, "route/digits") == health_pb2.HealthCheckResponse.NOT_SERVING
        assert _health(channel, "liveness") == health_pb2.HealthCheckResponse.SERVING
    finally:
        channel.close()
        gateway.stop()


def test_calls_go_mostly_to_the_fast_endpoint(local_triton: LocalTriton) -> None:
    slow = StallingForwarder(local_triton.grpc_url, delay_s=0.05)
    fast = local_triton.grpc_url
    gateway = _gateway(f"{fast},{slow.url}")
    try:
        fast_before, slow_before = _answered(fast), _answered(slow.url)
        with SteadyLoad(gateway.target, threads=8) as load:
            wait_for(lambda: len(load.outcomes) >= 400, 60, "400 calls")
        to_fast, to_slow = _answered(fast) - fast_before, _answered(slow.url) - slow_before
        codes = Counter(code for _, code in load.outcomes)
        share = to_fast / (to_fast + to_slow)
        print(
            f"\nbalancing: {sum(codes.values())} calls ({dict(codes)}) over a direct endpoint and one 50 ms slower: "
            f"{to_fast:g} to the fast one, {to_slow:g} to the slow one ({share:.0%} fast)"
        )
        assert set(codes) == {"OK"}
        assert share > 0.8
    finally:
        gateway.stop()
        slow.close()
