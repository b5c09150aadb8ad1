"""Soak test (not run in CI): long mixed load, watching the gateway for leaks.

Starts ``switchyard serve`` (in front of ``--triton-url``, or with its own
local Triton) or uses a running gateway (``--target``, with ``--pid`` to
watch it), then for ``--minutes`` sends ``digits`` calls from ``--threads``
sync clients, mixing normal calls, calls the client cancels mid-flight and
calls with deadlines too short to meet. Every ``--interval`` seconds it prints
requests, rate, the gateway's RSS and open file descriptors
(``/proc/<pid>/fd``), the RSS summed over its processes (``serve``'s
supervisor and gateway workers, Triton left out: workers replaced past
``worker_max_rss_mb`` show as drops) and calls by status; at the end a summary with RSS
growth per 10k requests (measured from the end of a warm-up) and fd growth.

    python -m benchmarks.soak --minutes 30 --triton-url 127.0.0.1:8001
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
import numpy as np

from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc
from switchyard.v1.channel import channel_options
from switchyard.v1.tensors import from_numpy


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rpartition(")")[2].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    return children


def gateway_pids(pid: int) -> list[int]:
    """``pid`` and its descendants, without Triton and its backend stubs: the gateway's processes."""
    children, found, todo = _children(), [], [pid]
    while todo:
        current = todo.pop()
        try:
            command = Path(f"/proc/{current}/cmdline").read_bytes()
        except OSError:
            continue
        if b"tritonserver" in command.split(b"\0")[0]:
            continue
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def gateway_rss(pid: int) -> tuple[int, int]:
    """Summed RSS of the gateway's processes (the serve supervisor and its workers), and how many there are."""
    pids = gateway_pids(pid)
    total = 0
    for one in pids:
        try:
            total += rss_bytes(one)
        except OSError:
            pass
    return total, len(pids)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def start_gateway(triton_url: str | None, log: Path | None = None) -> tuple[subprocess.Popen[str], str]:
    exe = os.path.join(sys.exec_prefix, "bin", "switchyard")
    cmd = [exe, "serve", "--host", "127.0.0.1", "--port", "0", "--no-metrics"]
    if triton_url:
        cmd += ["--triton-url", triton_url]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if match := re.search(r"serving on [\d.]+:(\d+)", line):
            # Keep reading its output so the pipe never fills (into --log when given).
            threading.Thread(target=_drain, args=(proc, log), daemon=True).start()
            return proc, f"127.0.0.1:{match.group(1)}"
    proc.kill()
    raise SystemExit("soak: the gateway did not start")


def _drain(proc: subprocess.Popen[str], log: Path | None) -> None:
    if log is None:
        for _ in proc.stdout or ():
            pass
        return
    with log.open("a") as out:
        for line in proc.stdout or ():
            out.write(line)
            out.flush()


class Load:
    def __init__(self, target: str, threads: int, cancel_share: float, short_deadline_share: float) -> None:
        self._channel = grpc.insecure_channel(target, options=channel_options())
        self._stub = gateway_pb2_grpc.GatewayStub(self._channel)
        self._shares = (cancel_share, short_deadline_share)
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(threads)]

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)
        self._channel.close()

    def _loop(self, number: int) -> None:
        rng = random.Random(number)
        images = np.random.default_rng(number).uniform(0, 16, (64, 64)).astype(np.float32)
        while not self._stop.is_set():
            batch = rng.randint(1, 8)
            start = rng.randrange(0, 64 - batch)
            request = pb.InferRequest(route="digits", inputs=[from_numpy("image", images[start : start + batch])])
            kind = rng.random()
            try:
                if kind < self._shares[0]:
                    future = self._stub.Infer.future(request, timeout=10)
                    time.sleep(rng.uniform(0, 0.003))
                    future.cancel()
                    future.result()
                elif kind < self._shares[0] + self._shares[1]:
                    self._stub.Infer(request, timeout=rng.uniform(0.0005, 0.005))
                else:
                    self._stub.Infer(request, timeout=10)
                code = "OK"
            except grpc.FutureCancelledError:
                code = "CANCELLED"
            except grpc.RpcError as exc:
                code = exc.code().name  # type: ignore[attr-defined]
            with self._lock:
                self.counts[code] += 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--target", help="a running gateway (host:port) instead of starting one")
    p.add_argument("--pid", type=int, help="with --target: the gateway's process id, to watch its RSS and fds")
    p.add_argument("--triton-url", help="the Triton a started gateway uses (default: it starts its own)")
    p.add_argument("--threads", type=int, default=16)
    p.add_argument("--interval", type=float, default=10.0, help="seconds between report lines")
    p.add_argument("--warmup", type=float, default=20.0, help="seconds before the RSS baseline is taken")
    p.add_argument("--cancel-share", type=float, default=0.15)
    p.add_argument("--short-deadline-share", type=float, default=0.15)
    p.add_argument("--log", type=Path, help="append the started gateway's output to this file")
    args = p.parse_args()

    proc = None
    if args.target:
        target, pid = args.target, args.pid
    else:
        proc, target = start_gateway(args.triton_url, args.log)
        pid = proc.pid
    load = Load(target, args.threads, args.cancel_share, args.short_deadline_share)
    started = time.monotonic()
    load.start()
    base: tuple[int, int, int] | None = None  # (requests, rss, fds) after the warm-up
    first_fds = open_fds(pid) if pid else 0
    try:
        last_total, last_at = 0, started
        while time.monotonic() - started < args.minutes * 60:
            time.sleep(args.interval)
            now, total = time.monotonic(), load.total
            rss, fds = (rss_bytes(pid), open_fds(pid)) if pid else (0, 0)
            tree_rss, processes = gateway_rss(pid) if pid else (0, 0)
            if base is None and now - started >= args.warmup:
                base = (total, rss, fds)
            counts = " ".join(f"{k}={v}" for k, v in sorted(load.counts.items()))
            print(
                f"[{now - started:7.0f} s] requests={total} rate={(total - last_total) / (now - last_at):.0f}/s "
                f"rss={rss / 2**20:.1f} MiB fds={fds} gateway_rss={tree_rss / 2**20:.1f} MiB "
                f"in {processes} processes {counts}",
                flush=True,
            )
            last_total, last_at = total, now
    except KeyboardInterrupt:
        pass
    finally:
        load.stop()
    total = load.total
    rss, fds = (rss_bytes(pid), open_fds(pid)) if pid else (0, 0)
    print("\nsummary")
    print(f"  duration       {time.monotonic() - started:.0f} s, requests {total}")
    print(f"  by status      {dict(sorted(load.counts.items()))}")
    if pid:
        print(f"  rss            {rss / 2**20:.1f} MiB now")
        if base is not None and total > base[0]:
            per_10k = (rss - base[1]) / ((total - base[0]) / 10_000)
            print(f"  rss growth     {per_10k / 1024:+.1f} KiB per 10k requests after the warm-up")
        print(f"  open fds       {fds} now, {first_fds} at start" + (f", {base[2]} after warm-up" if base else ""))
    if proc is not None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        print(f"  gateway exit   {proc.returncode}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
