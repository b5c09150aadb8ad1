"""Cancelled and expired calls leave no memory behind in the gateway (a fixed count of calls, not a duration).

grpcio's asyncio stack leaks the native operation array of a batch whose
awaiter is cancelled (grpc/grpc#43360): before the gateway stopped cancelling
its backend calls, every client that cancelled or ran out of time while the
gateway waited on Triton left 0.4-0.9 KiB behind. The leak is in native memory,
which tracemalloc does not see, so the gateway runs in this process and glibc's
own count of the bytes it has handed out (``mallinfo2``: allocated, not
resident, so no page-level noise) is read after each round of calls. The
clients run in a child process, so their own memory is not counted.

A slow link between the gateway and Triton keeps every backend call in flight
for a while, so the client's cancellation or deadline lands while the gateway
is waiting on Triton, which is the case that leaked.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import subprocess
import sys
from collections.abc import Iterator

import pytest

from switchyard.models import BUNDLED_ROUTES
from switchyard.proxy.routes.schema import load_routes
from switchyard.proxy.settings import GatewaySettings
from switchyard.server.local_triton import LocalTriton

from .gateway_thread import GatewayThread
from .links import StallingForwarder

pytestmark = pytest.mark.integration

CALLS_PER_ROUND = 2000
ROUNDS = 3
LINK_DELAY_S = 0.03
BOUND_PER_CALL = 120
"""Bytes per cancelled or expired call the gateway may keep. It kept 430-900 before the fix, about 30-60 after."""

# Half the calls are cancelled by the client 5-20 ms in, half have a 5-20 ms deadline: either way the
# gateway is waiting on the slow link when the call ends.
CLIENT = r"""
import sys, threading, time
import grpc, numpy as np
from switchyard.v1 import gateway_pb2 as pb, gateway_pb2_grpc
from switchyard.v1.tensors import from_numpy

target, calls = sys.argv[1], int(sys.argv[2])
channel = grpc.insecure_channel(target)
stub = gateway_pb2_grpc.GatewayStub(channel)
request = pb.InferRequest(route="digits", inputs=[from_numpy("image", np.ones((2, 64), np.float32))])
codes = {}

def work(worker, count):
    for i in range(count):
        wait = 0.005 + 0.005 * ((worker + i) % 4)
        try:
            if i % 2:
                future = stub.Infer.future(request, timeout=10)
                time.sleep(wait)
                future.cancel()
                code = "CANCELLED"
            else:
                stub.Infer(request, timeout=wait)
                code = "OK"
        except grpc.RpcError as exc:
            code = exc.code().name
        codes[code] = codes.get(code, 0) + 1

threads = [threading.Thread(target=work, args=(w, calls // 8)) for w in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(" ".join(f"{k}={v}" for k, v in sorted(codes.items())))
"""


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ] + [("keepcost", ctypes.c_size_t)]


def _allocated() -> int:
    """Bytes glibc's malloc has handed out and not had back (its arenas and its mmap'd blocks)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    gc.collect()
    info = libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


def _has_mallinfo2() -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return hasattr(libc, "mallinfo2")
    except OSError:
        return False


@pytest.fixture
def slow_gateway(local_triton: LocalTriton) -> Iterator[GatewayThread]:
    link = StallingForwarder(local_triton.grpc_url, delay_s=LINK_DELAY_S)
    settings = GatewaySettings(
        triton_url=link.url, host="127.0.0.1", port=0, metrics_port=None, jobs_store="off", health_interval_s=30.0
    )
    gateway = GatewayThread(settings, load_routes(BUNDLED_ROUTES))
    try:
        yield gateway
    finally:
        try:
            gateway.stop()
        finally:
            link.close()


@pytest.mark.skipif(not _has_mallinfo2(), reason="needs glibc's mallinfo2 to count native allocations")
def test_cancelled_and_expired_calls_leave_no_native_memory(slow_gateway: GatewayThread) -> None:
    def round_of_calls() -> str:
        done = subprocess.run(
            [sys.executable, "-c", CLIENT, slow_gateway.target, str(CALLS_PER_ROUND)],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        return done.stdout.strip()

    round_of_calls()  # warm-up: caches, free lists and connections reach their size
    allocated = [_allocated()]
    outcomes = []
    for _ in range(ROUNDS):
        outcomes.append(round_of_calls())
        allocated.append(_allocated())
    growth = [after - before for before, after in zip(allocated, allocated[1:], strict=False)]
    per_call = (allocated[-1] - allocated[0]) / (ROUNDS * CALLS_PER_ROUND)
    print(
        f"\n{ROUNDS} rounds of {CALLS_PER_ROUND} calls (half cancelled, half expiring, over a link "
        f"{LINK_DELAY_S * 1e3:.0f} ms slow): {'; '.join(outcomes)}; native heap growth per round "
        f"{', '.join(f'{g / 1024:+.0f}' for g in growth)} KiB, {per_call:.0f} B per call (bound {BOUND_PER_CALL})"
    )
    assert all("CANCELLED" in o and "DEADLINE_EXCEEDED" in o for o in outcomes), outcomes
    assert per_call < BOUND_PER_CALL
