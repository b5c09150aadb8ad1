"""Load generator for gRPC inference calls (unary, or over one stream per worker), in its own worker processes.

Usage (one target, any gRPC server already running)::

    python -m benchmarks.loadgen --address 127.0.0.1:8001 --protocol oip --concurrency 1,8,32
    python -m benchmarks.loadgen --address 127.0.0.1:8500 --protocol switchyard --rate 200,400 \\
        --server gateway=PID --server triton=PID --json out.json

``benchmarks.run`` drives it for the side-by-side comparison; this module is the instrument.

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
  (``hdrhistogram``, from the ``bench`` extra; microseconds, 3 significant
  digits).
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

The modules, by concern: ``target`` (what is called), ``histogram``
(latencies), ``results`` (windows and one point's JSON), ``cpu`` (``/proc``
accounting), ``http1`` and ``stream`` (the non-unary callers), ``worker`` (the
worker processes' load loops), ``generator`` (the parent side) and
``__main__`` (the command line).
"""

from __future__ import annotations

from benchmarks.loadgen.cpu import (
    CpuSnapshot,
    check_servers,
    cpu_seconds,
    machine_cpu,
    process_exited,
    process_tree,
)
from benchmarks.loadgen.errors import LoadGeneratorError, ServerGone
from benchmarks.loadgen.generator import LoadGenerator
from benchmarks.loadgen.histogram import LatencyHistogram
from benchmarks.loadgen.http1 import HttpClient, HttpStatusError
from benchmarks.loadgen.results import (
    DEFAULT_TOLERANCE,
    WindowResult,
    Windows,
    agreement,
    converged,
    summarize,
)
from benchmarks.loadgen.stream import StreamCaller, StreamStatusError
from benchmarks.loadgen.target import PROTOCOL_METHODS, STREAMING, Target

__all__ = [
    "DEFAULT_TOLERANCE",
    "PROTOCOL_METHODS",
    "STREAMING",
    "CpuSnapshot",
    "HttpClient",
    "HttpStatusError",
    "LatencyHistogram",
    "LoadGenerator",
    "LoadGeneratorError",
    "ServerGone",
    "StreamCaller",
    "StreamStatusError",
    "Target",
    "WindowResult",
    "Windows",
    "agreement",
    "check_servers",
    "converged",
    "cpu_seconds",
    "machine_cpu",
    "process_exited",
    "process_tree",
    "summarize",
]
