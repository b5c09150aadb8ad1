"""The ``switchyard`` command.

* ``switchyard serve`` — with no arguments: builds the bundled model
  repository if needed, starts a local Triton from the ``nvidia-pytriton``
  wheel, waits for its models, then serves the gateway (gRPC on 8500,
  metrics on 127.0.0.1:8502). ``--triton-url`` (or ``SWITCHYARD_TRITON_URL``)
  uses an existing Triton instead. SIGINT/SIGTERM drain in-flight calls,
  then stop Triton. A local Triton that dies is restarted on the same ports
  (``LocalTriton.supervise``); after repeated quick failures serve gives up
  and exits 1.
  Asynchronous jobs are served too, kept in an embedded SQLite file
  (``--jobs-db``) or in Redis (``--jobs-redis-url``); ``--no-jobs`` turns
  them off. ``--workers N`` serves from N processes sharing the port
  (``server.workers``), all in front of the one Triton.
* ``switchyard triton`` — only the local Triton, listening on every address
  (gRPC 8001, HTTP 8000, metrics 8002): a Triton replica that gateways on
  other hosts call (compose, Kubernetes). Supervised and restarted as under
  ``serve``; SIGTERM lets Triton finish in-flight requests, then exits 0.
* ``switchyard models build`` — builds the bundled model repository.
* ``switchyard batch`` — scores a data set through a route: the SDK's command
  (``switchyard.client.cli`` is the ``switchyard`` entry point and adds these).

The event loop is uvloop's, one per process.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop
from pydantic import ValidationError

from switchyard.models import BUNDLED_ROUTES
from switchyard.proxy import logs
from switchyard.proxy.errors import ConfigError, GatewayError
from switchyard.proxy.gateway import Gateway, PortInUse
from switchyard.proxy.grpc.security import load_security
from switchyard.proxy.routes.schema import load_routes
from switchyard.proxy.settings import DEFAULT_METRICS_PORT, DEFAULT_PORT, GatewaySettings
from switchyard.server.local_triton import LocalTriton, LocalTritonError
from switchyard.server.workers import WorkerPool, WorkersGaveUp, WorkerStartFailed

log = logging.getLogger("switchyard")

DEFAULT_TRITON_GRACE_S = 10.0
"""``switchyard triton``: how long Triton may finish in-flight requests after SIGTERM before it is killed."""
DEFAULT_TRITON_READY_TIMEOUT_S = 120.0
"""``switchyard triton``: how long a start or restart may take to have every model ready."""


def default_model_repository() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "switchyard" / "model-repository"


def ensure_model_repository(path: Path) -> Path:
    """Builds the bundled models into ``path`` unless a build of the current sources is there.

    The stamp file records which sources built it, so an upgrade rebuilds.
    """
    from switchyard.models.build import build_repository, source_fingerprint

    stamp = path / ".build-fingerprint"
    fingerprint = source_fingerprint()
    if stamp.is_file() and stamp.read_text().strip() == fingerprint:
        return path
    log.info("building the bundled model repository into %s", path)
    build_repository(path)
    stamp.write_text(fingerprint + "\n")
    return path


def _settings(args: argparse.Namespace) -> GatewaySettings:
    overrides: dict[str, Any] = {}
    for key in ("host", "port", "metrics_host", "routes_file", "grace_s", "workers"):
        value = getattr(args, key)
        if value is not None:
            overrides[key] = value
    for key in ("tls_cert_file", "tls_key_file", "tls_client_ca_file", "api_keys_file"):
        if getattr(args, key, None) is not None:
            overrides[key] = getattr(args, key)
    if args.no_metrics:
        overrides["metrics_port"] = None
    elif args.metrics_port is not None:
        overrides["metrics_port"] = args.metrics_port
    if args.triton_url:
        overrides["triton_url"] = args.triton_url
    if getattr(args, "triton_shared_memory", None) is not None:
        overrides["triton_shared_memory"] = args.triton_shared_memory
    for key in (
        "data_dir",
        "jobs_db",
        "jobs_redis_url",
        "jobs_concurrency",
        "jobs_max_queued",
        "jobs_visibility_timeout_s",
        "jobs_max_attempts",
    ):
        if getattr(args, key, None) is not None:
            overrides[key] = getattr(args, key)
    if getattr(args, "no_jobs", False):
        overrides["jobs_store"] = "off"
    return GatewaySettings(**overrides)


async def serve(args: argparse.Namespace) -> int:
    logs.configure(args.log_level, args.log_format)
    settings = _settings(args)
    routes = load_routes(settings.routes_file or BUNDLED_ROUTES)
    load_security(settings)  # bad TLS or API key files fail here, before Triton starts
    tritons: list[LocalTriton] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    gateway: Gateway | WorkerPool | None = None
    supervisors: list[asyncio.Task[None]] = []
    try:
        # --triton-url or SWITCHYARD_TRITON_URL names a Triton elsewhere; with neither, serve runs its own.
        if "triton_url" not in settings.model_fields_set:
            # A repository named on the command line is the user's: used as it
            # is. The default one is ours: built, and rebuilt when stale.
            repository = args.model_repository or ensure_model_repository(default_model_repository())
            first_port = args.triton_grpc_port
            tritons = [
                LocalTriton(repository, grpc_port=first_port + i if first_port else 0)
                for i in range(args.triton_replicas)
            ]
            log.info("starting %d local Triton(s) (model repository %s)", len(tritons), repository)
            for triton in tritons:
                await triton.start()
            await asyncio.gather(*(t.wait_ready(settings.backend_ready_timeout_s) for t in tritons))
            update: dict[str, Any] = {"triton_url": ",".join(t.grpc_url for t in tritons)}
            if "triton_shared_memory" not in settings.model_fields_set:
                # Our own Triton runs on this host: large inputs go through shared
                # memory unless the flag or SWITCHYARD_TRITON_SHARED_MEMORY says otherwise.
                update["triton_shared_memory"] = "system"
            settings = settings.model_copy(update=update)
        if settings.workers > 1 or settings.worker_max_rss_mb:
            # Worker processes share the port (SO_REUSEPORT); this process supervises them, and replaces
            # one that dies or grows past worker_max_rss_mb.
            gateway = WorkerPool(settings, settings.workers, log_level=args.log_level, log_format=args.log_format)
        else:
            gateway = Gateway(settings, routes)
        port = await gateway.start()
        print(f"switchyard: serving on {settings.host}:{port}", flush=True)
        for triton in tritons:
            # Restarts a local Triton when it dies; if it gives up, serve stops and exits 1.
            supervisors.append(asyncio.create_task(triton.supervise(ready_timeout_s=settings.backend_ready_timeout_s)))
        if isinstance(gateway, WorkerPool):
            supervisors.append(asyncio.create_task(gateway.supervise()))  # restarts dead workers
        for supervisor in supervisors:
            supervisor.add_done_callback(lambda _task: stop.set())
        await stop.wait()
        for supervisor in supervisors:
            if supervisor.done():
                supervisor.result()  # raises TritonGaveUp or WorkersGaveUp, reported by main()
        log.info("shutting down: draining in-flight calls for up to %g s", settings.grace_s)
        return 0
    finally:
        for supervisor in supervisors:
            supervisor.cancel()
        if supervisors:
            await asyncio.wait(supervisors)
        if gateway is not None:
            await gateway.stop()
        await asyncio.gather(*(t.stop() for t in tritons))
        log.info("stopped")


async def serve_triton(args: argparse.Namespace) -> int:
    """``switchyard triton``: runs the local Triton alone until SIGINT/SIGTERM, restarting it when it dies."""
    logs.configure(args.log_level, args.log_format)
    repository = args.model_repository or ensure_model_repository(default_model_repository())
    triton = LocalTriton(
        repository,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        host=args.host,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    supervisor: asyncio.Task[None] | None = None
    try:
        log.info("starting Triton (model repository %s)", repository)
        await triton.start()
        await triton.wait_ready(args.ready_timeout_s)
        print(
            f"switchyard: triton serving on {args.host}:{triton.grpc_port} "
            f"(HTTP {triton.http_port}, metrics {triton.metrics_port})",
            flush=True,
        )
        supervisor = asyncio.create_task(triton.supervise(ready_timeout_s=args.ready_timeout_s))
        supervisor.add_done_callback(lambda _task: stop.set())
        await stop.wait()
        if supervisor.done():
            supervisor.result()  # raises TritonGaveUp, reported by run_command
        log.info("shutting down: Triton finishes in-flight requests for up to %g s", args.grace_s)
        return 0
    finally:
        if supervisor is not None:
            supervisor.cancel()
            await asyncio.wait([supervisor])
        await triton.stop(args.grace_s)
        log.info("stopped")


def build_models(args: argparse.Namespace) -> int:
    path = ensure_model_repository(args.out or default_model_repository())
    print(f"switchyard: model repository ready at {path}")
    return 0


def parser() -> argparse.ArgumentParser:
    """The server's commands on their own (``python -m switchyard.server.cli``)."""
    p = argparse.ArgumentParser(prog="switchyard", description="gRPC inference gateway in front of Triton")
    p.add_argument("--log-level", default=os.environ.get("SWITCHYARD_LOG_LEVEL", "INFO"))
    add_commands(p.add_subparsers(dest="command", required=True))
    return p


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``serve`` and ``models`` to the ``switchyard`` command (``switchyard.client.cli`` adds ``batch``)."""
    s = sub.add_parser("serve", help="serve the gateway (starts a local Triton unless --triton-url is given)")
    s.add_argument("--config", dest="routes_file", type=Path, help="routes file (TOML); default: the bundled routes")
    s.add_argument(
        "--triton-url",
        help="use this Triton (host:port of its gRPC endpoint; several comma-separated, or dns:///name:port) "
        "instead of a local one; also SWITCHYARD_TRITON_URL",
    )
    s.add_argument("--host", help="address to bind (default 0.0.0.0)")
    s.add_argument("--port", type=int, help=f"gRPC port (default {DEFAULT_PORT}; 0 picks one)")
    s.add_argument("--metrics-host", help="address of the metrics endpoint (default 127.0.0.1)")
    s.add_argument("--metrics-port", type=int, help=f"metrics port (default {DEFAULT_METRICS_PORT}; 0 picks one)")
    s.add_argument("--no-metrics", action="store_true", help="do not serve metrics")
    s.add_argument("--grace-s", type=float, help="seconds in-flight calls may finish after SIGTERM")
    s.add_argument(
        "--workers",
        type=int,
        help="gateway processes sharing the port with SO_REUSEPORT (default 1); metrics are summed over them",
    )
    s.add_argument("--tls-cert", dest="tls_cert_file", type=Path, help="server certificate (PEM): serve TLS only")
    s.add_argument("--tls-key", dest="tls_key_file", type=Path, help="private key of --tls-cert (PEM, unencrypted)")
    s.add_argument(
        "--tls-client-ca",
        dest="tls_client_ca_file",
        type=Path,
        help="CA certificates (PEM): require client certificates signed by them (mutual TLS)",
    )
    s.add_argument(
        "--api-keys-file",
        dest="api_keys_file",
        type=Path,
        help="API keys and their allowed routes (TOML, see proxy/grpc/security); "
        "SWITCHYARD_API_KEYS=name:key,... adds keys allowed every route",
    )
    s.add_argument(
        "--model-repository",
        type=Path,
        help="use this model repository as it is "
        "(default: the bundled models, built into the user cache when missing or stale)",
    )
    s.add_argument(
        "--triton-grpc-port",
        type=int,
        default=0,
        help="gRPC port of the local Triton (the next ones for --triton-replicas; default: any free)",
    )
    s.add_argument(
        "--triton-replicas",
        type=_at_least_one,
        default=1,
        help="local Tritons to start and supervise, all in one pool behind the gateway (default 1; "
        "one per GPU on a GPU host): a call fails over when one dies",
    )
    s.add_argument(
        "--triton-shared-memory",
        choices=("off", "system"),
        help="'system': send large input tensors to Triton through shared memory (Triton on this host); "
        "default: system with the local Triton, off with --triton-url",
    )
    j = s.add_argument_group("asynchronous jobs (switchyard.v1.Jobs)")
    j.add_argument("--data-dir", type=Path, help="folder of the embedded job store (default ~/.local/share/switchyard)")
    j.add_argument("--jobs-db", type=Path, help="SQLite file of the embedded job store (default DATA_DIR/jobs.db)")
    j.add_argument("--jobs-redis-url", help="keep jobs in this Redis (redis://host:6379/0), shared by every gateway")
    j.add_argument("--no-jobs", action="store_true", help="do not serve the Jobs service")
    j.add_argument("--jobs-concurrency", type=int, help="jobs this process runs at once (default 4)")
    j.add_argument("--jobs-max-queued", type=int, help="queued jobs before SubmitJob answers RESOURCE_EXHAUSTED")
    j.add_argument(
        "--jobs-visibility-timeout-s",
        type=float,
        help="lease of a running job; a job whose worker died runs again after it (default 30)",
    )
    j.add_argument("--jobs-max-attempts", type=int, help="default attempts per job before it fails (default 3)")
    _add_log_format(s)
    s.set_defaults(func=lambda a: run_command(lambda: uvloop.run(serve(a))))

    t = sub.add_parser(
        "triton", help="serve only the local Triton, on every address (a Triton replica for gateways elsewhere)"
    )
    t.add_argument(
        "--model-repository",
        type=Path,
        help="use this model repository as it is "
        "(default: the bundled models, built into the user cache when missing or stale)",
    )
    t.add_argument("--host", default="0.0.0.0", help="address Triton listens on (default 0.0.0.0)")
    t.add_argument("--grpc-port", type=int, default=8001, help="Triton's gRPC port (default 8001)")
    t.add_argument("--http-port", type=int, default=8000, help="Triton's HTTP port (default 8000)")
    t.add_argument("--metrics-port", type=int, default=8002, help="Triton's metrics port (default 8002)")
    t.add_argument(
        "--grace-s",
        type=float,
        default=DEFAULT_TRITON_GRACE_S,
        help=f"seconds in-flight requests may finish after SIGTERM (default {DEFAULT_TRITON_GRACE_S:g})",
    )
    t.add_argument(
        "--ready-timeout-s",
        type=float,
        default=DEFAULT_TRITON_READY_TIMEOUT_S,
        help=f"how long a (re)start may take to have every model ready (default {DEFAULT_TRITON_READY_TIMEOUT_S:g})",
    )
    _add_log_format(t)
    t.set_defaults(func=lambda a: run_command(lambda: uvloop.run(serve_triton(a))))

    m = sub.add_parser("models", help="model repository commands")
    msub = m.add_subparsers(dest="models_command", required=True)
    b = msub.add_parser("build", help="train the bundled models and write the Triton model repository")
    b.add_argument("--out", type=Path, help="where to write it (default: the user cache)")
    b.set_defaults(func=lambda a: run_command(lambda: build_models(a)))


def _add_log_format(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--log-format",
        choices=logs.LOG_FORMATS,
        default=os.environ.get("SWITCHYARD_LOG_FORMAT", "text"),
        help="text lines, or one JSON object per line (default text; also SWITCHYARD_LOG_FORMAT)",
    )


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def run_command(command: Callable[[], int]) -> int:
    """Runs a server command; the errors a user can act on become a message and an exit status, not a traceback."""
    try:
        return int(command())
    except (ConfigError, PortInUse, ValidationError) as exc:
        print(f"switchyard: error: {exc}", file=sys.stderr)
        return 2
    except GatewayError as exc:
        print(f"switchyard: error: {exc.message}", file=sys.stderr)
        return 1
    except (LocalTritonError, WorkersGaveUp, WorkerStartFailed) as exc:  # binary missing, port taken, a process died
        print(f"switchyard: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
