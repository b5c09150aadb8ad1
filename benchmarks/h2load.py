"""A C load generator for closed-loop points: ``h2load`` (nghttp2) driving unary gRPC or HTTP/1.1 calls.

The Python load generator (``benchmarks.loadgen``) spends 200-800 CPU-µs per request
on this kind of machine, and on a machine whose CPUs the servers share that
CPU is taken from them. ``h2load`` (Debian ``nghttp2-client``) is a C client
that spends a few tens: the same closed-loop points through it show what the
servers do when the instrument costs next to nothing, and the echo point
shows its headroom.

``H2Load`` measures the same way as ``LoadGenerator`` and returns the same
result (``loadgen.summarize``), so reports and tables take either:

* one ``h2load -D <warm-up>`` run first (not recorded), then one run of
  ``-D <window>`` per window, repeated until the throughputs of the last
  three agree within 10% (at most ten);
* latency from h2load's per-request log (``--log-file``: start, status,
  microseconds to the end of the answer) into the same histograms (every
  2xx answer's latency: gRPC calls that failed count there too, being
  indistinguishable from the log);
* CPU: the servers' process trees from ``/proc`` around each window, and
  h2load's own from ``wait4`` (its rusage) as the load generator's.

Closed loop only, unary calls only (h2load has no fixed-rate request mode and
no bidirectional streams). A gRPC call is an HTTP/2 POST of the framed request
(``application/grpc``, ``te: trailers``). h2load reads HTTP statuses, not
``grpc-status``, and a failed gRPC call answers 200 with no message; so each
successful answer's size is learnt from one probe call, and a window whose
DATA bytes fall short of ``answers x that size`` counts the missing answers
as errors (``GRPC_NO_ANSWER``). HTTP/1.1 targets get one connection per
caller (no pipelining), gRPC targets ``-c`` connections each carrying
``-m`` concurrent streams, ``c = -c x -m``, with as many connections as the
Python load generator would open (``workers x Target.connections``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.loadgen import (
    STREAMING,
    CpuSnapshot,
    LatencyHistogram,
    LoadGeneratorError,
    Target,
    WindowResult,
    Windows,
    check_servers,
    converged,
    process_tree,
    summarize,
)

GRPC_FRAME_PREFIX = 5
"""A gRPC message's length prefix: one flag byte and four bytes of length."""
NO_ANSWER = "GRPC_NO_ANSWER"
"""Error code of gRPC calls that got no message back (a non-OK ``grpc-status``)."""


def h2load_path() -> str | None:
    return shutil.which("h2load")


@dataclass(frozen=True)
class RunSummary:
    """What one h2load run printed: its duration and counts."""

    duration_s: float
    done: int
    succeeded: int
    failed: int
    errored: int
    timeout: int
    status_2xx: int
    data_bytes: int


_FINISHED = re.compile(r"finished in ([\d.]+)(ms|s|us)")
_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout"
)
_STATUS = re.compile(r"status codes: (\d+) 2xx")
_TRAFFIC = re.compile(r"traffic: .*?\((\d+)\) data")


def parse_summary(text: str) -> RunSummary:
    """Read h2load's closing summary; raises ``LoadGeneratorError`` when it is not there."""
    finished, requests = _FINISHED.search(text), _REQUESTS.search(text)
    status, traffic = _STATUS.search(text), _TRAFFIC.search(text)
    if not (finished and requests and status and traffic):
        raise LoadGeneratorError(f"h2load printed no summary:\n{text[-2000:]}")
    value, unit = float(finished.group(1)), finished.group(2)
    duration = value / {"s": 1.0, "ms": 1e3, "us": 1e6}[unit]
    _, _, done, succeeded, failed, errored, timeout = (int(v) for v in requests.groups())
    return RunSummary(duration, done, succeeded, failed, errored, timeout, int(status.group(1)), int(traffic.group(1)))


def answered(summary: RunSummary, answer_bytes: int) -> int:
    """How many 2xx answers carried a whole answer of ``answer_bytes`` DATA bytes (gRPC: framed message)."""
    if answer_bytes <= 0:
        return summary.status_2xx
    return min(summary.status_2xx, summary.data_bytes // answer_bytes)


def errors_of(summary: RunSummary, answer_bytes: int) -> dict[str, int]:
    """Errors of one run by kind: non-2xx statuses, transport failures, and 2xx answers without an answer."""
    errors: dict[str, int] = {}
    # h2load's "failed" holds HTTP-level failures and "errored" ones (a broken connection, a timeout).
    for code, count in (
        ("HTTP_STATUS", summary.failed - summary.errored),
        ("TRANSPORT", summary.errored),
        (NO_ANSWER, summary.status_2xx - answered(summary, answer_bytes)),
    ):
        if count > 0:
            errors[code] = count
    return errors


def read_log(path: Path, histogram: LatencyHistogram) -> int:
    """Record the 2xx latencies of an h2load ``--log-file`` into ``histogram``; returns how many."""
    count = 0
    with open(path, "rb") as log_file:
        for line in log_file:
            fields = line.split(b"\t")
            if len(fields) >= 3 and fields[1].startswith(b"2"):
                histogram.record(int(fields[2]))
                count += 1
    return count


def split_concurrency(concurrency: int, connections: int) -> tuple[int, int]:
    """(clients, streams per client) with ``clients x streams == concurrency`` and clients at most ``connections``."""
    clients = max(d for d in range(1, min(concurrency, connections) + 1) if concurrency % d == 0)
    return clients, concurrency // clients


@dataclass
class H2Load:
    """Closed-loop points through ``h2load``; the same interface and results as ``loadgen.LoadGenerator``.

    ``workers`` is h2load's thread count (``-t``) and, times
    ``Target.connections``, the number of gRPC connections it opens.
    """

    workers: int = 2
    servers: dict[str, int] = field(default_factory=dict)
    log: Callable[[str], None] = field(default=lambda message: None)
    counters: Callable[[], dict[str, float]] | None = None

    def __post_init__(self) -> None:
        binary = h2load_path()
        if binary is None:
            raise LoadGeneratorError("h2load is not installed (Debian: apt-get install nghttp2-client)")
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        self._binary = binary
        self._dir = Path(tempfile.mkdtemp(prefix="switchyard-h2load-"))
        self._answer_bytes: dict[Target, int] = {}

    def __enter__(self) -> H2Load:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    # -- one call, outside h2load ---------------------------------------------

    def probe(self, target: Target, timeout_s: float = 10.0) -> float:
        """Make one call, check the answer and learn its size; returns its latency in seconds."""
        _supported(target)
        started = time.monotonic()
        if target.protocol == "http":
            body = _http_post(target, timeout_s)
            size = 0  # HTTP statuses tell failures apart
        else:
            import grpc

            with grpc.insecure_channel(target.address) as channel:
                try:
                    body = channel.unary_unary(target.method)(
                        target.request_bytes(), timeout=timeout_s, wait_for_ready=True
                    )
                except grpc.RpcError as exc:
                    raise LoadGeneratorError(f"{target.name} at {target.address}: {exc}") from exc
            size = GRPC_FRAME_PREFIX + len(body)
        latency = time.monotonic() - started
        problem = target.check_response(body)
        if problem:
            raise LoadGeneratorError(f"{target.name} at {target.address}: {problem}")
        self._answer_bytes[target] = size
        return latency

    # -- closed loop ----------------------------------------------------------

    def closed_loop(self, target: Target, concurrency: int, windows: Windows) -> dict[str, Any]:
        """One closed-loop point: ``concurrency`` requests in flight at all times."""
        if target not in self._answer_bytes:
            self.probe(target)
        answer_bytes = self._answer_bytes[target]
        check_servers(self.servers)
        trees = {name: process_tree(pid) for name, pid in self.servers.items()}
        body = self._dir / f"{abs(hash(target)):x}.body"
        body.write_bytes(_body(target))
        label = f"{target.name} closed c={concurrency} (h2load)"
        if windows.warmup_s > 0:
            self._run(target, concurrency, windows.warmup_s, body, None)
        results: list[WindowResult] = []
        for index in range(windows.max_windows):
            log_path = self._dir / "requests.log"
            log_path.unlink(missing_ok=True)  # h2load appends to its log file
            before = CpuSnapshot.take(trees)
            counts = self.counters() if self.counters else {}
            summary, h2load_cpu_s = self._run(target, concurrency, windows.window_s, body, log_path)
            after = CpuSnapshot.take(trees)
            counts_now = self.counters() if self.counters else {}
            server_cpu, busy_pct, busy_s = after.since(before)
            histogram = LatencyHistogram()
            read_log(log_path, histogram)
            errors = errors_of(summary, answer_bytes)
            window = WindowResult(
                index=index,
                duration_s=summary.duration_s,
                ok=answered(summary, answer_bytes),
                errors=errors,
                histogram=histogram,
                server_cpu_s=server_cpu,
                loadgen_cpu_s=h2load_cpu_s,
                machine_busy_pct=busy_pct,
                machine_busy_s=busy_s,
                counters={name: counts_now[name] - counts[name] for name in counts},
            )
            results.append(window)
            self.log(
                f"  {label} window {index + 1}: {window.throughput_rps:,.0f} req/s, "
                f"p99 {histogram.percentile_us(99) / 1000:.2f} ms, machine {busy_pct:.0f}% busy, "
                f"others {window.other_cpu_s / window.duration_s:.0%} of a CPU"
                + (f", errors {errors}" if errors else "")
            )
            check_servers(self.servers)
            if converged([w.throughput_rps for w in results], tolerance=windows.tolerance, last=windows.agreeing):
                break
        result = summarize(target, "closed", concurrency, results, windows, self.workers)
        result["driver"] = "h2load"
        if not result["converged"]:
            self.log(
                f"  {label}: the last {windows.agreeing} windows still disagree by "
                f"{result['agreement']:.0%} after {len(results)} windows; reported anyway"
            )
        return result

    def _command(self, target: Target, concurrency: int, duration_s: float, body: Path, log: Path | None) -> list[str]:
        command = [self._binary, "-D", f"{max(1, round(duration_s * 1000))}ms", "-d", str(body)]
        if target.protocol == "http":
            clients, streams = concurrency, 1
            command += ["--h1", "-H", "content-type: application/octet-stream"]
            url = f"http://{target.address}{target.path}"
        else:
            clients, streams = split_concurrency(concurrency, self.workers * target.connections)
            command += ["-H", "content-type: application/grpc", "-H", "te: trailers"]
            url = f"http://{target.address}{target.method}"
        command += ["-c", str(clients), "-m", str(streams), "-t", str(min(self.workers, clients))]
        if log is not None:
            command += ["--log-file", str(log)]
        return [*command, url]

    def _run(
        self, target: Target, concurrency: int, duration_s: float, body: Path, log: Path | None
    ) -> tuple[RunSummary, float]:
        """Run h2load once; its summary and the CPU seconds it used."""
        command = self._command(target, concurrency, duration_s, body, log)
        output = self._dir / "h2load.out"
        with open(output, "wb") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        with _reaped(process):
            _, status, usage = _wait4(process.pid, duration_s + 60.0)
        process.returncode = os.waitstatus_to_exitcode(status)
        text = output.read_text(errors="replace")
        if process.returncode != 0:
            raise LoadGeneratorError(f"h2load exited {process.returncode}: {' '.join(command)}\n{text[-2000:]}")
        return parse_summary(text), usage.ru_utime + usage.ru_stime


def _supported(target: Target) -> None:
    if target.protocol in STREAMING or target.then:
        raise ValueError(f"{target.name}: h2load drives unary calls only (no streams, no sequences)")
    if target.protocol != "http" and target.protocol not in ("oip", "switchyard"):
        raise ValueError(f"{target.name}: protocol {target.protocol!r} is not one h2load drives")


def _body(target: Target) -> bytes:
    """What h2load sends as each request's body: the payload (HTTP) or the length-prefixed message (gRPC)."""
    _supported(target)
    if target.protocol == "http":
        return target.payload or b""
    message = target.request_bytes()
    return b"\x00" + len(message).to_bytes(4, "big") + message


def _http_post(target: Target, timeout_s: float) -> bytes:
    import http.client

    host, _, port = target.address.rpartition(":")
    deadline = time.monotonic() + timeout_s
    while True:
        connection = http.client.HTTPConnection(host, int(port), timeout=timeout_s)
        try:
            connection.request(
                "POST", target.path, body=target.payload or b"", headers={"Content-Type": "application/octet-stream"}
            )
            answer = connection.getresponse()
            body = answer.read()
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
            continue
        finally:
            connection.close()
        if not 200 <= answer.status < 300:
            raise LoadGeneratorError(f"{target.name} at {target.address}: HTTP {answer.status} {body[:200]!r}")
        return body


def _wait4(pid: int, timeout_s: float) -> tuple[int, int, Any]:
    """``os.wait4`` with a time limit (h2load ends by itself after ``-D``; this only guards a hang)."""
    deadline = time.monotonic() + timeout_s
    while True:
        reaped, status, usage = os.wait4(pid, os.WNOHANG)
        if reaped:
            return reaped, status, usage
        if time.monotonic() > deadline:
            raise LoadGeneratorError(f"h2load (pid {pid}) still running {timeout_s:g} s after its end")
        time.sleep(min(0.02, max(0.001, deadline - time.monotonic())))


@contextlib.contextmanager
def _reaped(process: subprocess.Popen[bytes]) -> Iterator[None]:
    """Kill and reap ``process`` if waiting for it fails."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(process.pid, 0)
        process.returncode = -9
        raise
