"""Rolling restart under load: two `switchyard serve` workers replaced one at a time, no call fails.

A load process (this file run as a script: sync clients in threads, no
event loop of its own) sends ``digits`` calls round-robin to both workers and,
like a load balancer, retries a call that gets UNAVAILABLE on the *other*
worker. Each backend link is slowed down, so every call is in flight for a
while: at the moment a worker gets SIGTERM some calls are still running on it,
and they must complete OK (the drain), while new calls are refused with
UNAVAILABLE and the worker exits 0 within its grace period.

Load protocol (stdin): ``SET <worker> <target>`` points a worker at a new
address, ``STOP`` (or EOF) ends the run. Stdout: one line per finished call,
``E <worker> <started> <ended> <first code> <final code> <attempts>``
(``time.monotonic()`` seconds), then ``DONE``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import grpc
import numpy as np

from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc
from switchyard.v1.channel import channel_options
from switchyard.v1.tensors import from_numpy

LINK_DELAY_S = 0.25  # every backend call is in flight at least this long
GRACE_S = 10.0
LOAD_THREADS = 8
CALL_TIMEOUT_S = 5.0
MAX_ATTEMPTS = 6


class GatewayProcess:
    """`switchyard serve` as a child process on a free loopback port; its output is drained in a thread."""

    def __init__(self, triton_url: str, *extra: str, env: dict[str, str] | None = None) -> None:
        exe = os.path.join(sys.exec_prefix, "bin", "switchyard")
        self.proc = subprocess.Popen(
            [exe, "serve", "--triton-url", triton_url, "--host", "127.0.0.1", "--port", "0", "--no-metrics", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 90
        self.target = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            if match := re.search(r"serving on [\d.]+:(\d+)", line):
                self.target = f"127.0.0.1:{match.group(1)}"
                break
        if not self.target:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("gateway did not start:\n" + "".join(self.lines))
        self._drain = threading.Thread(target=self._read, daemon=True)
        self._drain.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def terminate(self, timeout_s: float) -> int:
        """SIGTERM, then the exit status (killed and failed if it takes longer than ``timeout_s``)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"gateway did not exit within {timeout_s} s:\n" + "".join(self.lines)) from None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._drain.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# -- the load process -----------------------------------------------------------

REQUEST = pb.InferRequest(route="digits", inputs=[from_numpy("image", np.zeros((1, 64), np.float32))])


def _load_main(targets: list[str]) -> None:
    lock = threading.Lock()
    stop = threading.Event()
    stubs: dict[str, gateway_pb2_grpc.GatewayStub] = {}
    channels: list[grpc.Channel] = []

    def stub_for(worker: int) -> gateway_pb2_grpc.GatewayStub:
        with lock:
            target = targets[worker]
            if target not in stubs:
                channel = grpc.insecure_channel(target, options=channel_options())
                channels.append(channel)
                stubs[target] = gateway_pb2_grpc.GatewayStub(channel)
            return stubs[target]

    def loop(number: int) -> None:
        n = number
        while not stop.is_set():
            first_worker = worker = n % len(targets)
            n += 1
            started = time.monotonic()
            first = code = ""
            attempts = 0
            while attempts < MAX_ATTEMPTS:
                attempts += 1
                try:
                    stub_for(worker).Infer(REQUEST, timeout=CALL_TIMEOUT_S)
                    code = "OK"
                except grpc.RpcError as exc:
                    code = exc.code().name  # type: ignore[attr-defined]
                first = first or code
                if code != "UNAVAILABLE":
                    break
                worker = (worker + 1) % len(targets)  # the balancer's retry: the other worker
                time.sleep(0.02)
            line = f"E {first_worker} {started:.6f} {time.monotonic():.6f} {first} {code} {attempts}\n"
            with lock:
                sys.stdout.write(line)
                sys.stdout.flush()

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(LOAD_THREADS)]
    for t in threads:
        t.start()
    for line in sys.stdin:
        parts = line.split()
        if parts and parts[0] == "SET":
            with lock:
                targets[int(parts[1])] = parts[2]
        elif parts and parts[0] == "STOP":
            break
    stop.set()
    for t in threads:
        t.join()
    for channel in channels:
        channel.close()
    print("DONE", flush=True)


# -- the test -------------------------------------------------------------------------


@dataclass
class Call:
    worker: int
    started: float
    ended: float
    first: str
    final: str
    attempts: int


def _calls(output: str) -> list[Call]:
    calls = []
    for line in output.splitlines():
        parts = line.split()
        if parts and parts[0] == "E":
            calls.append(Call(int(parts[1]), float(parts[2]), float(parts[3]), parts[4], parts[5], int(parts[6])))
    return calls


def test_rolling_restart_under_load_fails_no_call(local_triton) -> None:  # type: ignore[no-untyped-def]
    from .links import StallingForwarder

    link = StallingForwarder(local_triton.grpc_url, delay_s=LINK_DELAY_S)
    extra = ("--grace-s", str(GRACE_S))
    workers = [GatewayProcess(link.url, *extra), GatewayProcess(link.url, *extra)]
    started: list[GatewayProcess] = list(workers)
    load = subprocess.Popen(
        [sys.executable, __file__, workers[0].target, workers[1].target],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    sigterms: list[tuple[int, float]] = []
    try:
        assert load.stdin is not None
        time.sleep(1.5)
        for index in (0, 1):
            old = workers[index]
            sigterms.append((index, time.monotonic()))
            rc = old.terminate(GRACE_S + 10)
            assert rc == 0, "".join(old.lines)
            drained = "".join(old.lines)
            assert "draining in-flight calls" in drained
            workers[index] = GatewayProcess(link.url, *extra)
            started.append(workers[index])
            load.stdin.write(f"SET {index} {workers[index].target}\n")
            load.stdin.flush()
            time.sleep(1.5)
        load.stdin.write("STOP\n")
        load.stdin.flush()
        out, err = load.communicate(timeout=60)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
        for worker in started:
            worker.close()
        link.close()
    assert load.returncode == 0, err
    assert out.rstrip().endswith("DONE"), err
    calls = _calls(out)
    failed = [c for c in calls if c.final != "OK"]
    retried = [c for c in calls if c.attempts > 1]
    # In flight on the worker when it got SIGTERM (started well before, on loopback): drained, not retried.
    in_flight = [c for index, at in sigterms for c in calls if c.worker == index and c.started < at - 0.05 < c.ended]
    print(
        f"\nrolling restart: {len(calls)} calls, {len(failed)} failed, {len(retried)} retried on the other worker, "
        f"{len(in_flight)} in flight at SIGTERM (all drained OK: {all(c.first == 'OK' for c in in_flight)})"
    )
    assert not failed, failed[:5]
    assert in_flight, "no call was in flight at SIGTERM; the drain was not exercised"
    assert all(c.first == "OK" for c in in_flight), [c for c in in_flight if c.first != "OK"][:5]
    assert {c.first for c in calls} <= {"OK", "UNAVAILABLE"}
    # The replacements took traffic: calls that started after the last SET went to both new workers.
    last = sigterms[-1][1]
    assert {c.worker for c in calls if c.started > last + 1.0 and c.first == "OK"} == {0, 1}


if __name__ == "__main__":
    _load_main(sys.argv[1:3])
