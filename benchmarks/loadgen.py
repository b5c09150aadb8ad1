"""Load generator for gRPC inference calls (unary, or over one stream per worker), in its own worker processes.

Usage (one target, any gRPC server already running)::

    python -m benchmarks.loadgen --address 127.0.0.1:8001 --protocol oip --concurrency 1,8,32
    python -m benchmarks.loadgen --address 127.0.0.1:8500 --protocol switchyard --rate 200,400 \\
        --server gateway=PID --server triton=PID --json out.json

``run.py`` drives it for the side-by-side comparison; this module is the instrument.

How it measures
---------------
* Worker processes (``spawn``ed, so no gRPC state crosses a ``fork``), each a
  uvloop event loop with one ``grpc.aio`` channel per target. Requests are
  serialized once, before the run: the calls send and receive raw bytes, so
  the client spends nothing on protobuf inside the measurement.
* **Closed loop**: ``concurrency`` callers spread over the workers, each
  sending its next request as soon as the previous answer arrives. Latency is
  from send to answer.
* **Open loop**: a fixed total ``rate`` (requests/s) spread over the workers on
  a fixed schedule, whether or not earlier answers came back. Latency is from
  the *scheduled* send time, so a slow server or a late client is charged for
  the wait (no coordinated omission). How late the sends were is reported.
* A warm-up (not recorded), then back-to-back measurement windows of equal
  length, all workers aligned on the same (system-wide monotonic) clock. A
  request counts in the window in which its answer arrived. Windows repeat
  until the throughputs of the last three agree within a tolerance (10%:
  ``(max - min) / mean``), at most ``max_windows`` (10); a point that never
  settles is marked ``converged: false`` and reported from its last three
  windows anyway.
* Latency percentiles (p50, p90, p99, max) come from an HDR histogram
  (``hdrhistogram``, microseconds, 3 significant digits) or, without that
  package, from a log-bucketed histogram of about 1% resolution (below).
* Errors are counted by gRPC status name; only successful calls enter the
  latency histogram and the throughput.
* CPU: at each window boundary the parent reads utime + stime from
  ``/proc/<pid>/stat`` of every server process given (and of all its
  descendants: Triton's Python-backend stubs are its children), so each
  server's cost per request is reported in CPU-µs. The workers report their
  own CPU time too (the instrument's headroom), and ``/proc/stat`` gives how
  busy the whole machine was. Linux only for the CPU figures.

Targets are pluggable: a :class:`Target` names an address, a protocol (the
method called and the request built) and the payload. ``switchyard_stream``
sends the gateway's requests over ``Gateway/InferStream`` instead of unary
calls: each worker keeps one bidirectional stream per target and its callers'
requests are all in flight on it (answers matched by request id).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

PROTOCOL_METHODS = {
    "oip": "/inference.GRPCInferenceService/ModelInfer",
    "switchyard": "/switchyard.v1.Gateway/Infer",
    "switchyard_stream": "/switchyard.v1.Gateway/InferStream",
    "oip_stream": "/inference.GRPCInferenceService/ModelStreamInfer",
    "http": "POST",
}
"""The method each protocol calls. ``oip``: the Open Inference Protocol (Triton, the floor proxy, a KServe
model server); ``switchyard_stream``: the gateway's requests on one bidirectional ``InferStream`` per worker;
``oip_stream``: Open Inference Protocol requests on one ``ModelStreamInfer`` per worker (Triton's streaming RPC);
``http``: an HTTP/1.1 POST of the payload's bytes to ``Target.path`` (the HTTP peers)."""

STREAMING = ("switchyard_stream", "oip_stream")
"""Protocols whose calls share one bidirectional stream per worker (``StreamCaller``)."""

DEFAULT_TOLERANCE = 0.10
HISTOGRAM_MAX_US = 600_000_000
"""Longest latency the histograms hold (10 minutes); longer ones are clamped."""

MAX_OUTSTANDING_PER_WORKER = 4096
"""Open loop: requests in flight per worker before further sends are counted as ``LOADGEN_OVERFLOW``."""

LATE_SEND_US = 1000
"""Open loop: a send more than this after its scheduled time counts as late."""

_STARTUP_MARGIN_S = 0.3
"""Time the parent gives every worker to receive a command before the load starts."""


# -- histograms ------------------------------------------------------------------


class LogHistogram:
    """Latency histogram in integer microseconds with log-spaced buckets (``2**(1/64)`` ≈ 1.1% wide).

    The fallback when ``hdrhistogram`` is not installed. A percentile is the
    upper edge of the bucket holding it (capped at the exact maximum), so it
    reads at most one bucket (about 1.1%) high.
    """

    SUB_BUCKETS = 64

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.total = 0
        self.max_value = 0
        self.min_value = 0

    def _bucket(self, value: int) -> int:
        return int(math.log2(value) * self.SUB_BUCKETS) if value > 1 else 0

    def _upper(self, bucket: int) -> int:
        return math.ceil(2 ** ((bucket + 1) / self.SUB_BUCKETS))

    def record(self, value_us: int) -> None:
        value = min(max(int(value_us), 1), HISTOGRAM_MAX_US)
        bucket = self._bucket(value)
        self.counts[bucket] = self.counts.get(bucket, 0) + 1
        self.min_value = value if self.total == 0 else min(self.min_value, value)
        self.max_value = max(self.max_value, value)
        self.total += 1

    def add(self, other: LogHistogram) -> None:
        for bucket, count in other.counts.items():
            self.counts[bucket] = self.counts.get(bucket, 0) + count
        if other.total:
            self.min_value = other.min_value if self.total == 0 else min(self.min_value, other.min_value)
            self.max_value = max(self.max_value, other.max_value)
            self.total += other.total

    def percentile(self, percent: float) -> int:
        if self.total == 0:
            return 0
        rank = max(1, math.ceil(self.total * percent / 100.0))
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                return max(self.min_value, min(self._upper(bucket), self.max_value))
        return self.max_value

    def to_payload(self) -> dict[str, Any]:
        return {"counts": sorted(self.counts.items()), "min": self.min_value, "max": self.max_value}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> LogHistogram:
        histogram = cls()
        histogram.counts = {int(bucket): int(count) for bucket, count in payload["counts"]}
        histogram.total = sum(histogram.counts.values())
        histogram.min_value = int(payload["min"])
        histogram.max_value = int(payload["max"])
        return histogram


class LatencyHistogram:
    """Microsecond latencies: an HDR histogram when ``hdrhistogram`` is installed, else a :class:`LogHistogram`."""

    def __init__(self, *, use_hdr: bool | None = None) -> None:
        self.use_hdr = hdr_available() if use_hdr is None else use_hdr
        if self.use_hdr:
            from hdrh.histogram import HdrHistogram

            self._hdr: Any = HdrHistogram(1, HISTOGRAM_MAX_US, 3)
        else:
            self._log = LogHistogram()

    @property
    def kind(self) -> str:
        return "hdr" if self.use_hdr else "log"

    def record(self, value_us: int) -> None:
        value = min(max(int(value_us), 1), HISTOGRAM_MAX_US)
        if self.use_hdr:
            self._hdr.record_value(value)
        else:
            self._log.record(value)

    @property
    def count(self) -> int:
        return int(self._hdr.get_total_count()) if self.use_hdr else self._log.total

    @property
    def max_us(self) -> int:
        if self.count == 0:
            return 0
        return int(self._hdr.get_max_value()) if self.use_hdr else self._log.max_value

    def percentile_us(self, percent: float) -> int:
        if self.count == 0:
            return 0
        return int(self._hdr.get_value_at_percentile(percent)) if self.use_hdr else self._log.percentile(percent)

    def add(self, other: LatencyHistogram) -> None:
        if other.use_hdr != self.use_hdr:
            raise ValueError("cannot merge an HDR histogram with a log-bucketed one")
        if self.use_hdr:
            self._hdr.add(other._hdr)
        else:
            self._log.add(other._log)

    def summary_ms(self) -> dict[str, float]:
        """p50, p90, p99 and max in milliseconds."""
        values = {f"p{p:g}": self.percentile_us(p) for p in (50, 90, 99)}
        values["max"] = self.max_us
        return {key: round(value / 1000.0, 3) for key, value in values.items()}

    def to_payload(self) -> dict[str, Any]:
        if self.use_hdr:
            return {"kind": "hdr", "data": self._hdr.encode().decode("ascii") if self.count else ""}
        return {"kind": "log", "data": self._log.to_payload()}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> LatencyHistogram:
        histogram = cls(use_hdr=payload["kind"] == "hdr")
        if histogram.use_hdr:
            if payload["data"]:
                histogram._hdr.decode_and_add(payload["data"].encode("ascii"))
        else:
            histogram._log = LogHistogram.from_payload(payload["data"])
        return histogram


def hdr_available() -> bool:
    try:
        import hdrh.histogram  # noqa: F401
    except ImportError:
        return False
    return True


# -- targets ---------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where and what to call: an address, a protocol and one request's payload.

    ``oip`` sends an Open Inference Protocol ``ModelInferRequest`` for ``model``
    (Triton itself, or the floor proxy in front of it); ``switchyard`` sends a
    gateway ``InferRequest`` for ``route``. The payload is ``batch`` rows of
    ``features`` FP32 values (pixels 0..16, fixed seed) as input ``input_name``,
    shaped ``[batch, features]``, or ``[batch, *row_shape]`` when ``row_shape``
    is given (an image model's ``(3, 224, 224)``; ``features`` is then ignored).
    With ``payload`` the input is instead a BYTES tensor ``[batch]`` holding
    ``payload`` (e.g. a PNG file) ``batch`` times; ``http`` POSTs ``payload``
    alone as the body to ``path`` and expects a JSON object holding
    ``outputs`` as keys.
    ``check`` False skips checking the answer in ``probe`` (the echo server
    answers an empty message). ``bypass_cache`` sets the gateway request's
    field of that name (always a cache miss). ``then`` (``switchyard`` only)
    names routes called after ``route``, one after another with the same
    inputs and outputs asked for, as one request of the load (a client making
    dependent calls); its latency is the whole sequence's. ``connections``
    (unary gRPC only) is how many connections each load generator process
    opens to ``address``, its calls taking them in turn: more than one lets
    the kernel spread the load over the processes of a server that shares its
    port (``switchyard serve --workers``).
    """

    name: str
    address: str
    protocol: str
    model: str = "digits_logreg"
    route: str = "digits"
    input_name: str = "image"
    features: int = 64
    batch: int = 1
    outputs: tuple[str, ...] = ("label", "probabilities")
    check: bool = True
    row_shape: tuple[int, ...] | None = None
    payload: bytes | None = None
    path: str = "/"
    bypass_cache: bool = False
    then: tuple[str, ...] = ()
    connections: int = 1

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOL_METHODS:
            raise ValueError(f"unknown protocol {self.protocol!r}; one of {', '.join(PROTOCOL_METHODS)}")
        if self.connections < 1:
            raise ValueError(f"connections must be at least 1, got {self.connections}")
        if self.connections > 1 and self.protocol in STREAMING + ("http",):
            raise ValueError("connections > 1 is for unary gRPC protocols")
        if self.then and self.protocol != "switchyard":
            raise ValueError("then (a sequence of routes) needs the switchyard protocol")

    @property
    def method(self) -> str:
        return PROTOCOL_METHODS[self.protocol]

    @property
    def shape(self) -> list[int]:
        """The input tensor's shape, batch first."""
        return [self.batch, *(self.row_shape if self.row_shape is not None else (self.features,))]

    def _raw_input(self) -> bytes:
        import numpy as np

        if self.payload is not None:  # Triton's BYTES layout: a 4-byte little-endian length before each element
            return (len(self.payload).to_bytes(4, "little") + self.payload) * self.batch
        pixels = np.random.default_rng(0).integers(0, 17, size=self.shape)
        return pixels.astype("<f4").tobytes()

    def request_bytes(self) -> bytes:
        """One serialized request, sent as it is by every call."""
        shape, datatype = (self.shape, "FP32") if self.payload is None else ([self.batch], "BYTES")
        if self.protocol == "http":
            host = self.address.rpartition(":")[0]
            head = (
                f"POST {self.path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Length: {len(self.payload or b'')}\r\n\r\n"
            )
            return head.encode("ascii") + (self.payload or b"")
        if self.protocol in ("oip", "oip_stream"):
            from tritonclient.grpc import service_pb2

            request = service_pb2.ModelInferRequest(model_name=self.model)
            request.inputs.add(name=self.input_name, datatype=datatype, shape=shape)
            request.raw_input_contents.append(self._raw_input())
            for name in self.outputs:
                request.outputs.add(name=name)
            return bytes(request.SerializeToString())
        from switchyard.v1 import gateway_pb2

        gateway_request = gateway_pb2.InferRequest(
            route=self.route, outputs=list(self.outputs), bypass_cache=self.bypass_cache
        )
        gateway_request.inputs.add(name=self.input_name, datatype=datatype, shape=shape, raw_data=self._raw_input())
        return bytes(gateway_request.SerializeToString())

    def check_response(self, data: bytes) -> str | None:
        """What is wrong with one answer, or None when it holds every output for every row."""
        if not self.check:
            return None
        if self.protocol == "http":
            try:
                answer = json.loads(data)
            except ValueError:
                return f"answer is not JSON: {data[:200]!r}"
            missing = [name for name in self.outputs if not isinstance(answer, dict) or not answer.get(name)]
            return f"answer lacks outputs {missing}: {answer!r}" if missing else None
        if self.protocol in ("oip", "oip_stream"):
            from tritonclient.grpc import service_pb2

            if self.protocol == "oip_stream":
                message = service_pb2.ModelStreamInferResponse.FromString(data)
                if message.error_message:
                    return f"stream answer is an error: {message.error_message}"
                data = message.infer_response.SerializeToString()
            reply = service_pb2.ModelInferResponse.FromString(data)
            if reply.raw_output_contents:
                if len(reply.raw_output_contents) != len(reply.outputs):
                    return "answer's outputs come partly as raw_output_contents"
                pairs = zip(reply.outputs, reply.raw_output_contents, strict=True)
                tensors = {o.name: (list(o.shape), len(raw)) for o, raw in pairs}
            else:  # typed contents (a KServe model server answers so)
                tensors = {o.name: (list(o.shape), o.contents.ByteSize()) for o in reply.outputs}
        else:
            from switchyard.v1 import gateway_pb2

            if self.protocol == "switchyard_stream":
                message = gateway_pb2.StreamInferResponse.FromString(data)
                if message.HasField("error"):
                    return f"stream answer is an error: {message.error.code} {message.error.message}"
                answer = message.response
            else:
                answer = gateway_pb2.InferResponse.FromString(data)
            tensors = {t.name: (list(t.shape), len(t.raw_data)) for t in answer.outputs}
        missing = [name for name in self.outputs if name not in tensors]
        if missing:
            return f"answer lacks outputs {missing}; got {sorted(tensors)}"
        short = [name for name in self.outputs if tensors[name][0][:1] != [self.batch] or tensors[name][1] == 0]
        if short:
            return f"outputs {short} do not hold {self.batch} rows: {tensors}"
        return None


# -- measurement settings and results -------------------------------------------


@dataclass(frozen=True)
class Windows:
    """Warm-up and measurement windows of one point."""

    warmup_s: float = 3.0
    window_s: float = 5.0
    max_windows: int = 10
    tolerance: float = DEFAULT_TOLERANCE
    agreeing: int = 3
    """How many last windows must agree (and are reported)."""
    timeout_s: float = 10.0
    """Deadline of each call."""

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.warmup_s < 0:
            raise ValueError("window_s must be > 0 and warmup_s >= 0")
        if self.max_windows < self.agreeing or self.agreeing < 1:
            raise ValueError(f"max_windows ({self.max_windows}) must be at least agreeing ({self.agreeing}) >= 1")


def agreement(throughputs: Sequence[float]) -> float:
    """(max - min) / mean of ``throughputs``: 0 when they agree exactly (or are all zero)."""
    if not throughputs:
        return math.inf
    high, low = max(throughputs), min(throughputs)
    mean = sum(throughputs) / len(throughputs)
    return 0.0 if high == 0 else (high - low) / mean


def converged(throughputs: Sequence[float], *, tolerance: float = DEFAULT_TOLERANCE, last: int = 3) -> bool:
    """Whether the last ``last`` throughputs agree within ``tolerance``."""
    return len(throughputs) >= last and agreement(throughputs[-last:]) <= tolerance


@dataclass
class WindowResult:
    index: int
    duration_s: float
    ok: int
    errors: dict[str, int]
    histogram: LatencyHistogram
    server_cpu_s: dict[str, float]
    loadgen_cpu_s: float
    machine_busy_pct: float
    machine_busy_s: float = 0.0
    late_sends: int = 0
    max_send_lag_us: int = 0
    counters: dict[str, float] = field(default_factory=dict)
    """Increase of each of the generator's ``counters`` over the window."""

    @property
    def throughput_rps(self) -> float:
        return self.ok / self.duration_s

    @property
    def other_cpu_s(self) -> float:
        """CPU seconds the machine spent outside the servers and the load generator (other tenants, the kernel)."""
        return max(0.0, self.machine_busy_s - sum(self.server_cpu_s.values()) - self.loadgen_cpu_s)

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "duration_s": round(self.duration_s, 4),
            "requests": self.ok,
            "throughput_rps": round(self.throughput_rps, 2),
            "errors": dict(self.errors),
            "latency_ms": self.histogram.summary_ms(),
            "server_cpu_s": {name: round(value, 3) for name, value in self.server_cpu_s.items()},
            "loadgen_cpu_s": round(self.loadgen_cpu_s, 3),
            "machine_busy_pct": round(self.machine_busy_pct, 1),
            "other_cpu_pct": round(self.other_cpu_s / self.duration_s * 100, 1),
            "late_sends": self.late_sends,
            "max_send_lag_ms": round(self.max_send_lag_us / 1000.0, 3),
            "counters": dict(self.counters),
        }


def summarize(
    target: Target,
    mode: str,
    load: float,
    windows: Sequence[WindowResult],
    settings: Windows,
    workers: int,
) -> dict[str, Any]:
    """The JSON result of one point: every window, and the figures of the last ``settings.agreeing``."""
    used = list(windows[-settings.agreeing :])
    histogram = LatencyHistogram(use_hdr=used[0].histogram.use_hdr) if used else LatencyHistogram()
    errors: dict[str, int] = {}
    for window in used:
        histogram.add(window.histogram)
        for code, count in window.errors.items():
            errors[code] = errors.get(code, 0) + count
    duration = sum(w.duration_s for w in used)
    ok = sum(w.ok for w in used)
    completed = ok + sum(errors.values())
    names = used[0].server_cpu_s if used else {}
    server_cpu = {name: sum(w.server_cpu_s.get(name, 0.0) for w in used) for name in names}
    loadgen_cpu = sum(w.loadgen_cpu_s for w in used)
    throughputs = [w.throughput_rps for w in windows]

    def per_request_us(cpu_s: float) -> float | None:
        return round(cpu_s / completed * 1e6, 1) if completed else None

    result: dict[str, Any] = {
        "target": target.name,
        "protocol": target.protocol,
        "address": target.address,
        "batch": target.batch,
        "mode": mode,
        "concurrency" if mode == "closed" else "rate_rps": load,
        "workers": workers,
        "converged": converged(throughputs, tolerance=settings.tolerance, last=settings.agreeing),
        "agreement": round(agreement(throughputs[-settings.agreeing :]), 4) if throughputs else None,
        "windows_measured": len(windows),
        "window_s": settings.window_s,
        "warmup_s": settings.warmup_s,
        "requests": ok,
        "throughput_rps": round(ok / duration, 2) if duration else 0.0,
        "latency_ms": histogram.summary_ms(),
        "histogram": histogram.kind,
        "errors": errors,
        "cpu_us_per_request": {name: per_request_us(cpu) for name, cpu in server_cpu.items()},
        "server_cpu_pct": {
            name: round(cpu / duration * 100, 1) if duration else 0.0 for name, cpu in server_cpu.items()
        },
        "loadgen": {
            "cpu_us_per_request": per_request_us(loadgen_cpu),
            "cpu_pct": round(loadgen_cpu / duration * 100, 1) if duration else 0.0,
        },
        "machine_busy_pct": round(sum(w.machine_busy_pct for w in used) / len(used), 1) if used else 0.0,
        "other_cpu_pct": round(sum(w.other_cpu_s for w in used) / duration * 100, 1) if duration else 0.0,
        "windows": [w.to_json() for w in windows],
    }
    counter_names = used[0].counters if used else {}
    if counter_names:
        totals = {name: sum(w.counters.get(name, 0.0) for w in used) for name in counter_names}
        result["counters_per_request"] = {
            name: round(total / completed, 4) if completed else None for name, total in totals.items()
        }
    if mode == "open":
        result["late_sends"] = sum(w.late_sends for w in used)
        result["max_send_lag_ms"] = round(max((w.max_send_lag_us for w in used), default=0) / 1000.0, 3)
    return result


# -- CPU accounting (Linux /proc) ------------------------------------------------

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            stat = stat_file.read()
    except OSError:
        return None
    # After "pid (comm) " come: state(0) ppid(1) ... utime(11) stime(12); comm may hold spaces and parentheses.
    return stat[stat.rfind(b")") + 2 :].split()


def process_exited(pid: int) -> bool:
    """Whether process ``pid`` has exited: gone from ``/proc``, or a zombie its parent has not reaped yet."""
    fields = _stat_fields(pid)
    return fields is None or fields[0] in (b"Z", b"X")


def check_servers(servers: dict[str, int]) -> None:
    """Raises :class:`ServerGone` naming every server of ``servers`` (name -> pid) that has exited.

    Does nothing where there is no ``/proc`` to tell.
    """
    if not os.path.isdir("/proc"):
        return
    gone = [f"{name} (pid {pid})" for name, pid in servers.items() if pid > 0 and process_exited(pid)]
    if gone:
        raise ServerGone(f"{', '.join(gone)} exited while being measured; the points after it would measure nothing")


def process_tree(pid: int) -> list[int]:
    """``pid`` and all of its live descendants (empty when ``pid`` is gone or there is no ``/proc``)."""
    if _stat_fields(pid) is None:
        return []
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and len(fields) > 1:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, ()))
    return tree


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds used so far by the processes ``pids`` (those gone count 0)."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None and len(fields) > 12:
            total += int(fields[11]) + int(fields[12])
    return total / _CLOCK_TICKS


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from ``/proc/stat``; (0, 0) without it."""
    try:
        with open("/proc/stat", "rb") as stat_file:
            fields = [int(v) for v in stat_file.readline().split()[1:]]
    except OSError:
        return 0.0, 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])  # guest time is already counted in user
    return (total - idle) / _CLOCK_TICKS, total / _CLOCK_TICKS


@dataclass
class _CpuSnapshot:
    servers: dict[str, float]
    machine_busy: float
    machine_total: float

    @classmethod
    def take(cls, trees: dict[str, list[int]]) -> _CpuSnapshot:
        busy, total = machine_cpu()
        return cls({name: cpu_seconds(pids) for name, pids in trees.items()}, busy, total)

    def since(self, earlier: _CpuSnapshot) -> tuple[dict[str, float], float, float]:
        """Per-server CPU seconds, machine busy % (of all CPUs) and machine busy CPU seconds since ``earlier``."""
        servers = {name: max(0.0, self.servers[name] - earlier.servers.get(name, 0.0)) for name in self.servers}
        total = self.machine_total - earlier.machine_total
        busy = self.machine_busy - earlier.machine_busy
        return servers, 100.0 * busy / total if total > 0 else 0.0, busy


# -- worker processes ------------------------------------------------------------


class _Recorder:
    """Per-window counts and histograms of one worker, indexed by completion time."""

    def __init__(self, measure_start: float, window_s: float, max_windows: int) -> None:
        self.measure_start = measure_start
        self.window_s = window_s
        self.histograms = [LatencyHistogram() for _ in range(max_windows)]
        self.ok = [0] * max_windows
        self.errors: list[dict[str, int]] = [{} for _ in range(max_windows)]
        self.late = [0] * max_windows
        self.max_lag = [0] * max_windows

    def _index(self, t: float) -> int | None:
        index = math.floor((t - self.measure_start) / self.window_s)
        return index if 0 <= index < len(self.ok) else None

    def success(self, started: float, done: float) -> None:
        index = self._index(done)
        if index is not None:
            self.histograms[index].record(round((done - started) * 1e6))
            self.ok[index] += 1

    def error(self, done: float, code: str) -> None:
        index = self._index(done)
        if index is not None:
            self.errors[index][code] = self.errors[index].get(code, 0) + 1

    def send_lag(self, sent: float, lag_s: float) -> None:
        index = self._index(sent)
        if index is not None:
            lag_us = round(lag_s * 1e6)
            self.late[index] += lag_us > LATE_SEND_US
            self.max_lag[index] = max(self.max_lag[index], lag_us)

    def payload(self, index: int, cpu_s: float) -> dict[str, Any]:
        return {
            "op": "window",
            "index": index,
            "ok": self.ok[index],
            "errors": self.errors[index],
            "histogram": self.histograms[index].to_payload(),
            "cpu_s": cpu_s,
            "late": self.late[index],
            "max_lag_us": self.max_lag[index],
        }


async def _recv(conn: Connection) -> Any:
    """``conn.recv()`` without blocking the event loop while nothing has arrived."""
    loop = asyncio.get_running_loop()
    readable = loop.create_future()

    def ready() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(conn.fileno(), ready)
    try:
        await readable
    finally:
        loop.remove_reader(conn.fileno())
    return conn.recv()


async def _sleep_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


class HttpStatusError(Exception):
    """An HTTP answer other than 200."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:200]!r}")
        self.status = status


class HttpClient:
    """POSTs pre-built HTTP/1.1 requests over keep-alive connections, one connection per call in flight.

    The HTTP counterpart of a ``grpc.aio`` unary callable (same call signature,
    bytes in, body bytes out): connections are opened on demand and reused, so a
    closed loop of ``c`` callers holds ``c`` connections (no pipelining).
    """

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self._host, self._port = host, int(port)
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._all: list[asyncio.StreamWriter] = []

    async def __call__(self, request: bytes, timeout: float | None = None, wait_for_ready: bool = False) -> bytes:
        async with asyncio.timeout(timeout):
            if self._idle:
                reader, writer = self._idle.pop()
            else:
                reader, writer = await self._connect(wait_for_ready)
            try:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status, headers = _http_head(head)
                if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                    body = await _read_chunked(reader)
                else:
                    body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
            except BaseException:
                writer.close()
                raise
        if headers.get(b"connection", b"").lower() == b"close":
            writer.close()
        else:
            self._idle.append((reader, writer))
        if status != 200:
            raise HttpStatusError(status, body)
        return body

    async def _connect(self, wait_for_ready: bool) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while True:
            try:
                reader, writer = await asyncio.open_connection(self._host, self._port)
            except ConnectionRefusedError:
                if not wait_for_ready:
                    raise
                await asyncio.sleep(0.1)
                continue
            self._all.append(writer)
            return reader, writer

    async def close(self) -> None:
        for writer in self._all:
            writer.close()
        self._all.clear()
        self._idle.clear()


def _http_head(head: bytes) -> tuple[int, dict[bytes, bytes]]:
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # no trailers
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


class StreamStatusError(Exception):
    """A request answered on a stream with an error status instead of a response."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


def _varint(data: bytes, at: int) -> tuple[int, int]:
    """The protobuf varint at ``data[at:]`` and the offset after it."""
    value = shift = 0
    while True:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if byte < 0x80:
            return value, at
        shift += 7


class StreamCaller:
    """Calls over one bidirectional stream: every caller's request in flight on the same stream.

    ``Gateway/InferStream`` by default; with ``oip`` Triton's
    ``ModelStreamInfer``. The streaming counterpart of a ``grpc.aio`` unary
    callable (same call signature; bytes in, the stream answer's bytes out).
    The stream opens on the first call, and again after it breaks. Each call
    appends its own id to the pre-serialized request (protobuf keeps the last
    value of a field: ``InferRequest.request_id``, field 2, or
    ``ModelInferRequest.id``, field 3) and waits for the answer carrying it;
    only that id is read from answers during measurement.
    """

    def __init__(self, channel: Any, method: str, *, oip: bool = False) -> None:
        self._method = channel.stream_stream(method)  # no serializers: bytes in, bytes out
        self._oip = oip
        self._id_tag = b"\x1a" if oip else b"\x12"
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[bytes, asyncio.Future[bytes]] = {}
        self._write = asyncio.Lock()  # one message written at a time
        self._sent = 0

    async def __call__(self, request: bytes, timeout: float | None = None, wait_for_ready: bool = False) -> bytes:
        self._sent += 1
        request_id = b"%x" % self._sent
        future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            async with asyncio.timeout(timeout):
                async with self._write:
                    if self._call is None:
                        self._call = self._method(wait_for_ready=wait_for_ready)
                        self._reader = asyncio.ensure_future(self._read(self._call))
                    await self._call.write(request + self._id_tag + bytes([len(request_id)]) + request_id)
                return await future
        finally:
            self._pending.pop(request_id, None)
            if future.done() and not future.cancelled():
                # The stream broke while this call was still writing: the reader failed the future too, but
                # the caller got the write's error instead. Mark it seen, or asyncio logs each one as never
                # retrieved (a flood of tracebacks when a server dies under load).
                future.exception()
            else:
                future.cancel()

    def _answer_of(self, data: bytes) -> tuple[bytes, Exception | None]:
        """The request id an answer carries, and the error it reports (None for a response)."""
        if self._oip:  # ModelStreamInferResponse: 1 error_message, 2 infer_response (whose field 3 is the id)
            error = _field(data, 1)
            response = _field(data, 2) or b""
            request_id = _field(response, 3) or b""
            return request_id, StreamStatusError("TRITON_ERROR", error.decode(errors="replace")) if error else None
        if data[:1] == b"\x0a":  # InferStream: field 1, request_id, comes first; field 3 is the error status
            size, at = _varint(data, 1)
            request_id, error = data[at : at + size], data[at + size : at + size + 1] == b"\x1a"
        else:
            from switchyard.v1 import gateway_pb2

            message = gateway_pb2.StreamInferResponse.FromString(data)
            request_id, error = message.request_id.encode(), message.HasField("error")
        if not error:
            return request_id, None
        import grpc

        from switchyard.v1 import gateway_pb2

        status = gateway_pb2.StreamInferResponse.FromString(data).error
        codes = {code.value[0]: code.name for code in grpc.StatusCode}
        return request_id, StreamStatusError(codes.get(status.code, str(status.code)), status.message)

    async def _read(self, call: Any) -> None:
        import grpc

        failure: BaseException = RuntimeError("the stream ended")
        try:
            while (data := await call.read()) is not grpc.aio.EOF:
                request_id, error = self._answer_of(data)
                future = self._pending.get(request_id)
                if future is None or future.done():
                    if error is not None and not request_id:
                        raise error  # an error that names no request: the stream is of no further use
                    continue
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(data)
        except Exception as exc:  # the stream broke: every call waiting on it fails with the reason
            failure = exc
        finally:
            if self._call is call:
                self._call = None
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(failure)

    async def close(self) -> None:
        if self._call is not None:
            self._call.cancel()
            self._call = None
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


def _field(data: bytes, number: int) -> bytes | None:
    """The bytes of the last length-delimited field ``number`` of a serialized message (None when absent)."""
    found, at = None, 0
    while at < len(data):
        key, at = _varint(data, at)
        wire = key & 7
        if wire == 0:
            _, at = _varint(data, at)
        elif wire == 1:
            at += 8
        elif wire == 5:
            at += 4
        elif wire == 2:
            size, at = _varint(data, at)
            if key >> 3 == number:
                found = data[at : at + size]
            at += size
        else:
            raise ValueError(f"wire type {wire} in a stream answer")
    return found


def _round_robin(calls: Sequence[Callable[..., Any]]) -> Callable[..., Any]:
    """A callable handing each call to the next of ``calls`` in turn (one per connection)."""
    if len(calls) == 1:
        return calls[0]
    turn = itertools.cycle(calls)

    def call(request: bytes, timeout: float | None = None, wait_for_ready: bool = False) -> Any:
        return next(turn)(request, timeout=timeout, wait_for_ready=wait_for_ready)

    return call


def _sequence(call: Callable[..., Any], following: Sequence[bytes]) -> Callable[..., Any]:
    """A callable making ``call(request)`` and then ``call`` on each of ``following`` in turn; the first answer."""

    async def run(request: bytes, timeout: float | None = None, wait_for_ready: bool = False) -> bytes:
        answer: bytes = await call(request, timeout=timeout, wait_for_ready=wait_for_ready)
        for next_request in following:
            await call(next_request, timeout=timeout, wait_for_ready=wait_for_ready)
        return answer

    return run


def _status(exc: BaseException) -> str:
    import grpc

    if isinstance(exc, HttpStatusError):
        return f"HTTP_{exc.status}"
    if isinstance(exc, StreamStatusError):
        return exc.code
    if isinstance(exc, grpc.aio.AioRpcError):
        return str(exc.code().name)
    return type(exc).__name__


def _describe(exc: BaseException) -> str:
    import grpc

    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"


async def _closed_loop(
    call: Callable[..., Any],
    request: bytes,
    users: int,
    end_at: float,
    timeout_s: float,
    recorder: _Recorder,
    stop: asyncio.Event,
) -> None:
    async def user() -> None:
        clock = time.monotonic
        while not stop.is_set():
            started = clock()
            if started >= end_at:
                return
            try:
                await call(request, timeout=timeout_s)
            except Exception as exc:  # every failure is a counted outcome
                recorder.error(clock(), _status(exc))
            else:
                recorder.success(started, clock())

    await asyncio.gather(*(user() for _ in range(users)))


async def _open_loop(
    call: Callable[..., Any],
    request: bytes,
    rate: float,
    first_at: float,
    end_at: float,
    timeout_s: float,
    recorder: _Recorder,
    stop: asyncio.Event,
) -> None:
    loop = asyncio.get_running_loop()
    clock = time.monotonic
    in_flight: set[asyncio.Task[None]] = set()

    async def one(scheduled: float) -> None:
        try:
            await call(request, timeout=timeout_s)
        except Exception as exc:  # every failure is a counted outcome
            recorder.error(clock(), _status(exc))
        else:
            recorder.success(scheduled, clock())  # from the scheduled send time, not the actual one

    interval = 1.0 / rate
    scheduled = first_at
    while not stop.is_set() and scheduled < end_at:
        now = clock()
        if scheduled > now:
            await asyncio.sleep(scheduled - now)
            continue
        while scheduled <= now and scheduled < end_at:  # everything due, including what a late wake-up missed
            recorder.send_lag(now, now - scheduled)
            if len(in_flight) >= MAX_OUTSTANDING_PER_WORKER:
                recorder.error(now, "LOADGEN_OVERFLOW")
            else:
                task = loop.create_task(one(scheduled))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            scheduled += interval
    if in_flight:
        _, pending = await asyncio.wait(in_flight, timeout=timeout_s + 1.0)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


async def _run(conn: Connection, call: Callable[..., Any], request: bytes, command: dict[str, Any]) -> None:
    settings: Windows = command["windows"]
    start_at: float = command["start_at"]
    measure_start = start_at + settings.warmup_s
    end_at = measure_start + settings.max_windows * settings.window_s
    recorder = _Recorder(measure_start, settings.window_s, settings.max_windows)
    stop = asyncio.Event()

    async def watch() -> None:
        message = await _recv(conn)
        if message.get("op") != "stop":
            raise RuntimeError(f"unexpected message during a run: {message!r}")
        stop.set()

    async def report() -> None:
        await _sleep_until(measure_start)
        cpu = time.process_time()
        for index in range(settings.max_windows):
            await _sleep_until(measure_start + (index + 1) * settings.window_s)
            if stop.is_set():
                return
            now_cpu = time.process_time()
            conn.send(recorder.payload(index, now_cpu - cpu))
            cpu = now_cpu

    await _sleep_until(start_at)
    if command["mode"] == "closed":
        load = _closed_loop(call, request, int(command["load"]), end_at, settings.timeout_s, recorder, stop)
    else:
        rate = float(command["load"])
        first_at = start_at + command["phase"] / rate if rate > 0 else end_at
        load = _open_loop(call, request, rate, first_at, end_at, settings.timeout_s, recorder, stop)
    watcher = asyncio.ensure_future(watch())
    reporter = asyncio.ensure_future(report())
    try:
        if command["load"]:
            await load  # until end_at, or until the parent's "stop"
        else:
            load.close()  # this worker's share is 0: it only reports empty windows
        await watcher  # the parent ends every run with "stop", once it has the windows it needs
    finally:
        for task in (reporter, watcher):
            task.cancel()
        await asyncio.gather(reporter, watcher, return_exceptions=True)
    conn.send({"op": "done"})


async def _worker(conn: Connection) -> None:
    import grpc

    from switchyard.v1.channel import channel_options

    channels: dict[tuple[str, int], grpc.aio.Channel] = {}
    streams: dict[Target, StreamCaller] = {}
    http_clients: dict[str, HttpClient] = {}
    requests: dict[Target, bytes] = {}
    try:
        while True:
            command = await _recv(conn)
            if command["op"] == "exit":
                return
            target: Target = command["target"]
            call: Callable[..., Any]
            if target.protocol == "http":
                call = http_clients.setdefault(target.address, HttpClient(target.address))
            else:
                # Channels of their own subchannel pool (channel_options): one connection each.
                for i in range(target.connections):
                    if (target.address, i) not in channels:
                        channels[target.address, i] = grpc.aio.insecure_channel(
                            target.address, options=channel_options()
                        )
                channel = channels[target.address, 0]
                if target.protocol in STREAMING:
                    if target not in streams:
                        streams[target] = StreamCaller(channel, target.method, oip=target.protocol == "oip_stream")
                    call = streams[target]
                else:
                    # No serializers: bytes in, bytes out.
                    call = _round_robin(
                        [channels[target.address, i].unary_unary(target.method) for i in range(target.connections)]
                    )
                    if target.then:
                        requests_after = [replace(target, route=r, then=()).request_bytes() for r in target.then]
                        call = _sequence(call, requests_after)
            if target not in requests:
                requests[target] = target.request_bytes()
            if command["op"] == "probe":
                started = time.monotonic()
                try:
                    answer = await call(requests[target], timeout=command["timeout_s"], wait_for_ready=True)
                except Exception as exc:
                    conn.send({"op": "probe", "error": _describe(exc)})
                else:
                    latency = time.monotonic() - started
                    conn.send({"op": "probe", "error": target.check_response(answer), "latency_s": latency})
            elif command["op"] == "run":
                await _run(conn, call, requests[target], command)
            else:
                raise RuntimeError(f"unknown command {command!r}")
    finally:
        for stream in streams.values():
            await stream.close()
        for channel in channels.values():
            await channel.close()
        for client in http_clients.values():
            await client.close()


def _worker_main(conn: Connection) -> None:
    import uvloop

    try:
        uvloop.run(_worker(conn))
    except (EOFError, KeyboardInterrupt):  # the parent went away
        pass
    finally:
        conn.close()


# -- the parent side -----------------------------------------------------------


class LoadGeneratorError(RuntimeError):
    pass


class ServerGone(LoadGeneratorError):
    """A server being measured has exited (crashed, killed): a point stops at the window that notices."""


@dataclass
class LoadGenerator:
    """A pool of worker processes driving load; use as a context manager.

    ``servers`` maps a name to the pid of a server process whose CPU time (with
    its descendants') is charged per request; it may be changed between points.
    ``counters``, when given, returns running totals by name (Triton's
    execution count, say); it is called at the same window boundaries as the
    CPU times are read, and each total's increase is reported per request
    (``counters_per_request``).
    """

    workers: int = 2
    servers: dict[str, int] = field(default_factory=dict)
    log: Callable[[str], None] = field(default=lambda message: None)
    counters: Callable[[], dict[str, float]] | None = None

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        context = multiprocessing.get_context("spawn")  # gRPC state must never cross a fork
        self._conns: list[Connection] = []
        self._processes: list[Any] = []
        for index in range(self.workers):
            parent_end, child_end = context.Pipe()
            process = context.Process(target=_worker_main, args=(child_end,), name=f"loadgen-{index}", daemon=True)
            process.start()
            child_end.close()
            self._conns.append(parent_end)
            self._processes.append(process)

    def __enter__(self) -> LoadGenerator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        for conn in self._conns:
            try:
                conn.send({"op": "exit"})
            except OSError:
                pass
        for process in self._processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
            process.close()
        for conn in self._conns:
            conn.close()
        self._conns, self._processes = [], []

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes]

    def _receive(self, conn: Connection, op: str, timeout_s: float) -> dict[str, Any]:
        while True:
            try:
                if not conn.poll(timeout_s):
                    raise LoadGeneratorError(f"a load generator worker sent no {op!r} within {timeout_s:g} s")
                message: dict[str, Any] = conn.recv()
            except (EOFError, OSError) as exc:
                raise LoadGeneratorError("a load generator worker exited (its traceback is on stderr)") from exc
            if message["op"] == op:
                return message
            if message["op"] != "window":  # late windows after a stop are dropped
                raise LoadGeneratorError(f"unexpected message from a worker: {message!r}")

    def probe(self, target: Target, timeout_s: float = 10.0) -> float:
        """Send one request from every worker and check the answers; returns the slowest latency in seconds."""
        for conn in self._conns:
            conn.send({"op": "probe", "target": target, "timeout_s": timeout_s})
        slowest = 0.0
        for conn in self._conns:
            message = self._receive(conn, "probe", timeout_s + 30.0)
            if message["error"]:
                raise LoadGeneratorError(f"{target.name} at {target.address}: {message['error']}")
            slowest = max(slowest, message["latency_s"])
        return slowest

    def closed_loop(self, target: Target, concurrency: int, windows: Windows) -> dict[str, Any]:
        """One closed-loop point: ``concurrency`` callers in all, each waiting for its answer before the next send."""
        shares = [concurrency // self.workers + (i < concurrency % self.workers) for i in range(self.workers)]
        return self._measure(target, "closed", concurrency, shares, windows)

    def open_loop(self, target: Target, rate: float, windows: Windows) -> dict[str, Any]:
        """One open-loop point: ``rate`` requests/s in all on a fixed schedule."""
        return self._measure(target, "open", rate, [rate / self.workers] * self.workers, windows)

    def _measure(
        self, target: Target, mode: str, load: float, shares: Sequence[float], settings: Windows
    ) -> dict[str, Any]:
        check_servers(self.servers)
        trees = {name: process_tree(pid) for name, pid in self.servers.items()}
        start_at = time.monotonic() + _STARTUP_MARGIN_S
        for index, (conn, share) in enumerate(zip(self._conns, shares, strict=True)):
            command = {"op": "run", "target": target, "mode": mode, "load": share, "start_at": start_at}
            command.update(windows=settings, phase=index / len(shares))
            conn.send(command)
        measure_start = start_at + settings.warmup_s
        _sleep_sync_until(measure_start)
        before = _CpuSnapshot.take(trees)
        counts = self.counters() if self.counters else {}
        windows: list[WindowResult] = []
        label = f"{target.name} {mode} {'c=' if mode == 'closed' else 'rate='}{load:g}"
        measured = False
        try:
            for index in range(settings.max_windows):
                _sleep_sync_until(measure_start + (index + 1) * settings.window_s)
                after = _CpuSnapshot.take(trees)
                server_cpu, busy_pct, busy_s = after.since(before)
                before = after
                counts_now = self.counters() if self.counters else {}
                counted = {name: counts_now[name] - counts[name] for name in counts}
                counts = counts_now
                messages = [
                    self._receive(conn, "window", settings.window_s + settings.timeout_s + 30.0) for conn in self._conns
                ]
                window = _merge_window(index, settings.window_s, messages, server_cpu, busy_pct, busy_s, counted)
                windows.append(window)
                self.log(
                    f"  {label} window {index + 1}: {window.throughput_rps:,.0f} req/s, "
                    f"p99 {window.histogram.percentile_us(99) / 1000:.2f} ms, machine {busy_pct:.0f}% busy, "
                    f"others {window.other_cpu_s / window.duration_s:.0%} of a CPU"
                )
                check_servers(self.servers)
                if converged([w.throughput_rps for w in windows], tolerance=settings.tolerance, last=settings.agreeing):
                    break
            measured = True
        finally:
            # Every run ends with "stop" and "done"; after a failure, without masking it.
            with contextlib.suppress(Exception) if not measured else contextlib.nullcontext():
                for conn in self._conns:
                    conn.send({"op": "stop"})
                for conn in self._conns:
                    self._receive(conn, "done", settings.timeout_s + 30.0)
        result = summarize(target, mode, load, windows, settings, self.workers)
        if not result["converged"]:
            self.log(
                f"  {label}: the last {settings.agreeing} windows still disagree by "
                f"{result['agreement']:.0%} after {len(windows)} windows; reported anyway"
            )
        return result


def _sleep_sync_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def _merge_window(
    index: int,
    window_s: float,
    messages: Sequence[dict[str, Any]],
    server_cpu: dict[str, float],
    busy_pct: float,
    busy_s: float,
    counters: dict[str, float] | None = None,
) -> WindowResult:
    histogram: LatencyHistogram | None = None
    errors: dict[str, int] = {}
    for message in messages:
        part = LatencyHistogram.from_payload(message["histogram"])
        if histogram is None:
            histogram = part
        else:
            histogram.add(part)
        for code, count in message["errors"].items():
            errors[code] = errors.get(code, 0) + count
    return WindowResult(
        index=index,
        duration_s=window_s,
        ok=sum(m["ok"] for m in messages),
        errors=errors,
        histogram=histogram if histogram is not None else LatencyHistogram(),
        server_cpu_s=server_cpu,
        loadgen_cpu_s=sum(m["cpu_s"] for m in messages),
        machine_busy_pct=busy_pct,
        machine_busy_s=busy_s,
        late_sends=sum(m["late"] for m in messages),
        max_send_lag_us=max((m["max_lag_us"] for m in messages), default=0),
        counters=dict(counters or {}),
    )


# -- command line ----------------------------------------------------------------


def _numbers(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def _server(text: str) -> tuple[str, int]:
    name, _, pid = text.partition("=")
    if not name or not pid.isdigit():
        raise argparse.ArgumentTypeError(f"expected NAME=PID, got {text!r}")
    return name, int(pid)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loadgen", description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True, help="host:port of the server to load")
    parser.add_argument("--protocol", choices=sorted(PROTOCOL_METHODS), default="oip")
    parser.add_argument("--name", help="label of the target in the report (default: protocol@address)")
    parser.add_argument("--model", default="digits_logreg", help="model name (protocol oip)")
    parser.add_argument("--route", default="digits", help="route name (protocol switchyard)")
    parser.add_argument("--batch", type=int, default=1, help="rows per request")
    parser.add_argument("--concurrency", type=_numbers, help="closed loop at these concurrencies, e.g. 1,8,32")
    parser.add_argument("--rate", type=_numbers, help="open loop at these total rates (requests/s), e.g. 200,400")
    parser.add_argument("--workers", type=int, default=2, help="load generator processes")
    parser.add_argument("--warmup", type=float, default=Windows.warmup_s, help="seconds of warm-up per point")
    parser.add_argument("--window", type=float, default=Windows.window_s, help="seconds per measurement window")
    parser.add_argument("--max-windows", type=int, default=Windows.max_windows)
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE)
    parser.add_argument("--server", type=_server, action="append", default=[], help="NAME=PID whose CPU to charge")
    parser.add_argument("--no-check", action="store_true", help="do not check the probe's answer (echo servers)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if not args.concurrency and not args.rate:
        parser.error("give --concurrency, --rate or both")

    target = Target(
        name=args.name or f"{args.protocol}@{args.address}",
        address=args.address,
        protocol=args.protocol,
        model=args.model,
        route=args.route,
        batch=args.batch,
        check=not args.no_check,
    )
    settings = Windows(
        warmup_s=args.warmup, window_s=args.window, max_windows=args.max_windows, tolerance=args.tolerance
    )
    results = []
    with LoadGenerator(workers=args.workers, servers=dict(args.server), log=_stderr) as generator:
        generator.probe(target)
        for value in args.concurrency or []:
            results.append(generator.closed_loop(target, int(value), settings))
        for value in args.rate or []:
            results.append(generator.open_loop(target, value, settings))
    for result in results:
        load_text = f"c={result['concurrency']:g}" if result["mode"] == "closed" else f"rate={result['rate_rps']:g}"
        latency = result["latency_ms"]
        print(
            f"{target.name} {load_text}: {result['throughput_rps']:,.1f} req/s, p50 {latency['p50']} ms, "
            f"p90 {latency['p90']} ms, p99 {latency['p99']} ms, max {latency['max']} ms, errors {result['errors']}, "
            f"server CPU-µs/req {result['cpu_us_per_request']}, loadgen CPU {result['loadgen']['cpu_pct']}%"
            + ("" if result["converged"] else " (did not converge)")
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"target": asdict(target), "results": results}, indent=2) + "\n")
    return 0


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


__all__ = [
    "LatencyHistogram",
    "LoadGenerator",
    "LoadGeneratorError",
    "LogHistogram",
    "StreamCaller",
    "Target",
    "Windows",
    "agreement",
    "converged",
    "cpu_seconds",
    "machine_cpu",
    "process_tree",
]

if __name__ == "__main__":
    sys.exit(main())
