"""A gateway worker past ``worker_max_rss_mb`` is replaced under load, and no call fails in the gateway.

The bound is set below what any worker holds (64 MiB), so the supervisor
replaces its worker at every check: the test sees several replacements while
plain clients (no retries of their own) keep calling.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import grpc
import numpy as np
import psutil
import pytest

from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc
from switchyard.v1.tensors import from_numpy
from tests.integration.serve_process import running_serve
from tests.integration.waiting import wait_for

pytestmark = pytest.mark.integration


def _worker_pids(serve_pid: int) -> set[int]:
    """The live workers of ``serve``: a replaced one is a zombie until reaped, or already gone."""
    pids = set()
    for p in psutil.Process(serve_pid).children():
        try:
            if p.status() != psutil.STATUS_ZOMBIE and "switchyard.server.workers" in " ".join(p.cmdline()):
                pids.add(p.pid)
        except (psutil.ZombieProcess, psutil.NoSuchProcess):  # it ended between the listing and the look
            continue
    return pids


def _recycles(metrics_port: int) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    except urllib.error.HTTPError as exc:  # say why the supervisor's endpoint failed
        raise AssertionError(f"metrics endpoint: {exc}: {exc.read().decode()[-3000:]}") from None
    match = re.search(r'^switchyard_worker_recycles_total\{reason="memory"\} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_a_worker_over_its_memory_bound_is_replaced_without_failing_a_call(
    model_repository: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWITCHYARD_WORKER_MAX_RSS_MB", "64")
    args = ("--model-repository", str(model_repository), "--host", "127.0.0.1", "--port", "0", "--grace-s", "5")
    with running_serve(*args, "--metrics-port", "0", "--data-dir", str(tmp_path / "data"), ready_s=180) as server:
        target, metrics_port = f"127.0.0.1:{server.port}", server.port_after("metrics")
        first = _worker_pids(server.proc.pid)
        assert len(first) == 1, server.log
        request = pb.InferRequest(route="digits", inputs=[from_numpy("image", np.zeros((2, 64), np.float32))])
        codes: Counter[str] = Counter()
        lock, stop = threading.Lock(), threading.Event()

        def client() -> None:
            with grpc.insecure_channel(target) as channel:
                stub = gateway_pb2_grpc.GatewayStub(channel)
                while not stop.is_set():
                    try:
                        stub.Infer(request, timeout=10)
                        code = "OK"
                    except grpc.RpcError as exc:
                        code = f"{exc.code().name}: {exc.details()}"  # type: ignore[attr-defined]
                    with lock:
                        codes[code] += 1

        threads = [threading.Thread(target=client) for _ in range(4)]
        for thread in threads:
            thread.start()
        started = time.monotonic()
        try:
            wait_for(lambda: _recycles(metrics_port) >= 2, 120, "two replacements")
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
        seen = _worker_pids(server.proc.pid)
        print(
            f"\nrecycling: {_recycles(metrics_port):g} replacements in {time.monotonic() - started:.0f} s "
            f"under 4 clients; calls {dict(codes)}; worker pid {sorted(first)} -> {sorted(seen)}"
        )
        # Calls the old worker's transport took in but its server had not handed to a handler yet when it
        # stopped are answered CANCELLED by gRPC core (grpc/grpc#41785, open): a few per thousand replacements'
        # worth of calls at most. Every call the gateway itself saw succeeded: nothing else is allowed.
        core_cancelled = codes.pop("CANCELLED: CANCELLED", 0)
        assert set(codes) == {"OK"}, codes
        assert core_cancelled <= max(3, codes["OK"] // 500), (core_cancelled, codes)
        assert seen and not seen & first, "the first worker still runs"
        assert server.stop() == 0, server.log
