"""The SDK's own calls: ``AsyncClient.infer`` as unary calls against the same calls on one shared stream.

What a user's program gets from ``AsyncClient(target)`` and from
``AsyncClient(target, stream_calls=True)``: one client process, ``C`` tasks
each calling ``infer`` on ``digits`` (one real held-out row per call) in a
loop for a fixed time. Both modes run against the same gateway in the same
run, alternating round by round (unary first, then streamed), so the ratio
streamed / unary of each round is measured under the same conditions; the
median over rounds is printed. The gateway is ``switchyard serve`` on the
bundled models and routes, started here unless ``--target`` names one.

    python -m benchmarks.sdk_calls                      # c = 1, 8, 32; 3 rounds of 5 s
    python -m benchmarks.sdk_calls --concurrency 32 --seconds 3 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from switchyard.client import AsyncClient
from switchyard.models.datasets import digits_split

ROUTE = "digits"


@dataclass(frozen=True)
class Sample:
    mode: str
    concurrency: int
    calls: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.calls / self.seconds


async def _load(target: str, *, stream_calls: bool, concurrency: int, seconds: float, rows: np.ndarray) -> Sample:
    latencies: list[float] = []
    errors = 0
    async with AsyncClient(target, stream_calls=stream_calls, retries=None) as client:
        for row in rows[:concurrency]:  # warm: channel, stream, route
            await client.infer(ROUTE, {"image": row[None]}, timeout=10)
        stop_at = time.monotonic() + seconds

        async def worker(index: int) -> None:
            nonlocal errors
            i = index
            while time.monotonic() < stop_at:
                began = time.perf_counter()
                try:
                    await client.infer(ROUTE, {"image": rows[i % len(rows)][None]}, timeout=10)
                except Exception:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - began)
                i += concurrency

        started = time.monotonic()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        took = time.monotonic() - started
    ordered = np.sort(np.asarray(latencies)) * 1e3 if latencies else np.zeros(1)
    return Sample(
        "stream" if stream_calls else "unary",
        concurrency,
        len(latencies),
        errors,
        took,
        float(np.percentile(ordered, 50)),
        float(np.percentile(ordered, 99)),
    )


def measure(target: str, concurrency: Sequence[int], seconds: float, rounds: int) -> list[dict[str, float]]:
    """Per concurrency: median rates, p50s and the streamed/unary ratio over ``rounds`` alternating rounds."""
    _, x_test, _, _ = digits_split()
    rows = np.ascontiguousarray(x_test, dtype=np.float32)
    summary = []
    for c in concurrency:
        ratios, unary_rates, stream_rates, unary_p50, stream_p50 = [], [], [], [], []
        for round_ in range(rounds):
            unary = asyncio.run(_load(target, stream_calls=False, concurrency=c, seconds=seconds, rows=rows))
            stream = asyncio.run(_load(target, stream_calls=True, concurrency=c, seconds=seconds, rows=rows))
            for sample in (unary, stream):
                print(
                    f"round {round_ + 1} c={c:<3} {sample.mode:<6} {sample.rate:8.0f} calls/s  "
                    f"p50 {sample.p50_ms:6.2f} ms  p99 {sample.p99_ms:6.2f} ms  errors {sample.errors}",
                    flush=True,
                )
            ratios.append(stream.rate / unary.rate)
            unary_rates.append(unary.rate)
            stream_rates.append(stream.rate)
            unary_p50.append(unary.p50_ms)
            stream_p50.append(stream.p50_ms)
        summary.append(
            {
                "concurrency": c,
                "unary_calls_s": statistics.median(unary_rates),
                "stream_calls_s": statistics.median(stream_rates),
                "unary_p50_ms": statistics.median(unary_p50),
                "stream_p50_ms": statistics.median(stream_p50),
                "ratio": statistics.median(ratios),
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
            }
        )
    return summary


@contextlib.contextmanager
def serving() -> Iterator[str]:
    """``switchyard serve`` on the bundled models, on a port of its choosing, until the block ends."""
    exe = os.path.join(sys.exec_prefix, "bin", "switchyard")
    args = [exe, "serve", "--host", "127.0.0.1", "--port", "0", "--no-metrics"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            match = re.search(r"serving on [\d.]+:(\d+)", line)
            if match:
                break
        else:
            raise RuntimeError(f"switchyard serve exited with {proc.wait()} before serving")
        # Keep reading its output so a chatty gateway never blocks on the pipe.
        drain = subprocess.Popen(["cat"], stdin=proc.stdout, stdout=subprocess.DEVNULL)
        try:
            yield f"127.0.0.1:{match.group(1)}"
        finally:
            proc.terminate()
            proc.wait(60)
            drain.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sdk_calls", description=__doc__.split("\n")[0])
    parser.add_argument("--target", help="a running gateway (host:port); default: start switchyard serve")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each measurement")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        target = args.target or stack.enter_context(serving())
        summary = measure(target, args.concurrency, args.seconds, args.rounds)
    print("\n| c | unary calls/s | stream calls/s | unary p50 ms | stream p50 ms | stream / unary (min-max) |")
    print("|---|---|---|---|---|---|")
    for row in summary:
        print(
            f"| {row['concurrency']} | {row['unary_calls_s']:.0f} | {row['stream_calls_s']:.0f} | "
            f"{row['unary_p50_ms']:.2f} | {row['stream_p50_ms']:.2f} | "
            f"{row['ratio']:.2f}x ({row['ratio_min']:.2f}-{row['ratio_max']:.2f}) |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
