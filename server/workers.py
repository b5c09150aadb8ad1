"""Several gateway processes on one port: ``switchyard serve --workers N``.

One Python process serves gRPC on one core at most. With ``--workers N`` the
``serve`` process becomes a supervisor: it reserves the port (a socket bound
with SO_REUSEPORT that never listens, so a port that another server holds
fails here, clearly), then starts N worker processes
(``python -m switchyard.server.workers``). Each is a whole ``Gateway`` whose
gRPC server binds the same port with SO_REUSEPORT, and the kernel spreads new
connections over them. A connection stays with its worker, so a client sees
the workers only as more capacity. Each worker has its own event loop,
backend channel, micro-batcher and in-memory caches; Triton, a Redis cache
and the job store are shared.

Metrics use prometheus_client's multiprocess mode: the workers write their
samples to files in a private temporary folder, and the supervisor serves
their sum on the metrics port. Counters and histograms add up; gauges say in
``proxy.metrics`` how they combine (in-flight calls add up; a route is ready
while every live worker sees it ready). Process metrics (``process_cpu_seconds_total``,
``process_resident_memory_bytes``, open file descriptors and the rest of
prometheus_client's set) are read from /proc at each scrape, one series per
live worker with a ``worker`` label (its index) and one with
``worker="supervisor"`` (``WorkerProcessCollector``).

A worker that dies is restarted after a back-off that doubles after each
quick failure (a killed worker's shared-memory regions are unregistered from
Triton first, as it could not do so itself); after repeated quick failures the supervisor gives up and
``serve`` exits 1. On SIGTERM or SIGINT the supervisor sends SIGTERM to every
worker, which drains its calls within the grace period like a single
gateway; a worker still running ten seconds after that is killed.

Reloads (``proxy.reloading``): on SIGHUP the supervisor loads what changed
into its Tritons (``server.model_sync``), leaves the outcome in a *verdict*
file and sends SIGHUP to every worker (``reload``); each worker's reload reads
the verdict first, so a model Triton could not load refuses it in every
worker with Triton's message. A worker asked over ``switchyard.v1.Admin``
checks the routes file, sends SIGHUP to the supervisor and answers with the
outcome of its own reload that follows.

A worker whose resident memory passes ``worker_max_rss_mb`` is replaced while
alive: a new worker is started on the port first, then the old one drains
like on SIGTERM, so no call fails. This contains what grpcio leaks per
cancelled or expired call (grpc/grpc#43360; the gateway avoids the worst of
it, see ``proxy.backend.triton.finished``, but some remains): memory follows
a bounded sawtooth instead of growing until the kernel kills the process.

What this module does not do: start Triton (``serve`` does, once, for all
workers) or balance load beyond the kernel's hash of new connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from prometheus_client import Counter, ProcessCollector
from prometheus_client.metrics_core import Metric

from switchyard.models import BUNDLED_ROUTES
from switchyard.proxy.backend.endpoints import DNS_PREFIX, is_local, parse_endpoints
from switchyard.proxy.gateway import Gateway, PortInUse
from switchyard.proxy.logs import LOG_FORMATS, LogFormat
from switchyard.proxy.logs import configure as configure_logging
from switchyard.proxy.reloading import ReloadOutcome, ReloadRefused
from switchyard.proxy.settings import GatewaySettings
from switchyard.server import heap
from switchyard.server.processes import dying_with_parent

log = logging.getLogger(__name__)

READY = "switchyard-worker: ready"
"""The line a worker writes to its stdout once its port is open."""

RELOAD_VERDICT_ENV = "SWITCHYARD_RELOAD_VERDICT"
"""A worker's environment: the file in which the supervisor leaves the outcome of its part of a reload."""
SUPERVISOR_PID_ENV = "SWITCHYARD_SUPERVISOR_PID"
"""A worker's environment: the pid of the supervisor, which a worker sends SIGHUP to have every worker reload."""

# Beyond the grace period, how long a worker may take to exit on SIGTERM before it is killed.
_EXIT_SLACK_S = 10.0


WORKER_RECYCLES = Counter(
    "switchyard_worker_recycles",
    "Gateway workers replaced while alive (a new one serves before the old one drains), by reason.",
    ["reason"],
)


def resident_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class WorkersGaveUp(RuntimeError):
    """Workers kept dying soon after they started; ``serve`` stops."""


class WorkerStartFailed(RuntimeError):
    """A worker exited, or did not report ready, while the pool was starting."""


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` with SO_REUSEPORT, not listening: the port for the workers.

    Raises ``PortInUse`` when the address cannot be bound, or when a server
    (one that allows SO_REUSEPORT too, such as another ``serve --workers``)
    already accepts connections on it.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise PortInUse(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise PortInUse(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    bound = sock.getsockname()[1]
    probe_host = "127.0.0.1" if family == socket.AF_INET and host in ("0.0.0.0", "") else host
    if family == socket.AF_INET6 and host in ("::", ""):
        probe_host = "::1"
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        if probe.connect_ex((probe_host, bound)) == 0:
            sock.close()
            raise PortInUse(f"cannot listen on {host}:{port}: another server accepts connections there")
    return sock


@dataclass
class _Worker:
    index: int
    process: asyncio.subprocess.Process | None = None
    ready_since: float = 0.0
    quick_failures: int = 0
    forwarder: asyncio.Task[None] | None = field(default=None, repr=False)


class WorkerProcessCollector:
    """prometheus_client's process metrics for every live worker and the supervisor, labelled ``worker``.

    ``workers`` gives (label, pid) pairs at each scrape. Each process is read by
    prometheus_client's own ``ProcessCollector`` (Linux /proc); a worker that
    exits between the listing and the read is left out of that scrape.
    """

    def __init__(self, workers: Callable[[], Iterable[tuple[str, int]]]) -> None:
        self._workers = workers

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for label, pid in [("supervisor", os.getpid()), *self._workers()]:
            collector = ProcessCollector(pid=functools.partial(int, pid), registry=None)
            for family in collector.collect():
                into = merged.get(family.name)
                if into is None:
                    into = merged[family.name] = Metric(family.name, family.documentation, family.type)
                for sample in family.samples:
                    into.samples.append(sample._replace(labels={**sample.labels, "worker": label}))
        yield from merged.values()


class WorkerPool:
    """N gateway worker processes on one port, their restarts, and their summed metrics.

    ``settings`` is what every worker runs with; its ``port`` may be 0 (the
    pool picks one) and its ``metrics_port`` is served by the pool itself.
    Create and start it inside the running event loop.
    """

    def __init__(
        self,
        settings: GatewaySettings,
        count: int,
        *,
        log_level: str = "INFO",
        log_format: LogFormat = "text",
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        quick_failure_s: float = 60.0,
        max_quick_failures: int = 5,
        memory_check_s: float = 5.0,
    ) -> None:
        if count < 1:
            raise ValueError(f"workers must be at least 1, got {count}")
        self.settings = settings
        self.count = count
        self.port: int | None = None
        self.metrics_port: int | None = None
        self._log_level = log_level
        self._log_format = log_format
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._quick_failure_s = quick_failure_s
        self._max_quick_failures = max_quick_failures
        self._memory_check_s = memory_check_s
        self._workers = [_Worker(i) for i in range(count)]
        self._reservation: socket.socket | None = None
        self._metrics_dir: str | None = None
        self._stopping = False

    def _live_workers(self) -> list[tuple[str, int]]:
        """(index as a label, pid) of the workers now running."""
        return [
            (str(w.index), w.process.pid)
            for w in self._workers
            if w.process is not None and w.process.returncode is None
        ]

    @property
    def pids(self) -> list[int]:
        """Pids of the workers now running."""
        return [pid for _, pid in self._live_workers()]

    # -- starting ---------------------------------------------------------------

    async def start(self) -> int:
        """Reserves the port, starts every worker and waits until each serves; returns the port."""
        s = self.settings
        self._reservation = reserve_port(s.host, s.port)
        self.port = int(self._reservation.getsockname()[1])
        self._metrics_dir = tempfile.mkdtemp(prefix="switchyard-metrics-")
        try:
            await asyncio.gather(*(self._start_worker(w) for w in self._workers))
            if s.metrics_port is not None:
                self.metrics_port = self._serve_metrics(s.metrics_host, s.metrics_port)
        except BaseException:
            await self.stop(grace_s=0)
            raise
        log.info(
            "%d gateway workers serving on %s:%d (pids %s; metrics %s)",
            self.count,
            s.host,
            self.port,
            ", ".join(map(str, self.pids)),
            f"{s.metrics_host}:{self.metrics_port}" if self.metrics_port else "off",
        )
        return self.port

    def _serve_metrics(self, host: str, port: int) -> int:
        from prometheus_client import CollectorRegistry, multiprocess

        from switchyard.proxy.metrics import start_metrics_server

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self._metrics_dir)
        registry.register(WorkerProcessCollector(self._live_workers))
        registry.register(WORKER_RECYCLES)
        try:
            return start_metrics_server(host, port, registry)
        except OSError as exc:
            raise PortInUse(f"cannot serve metrics on {host}:{port}: {exc.strerror}") from exc

    def _worker_settings_json(self) -> bytes:
        # Every worker binds the reserved port; the pool serves the metrics.
        update = {"port": self.port, "metrics_port": None, "workers": 1}
        return self.settings.model_copy(update=update).model_dump_json().encode()

    async def _start_worker(self, worker: _Worker) -> None:
        assert self._metrics_dir is not None
        env = {
            **os.environ,
            "PROMETHEUS_MULTIPROC_DIR": self._metrics_dir,
            RELOAD_VERDICT_ENV: str(self._verdict_path),
            SUPERVISOR_PID_ENV: str(os.getpid()),
        }
        process = await asyncio.create_subprocess_exec(
            *dying_with_parent(
                [sys.executable, "-m", "switchyard.server.workers", "--index", str(worker.index)]
                + ["--log-level", self._log_level, "--log-format", self._log_format]
            ),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,  # the supervisor alone decides when a worker stops, not the terminal's ^C
        )
        worker.process = process
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(self._worker_settings_json())
        await process.stdin.drain()
        process.stdin.close()
        timeout_s = self.settings.backend_ready_timeout_s + 30.0
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    line = await process.stdout.readline()
                    if not line:
                        status = await process.wait()
                        raise WorkerStartFailed(f"gateway worker {worker.index} exited with status {status} on start")
                    text = line.decode(errors="replace").rstrip("\n")
                    if text.startswith(READY):
                        break
                    print(text, flush=True)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise WorkerStartFailed(f"gateway worker {worker.index} did not serve within {timeout_s:g} s") from None
        worker.ready_since = time.monotonic()
        worker.forwarder = asyncio.create_task(_forward(process.stdout), name=f"worker-{worker.index}-stdout")
        log.info("gateway worker %d serving (pid %d)", worker.index, process.pid)

    # -- reloading --------------------------------------------------------------

    @property
    def _verdict_path(self) -> Path:
        assert self._metrics_dir is not None
        return Path(self._metrics_dir) / "reload-verdict.json"

    def reload(self, *, loaded: Sequence[str] = (), refused: ReloadRefused | None = None) -> None:
        """Has every live worker reload, after the supervisor's part (the models it ``loaded``, or ``refused``)."""
        write_verdict(self._verdict_path, loaded=loaded, refused=refused)
        for worker in self._workers:
            process = worker.process
            if process is not None and process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGHUP)

    # -- supervising ------------------------------------------------------------

    async def supervise(self) -> None:
        """Restarts any worker that exits until ``stop()``; raises ``WorkersGaveUp`` after repeated quick failures.

        With ``worker_max_rss_mb`` set, also replaces a worker whose resident
        memory passes it (see :meth:`_recycle`).
        """
        watchers = [self._supervise(w) for w in self._workers]
        if self.settings.worker_max_rss_mb:
            watchers.append(self._watch_memory(self.settings.worker_max_rss_mb * 2**20))
        await asyncio.gather(*watchers)

    async def _watch_memory(self, limit_bytes: int) -> None:
        while not self._stopping:
            await asyncio.sleep(self._memory_check_s)
            for worker in self._workers:
                process = worker.process
                if process is None or process.returncode is not None or self._stopping:
                    continue
                rss = resident_bytes(process.pid)
                if rss > limit_bytes:
                    log.warning(
                        "gateway worker %d (pid %d) holds %d MiB, over worker_max_rss_mb %d: replacing it",
                        worker.index,
                        process.pid,
                        rss >> 20,
                        limit_bytes >> 20,
                    )
                    await self._recycle(worker, "memory")

    async def _recycle(self, worker: _Worker, reason: str) -> None:
        """Replaces a live worker without failing a call: the new one serves on the port before the old one drains.

        Both bind the port with SO_REUSEPORT, so the kernel sends new
        connections to either while they overlap; then the old one gets SIGTERM
        and, as on shutdown, finishes its calls within the grace period while
        its clients reconnect to the new one.
        """
        old = worker.process
        assert old is not None
        old_forwarder = worker.forwarder
        try:
            await self._start_worker(worker)
        except WorkerStartFailed as exc:
            log.error("could not replace gateway worker %d: %s; it keeps serving", worker.index, exc)
            worker.process, worker.forwarder = old, old_forwarder
            return
        WORKER_RECYCLES.labels(reason).inc()
        with contextlib.suppress(ProcessLookupError):
            old.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(old.wait(), self.settings.grace_s + _EXIT_SLACK_S)
        except TimeoutError:
            log.warning("replaced gateway worker %d (pid %d) did not stop in time: killing it", worker.index, old.pid)
            with contextlib.suppress(ProcessLookupError):
                old.kill()
            await old.wait()
        if old_forwarder is not None:
            await asyncio.gather(old_forwarder, return_exceptions=True)
        await self._bury_pid(old.pid)
        new = worker.process
        log.info("gateway worker %d replaced: pid %d -> %s", worker.index, old.pid, new.pid if new else "none")

    async def _supervise(self, worker: _Worker) -> None:
        while not self._stopping:
            process = worker.process
            assert process is not None
            status = await process.wait()
            if self._stopping:
                return
            if process is not worker.process:
                continue  # replaced on purpose (_recycle); watch its successor
            await self._bury(worker)
            lived = time.monotonic() - worker.ready_since
            worker.quick_failures = worker.quick_failures + 1 if lived < self._quick_failure_s else 0
            log.error("gateway worker %d (pid %d) exited with status %s after %.1f s",
                      worker.index, worker.process.pid, status, lived)  # fmt: skip
            while True:
                if worker.quick_failures >= self._max_quick_failures:
                    message = (
                        f"gateway worker {worker.index} failed {worker.quick_failures} times in a row, each within "
                        f"{self._quick_failure_s:g} s of starting; giving up"
                    )
                    log.error("%s", message)
                    raise WorkersGaveUp(message)
                delay = min(self._backoff_s * 2 ** max(worker.quick_failures - 1, 0), self._max_backoff_s)
                log.warning("restarting gateway worker %d in %.1f s", worker.index, delay)
                await asyncio.sleep(delay)
                if self._stopping:
                    return
                try:
                    await self._start_worker(worker)
                except WorkerStartFailed as exc:
                    log.error("%s", exc)
                    await self._bury(worker)
                    worker.quick_failures += 1
                    continue
                break

    async def _bury(self, worker: _Worker) -> None:
        if worker.process is not None:
            await self._bury_pid(worker.process.pid)

    async def _bury_pid(self, pid: int) -> None:
        """What a dead worker leaves: its live gauges leave the sums (its counters stay counted), its shared memory
        leaves Triton."""
        if self._metrics_dir is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid, self._metrics_dir)
        await self._release_shared_memory(pid)

    async def _release_shared_memory(self, pid: int) -> None:
        """Unregisters from each local Triton the shared-memory regions of a dead worker (``switchyard_<pid>_...``).

        A worker that exits cleanly unregisters its own; one that was killed
        cannot, and Triton would keep the region mapped until it restarts.
        """
        if self.settings.triton_shared_memory != "system":
            return
        endpoints = [e for e in parse_endpoints(self.settings.triton_url) if not e.startswith(DNS_PREFIX)]
        await asyncio.gather(*(_unregister_regions(e, f"switchyard_{pid}_") for e in endpoints if is_local(e)))

    # -- stopping ---------------------------------------------------------------

    async def stop(self, grace_s: float | None = None) -> None:
        """SIGTERM to every worker (each drains within ``grace_s``), then kills what is left; safe to repeat."""
        self._stopping = True
        grace = self.settings.grace_s if grace_s is None else grace_s
        running = [w.process for w in self._workers if w.process is not None and w.process.returncode is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        if running:
            _done, late = await asyncio.wait(
                [asyncio.ensure_future(p.wait()) for p in running], timeout=grace + _EXIT_SLACK_S
            )
            if late:
                log.warning("%d gateway workers did not stop in time: killing them", len(late))
                for process in running:
                    if process.returncode is None:
                        with contextlib.suppress(ProcessLookupError):
                            process.kill()
                await asyncio.gather(*late)
        for worker in self._workers:
            if worker.forwarder is not None:
                worker.forwarder.cancel()
                await asyncio.gather(worker.forwarder, return_exceptions=True)
                worker.forwarder = None
        if self._reservation is not None:
            self._reservation.close()
            self._reservation = None
        if self._metrics_dir is not None:
            shutil.rmtree(self._metrics_dir, ignore_errors=True)
            self._metrics_dir = None


async def _unregister_regions(endpoint: str, prefix: str) -> None:
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    try:
        async with grpc.aio.insecure_channel(endpoint) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            status = await stub.SystemSharedMemoryStatus(service_pb2.SystemSharedMemoryStatusRequest(), timeout=5)
            for name in status.regions:
                if name.startswith(prefix):
                    request = service_pb2.SystemSharedMemoryUnregisterRequest(name=name)
                    await stub.SystemSharedMemoryUnregister(request, timeout=5)
                    log.info("unregistered shared-memory region %s of a dead worker from Triton at %s", name, endpoint)
    except grpc.aio.AioRpcError as exc:
        log.warning("could not unregister the shared memory of a dead worker from Triton at %s: %s %s",
                    endpoint, exc.code().name, exc.details())  # fmt: skip


def write_verdict(path: Path, *, loaded: Sequence[str] = (), refused: ReloadRefused | None = None) -> None:
    """Leaves the supervisor's part of a reload for the workers (written whole, then moved into place)."""
    verdict: dict[str, str | list[str]] = {"loaded": list(loaded)}
    if refused is not None:
        verdict = {"code": refused.code.name, "message": refused.message}
    staging = path.with_name(path.name + ".new")
    staging.write_text(json.dumps(verdict))
    os.replace(staging, path)


def read_verdict(path: Path) -> list[str]:
    """The models the supervisor loaded for this reload; ReloadRefused when it refused it."""
    try:
        verdict = json.loads(path.read_text())
    except (OSError, ValueError):
        return []  # no reload through the supervisor yet (a SIGHUP sent to this worker alone)
    if "code" in verdict:
        raise ReloadRefused(grpc.StatusCode[verdict["code"]], str(verdict["message"]))
    return [str(m) for m in verdict.get("loaded", [])]


async def _forward(stream: asyncio.StreamReader) -> None:
    """Copies what a worker prints after it is ready to our stdout (the pipe never fills up)."""
    while line := await stream.readline():
        sys.stdout.write(line.decode(errors="replace"))
        sys.stdout.flush()


# -- the worker process -----------------------------------------------------------


async def _serve_worker(settings_json: bytes) -> int:
    from switchyard.proxy.routes.schema import RoutesFile, load_routes

    settings = GatewaySettings.model_validate_json(settings_json)
    stop, reload_wanted = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload_wanted.set)  # before anything slow: SIGHUP would end the process
    routes_path = settings.routes_file or BUNDLED_ROUTES
    routes = load_routes(routes_path)
    verdict = os.environ.get(RELOAD_VERDICT_ENV)

    async def prepare(_config: RoutesFile) -> list[str]:
        return read_verdict(Path(verdict)) if verdict else []

    gateway = Gateway(settings, routes, reuse_port=True, routes_path=routes_path, prepare_reload=prepare)
    supervisor = os.environ.get(SUPERVISOR_PID_ENV)
    if supervisor:
        gateway.reload_request = functools.partial(_ask_supervisor, gateway, int(supervisor))
    reloads: asyncio.Task[None] | None = None
    try:
        port = await gateway.start()
        heap.settle()
        print(f"{READY} {port}", flush=True)
        reloads = asyncio.create_task(_reloads(gateway, reload_wanted), name="reloads")
        await stop.wait()
        return 0
    finally:
        if reloads is not None:
            reloads.cancel()
            await asyncio.gather(reloads, return_exceptions=True)
        await gateway.stop()


async def _reloads(gateway: Gateway, wanted: asyncio.Event) -> None:
    """Reloads the worker's gateway on each SIGHUP (refusals are logged and counted by the gateway)."""
    while True:
        await wanted.wait()
        wanted.clear()
        with contextlib.suppress(ReloadRefused):
            await gateway.reload()


async def _ask_supervisor(gateway: Gateway, supervisor: int) -> ReloadOutcome:
    """Admin/Reload in a worker: every worker must reload, so the supervisor is asked; answers this one's outcome.

    A routes file that does not parse is refused here at once, as every worker would refuse it.
    """
    reloader = gateway.reloader
    assert reloader is not None
    reloader.check_file()
    outcome = reloader.next_reload()
    try:
        os.kill(supervisor, signal.SIGHUP)
    except ProcessLookupError:
        raise ReloadRefused(grpc.StatusCode.UNAVAILABLE, "the supervisor of this worker is gone") from None
    timeout_s = gateway.settings.backend_ready_timeout_s + 30.0
    try:
        return await asyncio.wait_for(outcome, timeout_s)
    except TimeoutError:
        raise ReloadRefused(grpc.StatusCode.UNAVAILABLE, f"the reload did not finish within {timeout_s:g} s") from None


def main(argv: list[str] | None = None) -> int:
    """A worker: reads its settings (JSON) from stdin, serves until SIGTERM."""
    import argparse

    import uvloop

    parser = argparse.ArgumentParser(prog="switchyard.server.workers", description=__doc__)
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--log-format", choices=LOG_FORMATS, default="text")
    args = parser.parse_args(argv)
    configure_logging(args.log_level, args.log_format, process_name=f"worker-{args.index}")
    settings_json = sys.stdin.buffer.read()
    try:
        return uvloop.run(_serve_worker(settings_json))
    except Exception as exc:
        log.error("gateway worker %d failed: %s", args.index, exc, exc_info=log.isEnabledFor(logging.DEBUG))
        return 1


if __name__ == "__main__":
    sys.exit(main())
