"""The C load generator (benchmarks/h2load.py) against real servers: what it counts, and what it must not miss.

No timing is asserted: the windows are far too short for their numbers to mean anything.
"""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from benchmarks.h2load import NO_ANSWER, H2Load, parse_summary, split_concurrency
from benchmarks.loadgen import LoadGeneratorError, Target, Windows

pytestmark = pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load (Debian nghttp2-client) is absent")

REPO_ROOT = Path(__file__).resolve().parent.parent
WINDOWS = Windows(warmup_s=0.2, window_s=0.4, max_windows=3)


class _EveryOther:
    """Answers its calls OK and INVALID_ARGUMENT in turn, and counts both."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls = 0
        self.failed = 0

    def __call__(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        with self.lock:
            self.calls += 1
            fail = self.calls % 2 == 0
            self.failed += fail
        if fail:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "every other call fails")
        return b"answer"


@pytest.fixture()
def alternating_grpc_server() -> Iterator[tuple[str, _EveryOther]]:
    behavior = _EveryOther()

    class Handler(grpc.GenericRpcHandler):
        def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
            return grpc.unary_unary_rpc_method_handler(behavior)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((Handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", behavior
    finally:
        server.stop(0)


@pytest.fixture()
def http_server() -> Iterator[tuple[str, list[int]]]:
    """An HTTP/1.1 keep-alive server answering every third POST with 500; yields its address and [ok, failed]."""
    counts = [0, 0]
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                fail = (counts[0] + counts[1] + 1) % 3 == 0
                counts[fail] += 1
            body = b"no" if fail else json.dumps({"labels": ["two"]}).encode()
            self.send_response(500 if fail else 200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", counts
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture()
def echo_server() -> Iterator[tuple[str, int]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.floor_proxy", "--echo", "--port", "0"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    with process.stdout:
        try:
            line = process.stdout.readline()
            assert "serving on" in line, line
            yield line.rsplit(" ", 1)[1].strip(), process.pid
        finally:
            process.terminate()
            process.wait(timeout=10)


def test_concurrency_is_split_exactly_into_connections_and_streams() -> None:
    assert split_concurrency(32, 2) == (2, 16)
    assert split_concurrency(1, 2) == (1, 1)
    assert split_concurrency(9, 2) == (1, 9)  # no split of 9 over 2 connections: one connection
    assert split_concurrency(12, 8) == (6, 2)
    for concurrency in range(1, 40):
        clients, streams = split_concurrency(concurrency, 4)
        assert clients * streams == concurrency and 1 <= clients <= 4


def test_streams_and_sequences_are_refused() -> None:
    with H2Load() as driver:
        for target in (
            Target("s", "127.0.0.1:1", "switchyard_stream"),
            Target("t", "127.0.0.1:1", "oip_stream"),
            Target("q", "127.0.0.1:1", "switchyard", then=("digits",)),
        ):
            with pytest.raises(ValueError, match="unary calls only"):
                driver.probe(target)


def test_a_summary_that_is_not_there_is_an_error() -> None:
    with pytest.raises(LoadGeneratorError, match="no summary"):
        parse_summary("h2load: connect failed\n")


@pytest.mark.integration
def test_echo_point_counts_every_answer_with_cpu_for_both_sides(echo_server: tuple[str, int]) -> None:
    address, pid = echo_server
    with H2Load(workers=2, servers={"echo": pid}) as driver:
        driver.probe(Target("echo", address, "oip", check=False))
        result = driver.closed_loop(Target("echo", address, "oip", check=False), 4, WINDOWS)
    assert result["driver"] == "h2load" and result["concurrency"] == 4
    assert result["errors"] == {} and result["requests"] > 0
    assert 3 <= result["windows_measured"] <= WINDOWS.max_windows
    # Every answer's latency is in the histogram: the windows' request counts are the log's lines.
    measured = result["windows"][-WINDOWS.agreeing :]
    assert sum(w["requests"] for w in measured) == result["requests"]
    assert 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["p99"] <= result["latency_ms"]["max"]
    assert result["cpu_us_per_request"]["echo"] > 0 and result["loadgen"]["cpu_us_per_request"] > 0


@pytest.mark.integration
def test_failed_grpc_calls_count_as_errors_though_h2load_sees_http_200(
    alternating_grpc_server: tuple[str, _EveryOther],
) -> None:
    address, behavior = alternating_grpc_server
    target = Target("alternating", address, "oip", check=False)
    with H2Load(workers=1) as driver:
        driver.probe(target)  # the first call: OK, its answer's size learnt
        result = driver.closed_loop(target, 2, Windows(warmup_s=0.0, window_s=0.4, max_windows=3))
    every_window = result["windows"]
    ok = sum(w["requests"] for w in every_window)
    failed = sum(w["errors"].get(NO_ANSWER, 0) for w in every_window)
    assert set().union(*(w["errors"] for w in every_window)) == {NO_ANSWER}
    # The server failed every other call; h2load's count can only be short by the calls cut off at a window's end.
    assert ok > 0 and failed > 0
    assert behavior.failed - 3 * 2 <= failed <= behavior.failed
    assert abs(ok - failed) <= 3 * 2


@pytest.mark.integration
def test_http_error_statuses_count_as_errors(http_server: tuple[str, list[int]]) -> None:
    address, counts = http_server
    target = Target("http", address, "http", payload=b"\x89PNG", path="/classify", outputs=("labels",))
    with H2Load(workers=1) as driver:
        driver.probe(target)
        result = driver.closed_loop(target, 2, Windows(warmup_s=0.0, window_s=0.4, max_windows=3))
    ok = sum(w["requests"] for w in result["windows"])
    failed = sum(w["errors"].get("HTTP_STATUS", 0) for w in result["windows"])
    assert ok > 0 and failed > 0
    assert counts[1] - 3 * 2 <= failed <= counts[1]
    assert counts[0] - 1 - 3 * 2 <= ok <= counts[0] - 1  # less the probe's
