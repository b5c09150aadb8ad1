"""Chaos: Triton is SIGKILLed under steady load, then restarted on the same port.

A Triton of this test's own (fixed port) behind a gateway (GatewayThread);
16 closed loops of ``Infer`` on route ``digits`` (2 s deadline each) from a
grpc.aio client in a process of its own (``chaos_load.py``). Checked:

* every call in flight at the kill ends within 1 s of it, with OK or
  UNAVAILABLE; no call ends after its deadline; no call hangs;
* the gateway stays up, health says NOT_SERVING (server and route), the
  circuit gauge says open, and the in-flight gauge returns to 0;
* after the restart the first success comes within 1 s of Triton being
  ready (its ServerReady says true), and of the calls started from then on
  until 5 s, those from 1 s on succeed at 99 % or more (the whole 5 s,
  typically 99 % and more too, at 95 % or more).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY
from tritonclient.grpc import service_pb2, service_pb2_grpc

from switchyard.models import BUNDLED_ROUTES
from switchyard.proxy.routes.schema import load_routes
from switchyard.proxy.settings import GatewaySettings
from switchyard.server.local_triton import LocalTriton
from switchyard.server.processes import free_port
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc

from .gateway_thread import GatewayThread
from .waiting import wait_for

CONCURRENCY = 16
DEADLINE_S = 2.0
LOAD_SCRIPT = Path(__file__).with_name("chaos_load.py")
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass(frozen=True)
class Call:
    started: float
    ended: float
    code: str


class Load:
    """The load generator (``chaos_load.py``) in a process of its own, its calls collected as they end.

    Its own process, so that its grpc.aio event loop is the only one there
    (the gateway's loop runs in this one).
    """

    def __init__(self, target: str) -> None:
        self.calls: list[Call] = []
        self.inflight: dict[int, float] = {}
        """Loop number -> start of its call now in flight."""
        self.done = threading.Event()
        self._process = subprocess.Popen(
            [sys.executable, str(LOAD_SCRIPT), target, str(CONCURRENCY), str(DEADLINE_S)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, name="chaos-load-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            kind, *fields = line.split()
            if kind == "S":
                self.inflight[int(fields[0])] = float(fields[1])
            elif kind == "E":
                self.inflight.pop(int(fields[0]), None)
                self.calls.append(Call(float(fields[1]), float(fields[2]), fields[3]))
            elif kind == "DONE":
                self.done.set()

    def stop(self, timeout_s: float) -> bool:
        """Stops the loops after their current call; False if they did not end in time (a hung call)."""
        assert self._process.stdin is not None
        self._process.stdin.close()
        ended = self.done.wait(timeout_s)
        try:
            self._process.wait(5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._reader.join(5)
        assert self._process.stdout is not None
        self._process.stdout.close()
        return ended

    def snapshot(self) -> list[Call]:
        return list(self.calls)


def _triton_ready(url: str) -> bool:
    """Whether Triton answers ServerReady with true (a plain sync call, no event loop of its own)."""
    with grpc.insecure_channel(url) as channel:
        try:
            reply = service_pb2_grpc.GRPCInferenceServiceStub(channel).ServerReady(
                service_pb2.ServerReadyRequest(), timeout=0.2
            )
        except grpc.RpcError:
            return False
    return bool(reply.ready)


def _gauge(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


def _counts(calls: list[Call]) -> dict[str, int]:
    return dict(sorted(Counter(c.code for c in calls).items()))


def test_triton_killed_under_load_then_restarted(model_repository: Path, tmp_path: Path) -> None:
    triton = LocalTriton(model_repository, grpc_port=free_port(), work_dir=tmp_path / "triton")
    triton.start_sync()
    gateway: GatewayThread | None = None
    channel: grpc.Channel | None = None
    try:
        triton.wait_ready_sync(120)
        settings = GatewaySettings(
            triton_url=triton.grpc_url, host="127.0.0.1", port=0, metrics_port=None, health_interval_s=0.5
        )
        gateway = GatewayThread(settings, load_routes(BUNDLED_ROUTES))
        channel = grpc.insecure_channel(gateway.target)
        health = health_pb2_grpc.HealthStub(channel)

        def status(service: str) -> int:
            return health.Check(health_pb2.HealthCheckRequest(service=service), timeout=1).status

        retries_before = _gauge("switchyard_backend_retries_total", endpoint=triton.grpc_url)
        load = Load(gateway.target)
        try:
            wait_for(lambda: sum(c.code == "OK" for c in load.snapshot()) >= 200, 10, "steady load")
            steady = load.snapshot()

            kill_at = time.monotonic()
            triton.kill()
            time.sleep(max(kill_at + 1.0 - time.monotonic(), 0))
            hung = sorted(kill_at - s for s in list(load.inflight.values()) if s < kill_at)
            assert not hung, f"calls started before the kill still running 1 s after it (started s before): {hung}"

            down = wait_for(lambda: status("") == NOT_SERVING, 1.0, "health NOT_SERVING")
            assert status("route/digits") == NOT_SERVING
            assert _gauge("switchyard_backend_circuit_open", endpoint=triton.grpc_url) == 1
            stub = gateway_pb2_grpc.GatewayStub(channel)
            assert stub.ListRoutes(pb.ListRoutesRequest(), timeout=1).routes, "the gateway must stay up"
            time.sleep(0.5)

            restart_at = time.monotonic()
            triton.start_sync()  # from this thread: Triton's parent-death signal is tied to it
            wait_for(lambda: _triton_ready(triton.grpc_url), 120, "Triton ready again")
            ready_at = time.monotonic()
            serving = wait_for(lambda: status("route/digits") == SERVING, 5, "route/digits SERVING again")
            time.sleep(max(ready_at + 5.5 - time.monotonic(), 0))
        finally:
            stopped = load.stop(DEADLINE_S + 3)
        assert stopped, f"load loops did not end: calls still in flight since {sorted(load.inflight.values())}"
        wait_for(lambda: _gauge("switchyard_inflight_requests", route="digits") == 0, 2, "in-flight gauge at 0")

        calls = load.snapshot()
        at_kill = [c for c in calls if c.started < kill_at < c.ended]
        outage = [c for c in calls if kill_at <= c.started < ready_at]
        after = [c for c in calls if c.started >= ready_at]
        first_ok = min(c.ended for c in calls if c.code == "OK" and c.started >= restart_at)
        window = [c for c in after if c.started <= ready_at + 5.0]
        settled = [c for c in window if c.started >= ready_at + 1.0]
        ok_ratio = sum(c.code == "OK" for c in window) / len(window)
        settled_ratio = sum(c.code == "OK" for c in settled) / len(settled)
        fail_fast = sorted(c.ended - c.started for c in outage if c.code != "OK")
        retries = _gauge("switchyard_backend_retries_total", endpoint=triton.grpc_url) - retries_before
        print(
            f"\nsteady: {_counts(steady)}; in flight at the kill: {_counts(at_kill)}, all ended "
            f"{max((c.ended - kill_at for c in at_kill), default=0):.3f} s after it; NOT_SERVING after {down:.2f} s"
            f"\noutage ({ready_at - kill_at:.1f} s): {_counts(outage)}, failed calls took p50 "
            f"{fail_fast[len(fail_fast) // 2] * 1e3:.2f} ms, p99 {fail_fast[int(len(fail_fast) * 0.99)] * 1e3:.2f} ms"
            f"; backend retries {retries:g}"
            f"\nafter Triton was ready: first success {first_ok - ready_at:+.3f} s, route SERVING {serving:.3f} s; "
            f"{_counts(after)}; "
            f"{ok_ratio:.2%} OK in the first 5 s, {settled_ratio:.2%} from 1 s to 5 s"
            f"\nall: {_counts(calls)}"
        )
        assert {c.code for c in calls} <= {"OK", "UNAVAILABLE"}, _counts(calls)
        assert at_kill, "no call was in flight at the kill"
        assert all(c.ended - kill_at <= 1.0 for c in at_kill)
        late = [c.ended - c.started for c in calls if c.ended - c.started > DEADLINE_S]
        assert not late, f"calls that ended after their deadline: {late}"
        assert retries <= 0.1 * len(calls) + 2 * (calls[-1].ended - calls[0].started) + 10, "retries beyond the budget"
        assert first_ok - ready_at <= 1.0
        assert settled_ratio >= 0.99, "calls started 1 s to 5 s after Triton was ready"
        assert ok_ratio >= 0.95, "calls started in the first 5 s after Triton was ready"
    finally:
        if channel is not None:
            channel.close()
        if gateway is not None:
            gateway.stop()
        triton.stop_sync()
