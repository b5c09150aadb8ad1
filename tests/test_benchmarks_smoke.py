"""Smoke tests of the benchmark instrument (benchmarks/): the pieces run and report what they should.

No timing is asserted: these runs are far too short for their numbers to mean anything.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.loadgen import (
    LatencyHistogram,
    LoadGenerator,
    ServerGone,
    StreamCaller,
    Target,
    Windows,
    agreement,
    check_servers,
    converged,
    process_exited,
)
from benchmarks.peers import peers_python

REPO_ROOT = Path(__file__).resolve().parent.parent
LATENCY_KEYS = {"p50", "p90", "p99", "max"}
RESULT_KEYS = {
    "target",
    "mode",
    "converged",
    "windows_measured",
    "requests",
    "throughput_rps",
    "latency_ms",
    "errors",
    "cpu_us_per_request",
    "loadgen",
    "machine_busy_pct",
    "other_cpu_pct",
    "windows",
}


def test_latency_histogram_percentiles_hold_three_significant_digits() -> None:
    values = np.random.default_rng(0).lognormal(mean=7.0, sigma=1.0, size=20_000).astype(int) + 1
    histogram = LatencyHistogram()
    for value in values:
        histogram.record(int(value))
    for percent in (50, 90, 99):
        exact = float(np.percentile(values, percent, method="inverted_cdf"))
        assert math.isclose(histogram.percentile_us(percent), exact, rel_tol=0.002, abs_tol=1)
    assert math.isclose(histogram.max_us, values.max(), rel_tol=0.001)


def test_latency_histogram_survives_the_trip_between_processes() -> None:
    first, second = LatencyHistogram(), LatencyHistogram()
    for value in range(1, 1001):
        (first if value % 2 else second).record(value)
    merged = LatencyHistogram.from_payload(json.loads(json.dumps(first.to_payload())))
    merged.add(LatencyHistogram.from_payload(second.to_payload()))
    assert merged.count == 1000
    summary = merged.summary_ms()
    assert set(summary) == LATENCY_KEYS
    assert math.isclose(summary["p50"], 0.5, rel_tol=0.02)
    assert math.isclose(summary["max"], 1.0, rel_tol=0.01)
    assert LatencyHistogram.from_payload(LatencyHistogram().to_payload()).summary_ms()["p99"] == 0
    with pytest.raises(ValueError, match="not an HDR histogram payload"):
        LatencyHistogram.from_payload({"kind": "log", "data": {}})


def test_windows_converge_when_the_last_three_agree_within_ten_percent() -> None:
    assert converged([50.0, 100.0, 104.0, 98.0])
    assert not converged([100.0, 104.0])
    assert not converged([100.0, 120.0, 100.0])
    assert converged([0.0, 0.0, 0.0])
    assert agreement([90.0, 100.0, 110.0]) == pytest.approx(0.2)


@pytest.fixture()
def echo_server(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """The floor proxy in --echo mode (no Triton): its address and pid."""
    out = tmp_path / "echo.out"
    with open(out, "wb") as stdout:
        process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.floor_proxy", "--echo", "--port", "0"],
            cwd=REPO_ROOT,
            stdout=stdout,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while not (match := re.search(r"serving on (\S+:\d+)", out.read_text())):
            assert process.poll() is None and time.monotonic() < deadline, out.read_text()
            time.sleep(0.05)
        yield match.group(1), process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)


class _BreakingCall:
    """A stream call whose second write hangs until the stream breaks, then fails, as a write on a dying stream."""

    def __init__(self, broken: asyncio.Event) -> None:
        self._broken = broken
        self._writes = 0

    async def write(self, message: bytes) -> None:
        self._writes += 1
        if self._writes > 1:
            await self._broken.wait()
            for _ in range(3):  # learns of it after the reader has
                await asyncio.sleep(0)
            raise ConnectionError("the stream broke during this write")

    async def read(self) -> Any:
        await self._broken.wait()
        raise ConnectionError("the stream broke")

    def cancel(self) -> None:
        pass


class _Channel:
    def __init__(self, broken: asyncio.Event) -> None:
        self._broken = broken

    def stream_stream(self, method: str) -> Any:
        return lambda wait_for_ready=False: _BreakingCall(self._broken)


def test_a_broken_stream_fails_every_call_and_leaves_no_unretrieved_error() -> None:
    async def scenario() -> list[str]:
        unhandled: list[str] = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: unhandled.append(context["message"]))
        broken = asyncio.Event()
        caller = StreamCaller(_Channel(broken), "/m", oip=True)
        waiting = asyncio.ensure_future(caller(b"a", timeout=5))  # written, waits for its answer
        writing = asyncio.ensure_future(caller(b"b", timeout=5))  # its write hangs on the dying stream
        await asyncio.sleep(0.01)
        broken.set()
        outcomes = await asyncio.gather(waiting, writing, return_exceptions=True)
        assert [type(o) for o in outcomes] == [ConnectionError, ConnectionError], outcomes
        await caller.close()
        del waiting, writing, outcomes
        gc.collect()
        await asyncio.sleep(0)
        return unhandled

    assert asyncio.run(scenario()) == []


@pytest.mark.integration
def test_loadgen_closed_and_open_loop_against_the_echo_server(echo_server: tuple[str, int]) -> None:
    address, pid = echo_server
    target = Target("echo", address, "oip", check=False)
    windows = Windows(warmup_s=0.2, window_s=0.3, max_windows=4)
    with LoadGenerator(workers=2, servers={"echo": pid}) as generator:
        generator.probe(target)
        closed = generator.closed_loop(target, 3, windows)
        opened = generator.open_loop(target, 100.0, windows)
    for result in (closed, opened):
        assert RESULT_KEYS <= set(result)
        assert set(result["latency_ms"]) == LATENCY_KEYS
        assert 3 <= result["windows_measured"] <= windows.max_windows
        assert result["requests"] > 0 and result["errors"] == {}
        assert set(result["cpu_us_per_request"]) == {"echo"}
        assert {"cpu_us_per_request", "cpu_pct"} <= set(result["loadgen"])
    assert closed["concurrency"] == 3
    assert opened["rate_rps"] == 100.0 and {"late_sends", "max_send_lag_ms"} <= set(opened)


def test_check_servers_names_the_servers_that_exited() -> None:
    check_servers({"me": os.getpid(), "not started": 0})  # alive; pid 0 is no process to check
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    while not process_exited(exited.pid):  # a zombie until reaped: exited all the same
        time.sleep(0.01)
    with pytest.raises(ServerGone, match=rf"^triton \(pid {exited.pid}\) exited"):
        check_servers({"me": os.getpid(), "triton": exited.pid})
    exited.wait()  # reaped: gone from /proc
    with pytest.raises(ServerGone, match=rf"triton \(pid {exited.pid}\)"):
        check_servers({"triton": exited.pid})


@pytest.mark.integration
def test_a_point_stops_at_the_window_after_its_server_dies(echo_server: tuple[str, int]) -> None:
    address, pid = echo_server
    target = Target("echo", address, "oip", check=False)
    # Windows that never agree (tolerance 0 on a noisy rate): without the check, the point would run all ten.
    windows = Windows(warmup_s=0.1, window_s=0.3, max_windows=10, tolerance=0.0, timeout_s=2.0)
    measured: list[str] = []

    def kill_after_the_first_window(message: str) -> None:
        # The generator logs each window before it checks the servers: the server is gone by that check.
        measured.append(message)
        if "window 1:" in message:
            os.kill(pid, signal.SIGKILL)
            while not process_exited(pid):
                time.sleep(0.01)

    with LoadGenerator(workers=1, servers={"echo": pid}, log=kill_after_the_first_window) as generator:
        generator.probe(target)
        with pytest.raises(ServerGone, match=rf"echo \(pid {pid}\) exited"):
            generator.closed_loop(target, 2, windows)
        assert len([m for m in measured if " window " in m]) == 1  # stopped at the window that noticed
        with pytest.raises(ServerGone):  # and every later point refuses to start
            generator.closed_loop(target, 2, windows)


@pytest.mark.integration
@pytest.mark.skipif(importlib.util.find_spec("pytriton") is None, reason="needs the triton extra")
def test_run_smoke_measures_every_path_and_writes_the_report(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--smoke", "--out", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    reports = list(tmp_path.glob("run-smoke-*.json"))
    assert len(reports) == 1
    report = json.loads(reports[0].read_text())
    assert {"meta", "results", "comparison", "files"} <= set(report)
    assert report["meta"]["machine"]["cpus"] >= 1 and report["meta"]["stopped_early"] is None
    for name in report["files"].values():
        assert (tmp_path / name).is_file()
    if importlib.util.find_spec("matplotlib") is not None:
        assert "plot" in report["files"]

    results = report["results"]
    closed = {(r["target"], r["concurrency"]) for r in results if r["mode"] == "closed"}
    paths = ("triton", "floor", "converter", "switchyard", "switchyard_batched")
    streams = ("triton_stream", "switchyard_stream", "switchyard_batched_stream")
    assert {(path, c) for path in (*paths, *streams) for c in (1, 4)} <= closed
    assert ("echo", 4) in closed
    assert {r["target"] for r in results if r["mode"] == "open"} == {
        "triton",
        "floor",
        "switchyard",
        "switchyard_batched",
    }
    for result in results:
        assert RESULT_KEYS <= set(result)
        assert result["requests"] > 0 and result["errors"] == {}, result
        assert {"triton", "floor", "converter", "switchyard", "switchyard_shm", "echo"} == set(
            result["cpu_us_per_request"]
        )

    rows = {(row["mode"], row["load"], row["target"]): row for row in report["comparison"]}
    assert rows[("closed", 1, "triton")]["throughput_vs_direct"] == 1.0
    for path in ("floor", "switchyard"):
        row = rows[("closed", 4, path)]
        assert {"throughput_vs_direct", "added_p50_ms", "added_p99_ms", "proxy_cpu_us_per_request"} <= set(row)
        assert row["throughput_vs_direct"] is not None and row["proxy_cpu_us_per_request"] is not None
    assert "| c=1 | switchyard" in completed.stdout
    # Each hop's own CPU per request is held against the floor's: the converter (the contract's messages and
    # nothing else) and the gateway.
    floor_cpu = rows[("closed", 4, "floor")]["proxy_cpu_us_per_request"]
    for path in ("converter", "switchyard"):
        row = rows[("closed", 4, path)]
        assert row["proxy_cpu_vs_floor"] == round(row["proxy_cpu_us_per_request"] / floor_cpu, 3)
    assert rows[("closed", 4, "floor")]["proxy_cpu_vs_floor"] is None
    # Streams are compared with Triton's own stream (ModelStreamInfer), not with unary calls to it.
    assert rows[("closed", 4, "triton_stream")]["throughput_vs_direct"] == 1.0
    for path in streams[1:]:
        row, base = rows[("closed", 4, path)], rows[("closed", 4, "triton_stream")]
        assert row["throughput_vs_direct"] == round(row["throughput_rps"] / base["throughput_rps"], 3)

    # The compute-heavy CNN, the same three ways, each compared with Triton called directly on the CNN.
    cnn_paths = ("cnn_triton", "cnn_floor", "cnn_switchyard", "cnn_switchyard_shm", "cnn_switchyard_shm_stream")
    assert {(path, 2) for path in cnn_paths} <= closed
    assert rows[("closed", 2, "cnn_triton")]["throughput_vs_direct"] == 1.0
    for path in cnn_paths[2:]:
        cnn = rows[("closed", 2, path)]
        assert cnn["throughput_vs_direct"] is not None and cnn["proxy_cpu_us_per_request"] is not None


def test_profile_parses_collapsed_stacks_per_thread() -> None:
    from benchmarks.profile import parse_raw

    main = "_run_module_as_main (<frozen runpy>);main (server/cli.py);run (uvloop/__init__.py)"
    lines = [
        f"{main};handle (proxy/grpc/handlers.py);infer (proxy/routes/single.py) 6",
        f"{main};handle (proxy/grpc/handlers.py) 3",
        "Thread._bootstrap (threading.py);Thread.run (threading.py) 2",
        "0x7f00 (/usr/lib/libc.so.6);stray (x.py) 1",  # a cut-short native stack with a root of its own
    ]
    profile = parse_raw(lines)
    assert profile.samples == 12
    assert profile.self_counts["infer (proxy/routes/single.py)"] == 6
    assert profile.self_counts["handle (proxy/grpc/handlers.py)"] == 3
    # The entry frames shared by every stack of a thread are scaffolding, not inclusive time...
    assert "run (uvloop/__init__.py)" in profile.scaffolding
    assert "run (uvloop/__init__.py)" not in profile.inclusive_counts
    assert profile.inclusive_counts["handle (proxy/grpc/handlers.py)"] == 9
    # ...and a stray root hides nothing from the others.
    assert profile.inclusive_counts["stray (x.py)"] == 1


def test_peer_pipeline_is_the_routes_file_and_runs_the_gateway_ops(tmp_path: Path) -> None:
    from benchmarks.peers import pipeline
    from switchyard.models.datasets import digits_png, digits_split
    from switchyard.proxy.routes.schema import load_routes

    routes_file = tmp_path / "routes.toml"
    routes_file.write_text(pipeline.routes_toml())
    routes = {route.name: route for route in load_routes(routes_file).routes}
    assert set(routes) == {pipeline.ROUTE, pipeline.BATCHED_ROUTE}
    route = routes[pipeline.ROUTE]
    assert [op.op for op in route.pre] == [op["op"] for op in pipeline.PRE_OPS]
    assert routes[pipeline.BATCHED_ROUTE].batching is not None and route.batching is False

    split = digits_split()
    steps = pipeline.Pipeline()
    pixels = steps.preprocess(digits_png(split.X_test[:2]))
    assert pixels.shape == (2, 64) and pixels.dtype == np.float32
    np.testing.assert_allclose(pixels, split.X_test[:2], atol=0.05)
    answer = steps.answer(np.eye(10, dtype=np.float32)[[7]])
    assert answer["labels"][0] == "seven" and answer["indices"][0] == 7


@pytest.mark.integration
@pytest.mark.skipif(importlib.util.find_spec("pytriton") is None, reason="needs the triton extra")
@pytest.mark.skipif(not peers_python().exists(), reason="no peers' environment (python -m benchmarks.peers --setup)")
@pytest.mark.parametrize("driver", ["python", "h2load"])
def test_peers_smoke_verifies_and_measures_a_peer(tmp_path: Path, driver: str) -> None:
    if driver == "h2load" and shutil.which("h2load") is None:
        pytest.skip("h2load (Debian nghttp2-client) is absent")
    command = [sys.executable, "-m", "benchmarks.peers", "--smoke", "--peers", "fastapi", "--concurrency", "2"]
    completed = subprocess.run(
        [*command, "--driver", driver, "--out", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    (report_path,) = tmp_path.glob("peers-smoke-*.json")
    report = json.loads(report_path.read_text())
    assert report["meta"]["driver"] == driver
    assert set(report["meta"]["top1"]) == {"switchyard", "switchyard_batched", "fastapi"}
    assert len(set(report["meta"]["top1"].values())) == 1
    points = {(r["target"], r["concurrency"]) for r in report["results"]}
    paths = {"switchyard", "switchyard_batched", "fastapi", "echo"} | (
        {"switchyard_stream"} if driver == "python" else set()
    )
    assert points == {(path, 2) for path in paths}
    for result in report["results"]:
        assert result["requests"] > 0 and result["errors"] == {}, result
    rows = {row["target"]: row for row in report["comparison"]}
    assert rows["fastapi"]["vs_best_peer"] == 1.0 and rows["echo"]["vs_best_peer"] is None
    assert rows["switchyard"]["total_cpu_us_per_request"] is not None
