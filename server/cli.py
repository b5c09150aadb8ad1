"""The ``switchyard`` command.

* ``switchyard serve`` — with no arguments: builds the bundled model
  repository if needed, starts a local Triton from the ``nvidia-pytriton``
  wheel, waits for its models, then serves the gateway (gRPC on 8500,
  metrics on 127.0.0.1:8502). ``--triton-url`` (or ``SWITCHYARD_TRITON_URL``)
  uses an existing Triton instead. SIGINT/SIGTERM drain in-flight calls,
  then stop Triton. A local Triton that dies is restarted on the same ports
  (``LocalTriton.supervise``); after repeated quick failures serve gives up
  and exits 1. SIGHUP (or ``switchyard reload``) reloads the routes file and
  the models without a restart (``server.model_sync``, ``proxy.reloading``).
  Asynchronous jobs are served too, kept in an embedded SQLite file
  (``--jobs-db``) or in Redis (``--jobs-redis-url``); ``--no-jobs`` turns
  them off. ``--workers N`` serves from N processes sharing the port
  (``server.workers``), all in front of the one Triton.
* ``switchyard triton`` — only the local Triton, listening on every address
  (gRPC 8001, HTTP 8000, metrics 8002): a Triton replica that gateways on
  other hosts call (compose, Kubernetes). Supervised and restarted as under
  ``serve``; SIGTERM lets Triton finish in-flight requests, then exits 0.
  Every gateway setting is a flag of ``serve``, generated from the settings
  model (``server.settings_cli``), and a key of ``--settings FILE`` (TOML);
  a flag beats ``SWITCHYARD_*`` variables, which beat the file.
* ``switchyard config check ROUTES_FILE`` — checks a routes file (and with
  ``--settings`` a settings file; with ``--triton-url`` the models too)
  without serving.
* ``switchyard models build`` — builds the bundled model repository.
* ``switchyard models add | list | remove``, ``switchyard reload`` — users' own
  models and reloading a running gateway (``server.model_commands``).
* ``switchyard init DIR`` — a project skeleton for them (``server.project_init``).
* ``switchyard batch`` — scores a data set through a route: the SDK's command.

The ``switchyard`` entry point belongs to the SDK, which calls
:func:`add_commands` when the server is installed; nothing here imports the
SDK (``tests/test_layers.py``).

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
from switchyard.proxy.backend.triton import TritonBackend
from switchyard.proxy.errors import ConfigError, GatewayError
from switchyard.proxy.gateway import Gateway, PortInUse
from switchyard.proxy.grpc.security import load_security
from switchyard.proxy.routes.base import build_ops
from switchyard.proxy.routes.schema import RoutesFile, load_routes
from switchyard.proxy.routes.table import build_routes
from switchyard.proxy.settings import GatewaySettings
from switchyard.server import heap, model_commands, project_init
from switchyard.server.local_triton import LocalTriton, LocalTritonError, TritonInstallation
from switchyard.server.model_sync import ModelSync, Reloads, routes_models
from switchyard.server.preflight import check_model_repository, check_ports, check_redis, where_to_set
from switchyard.server.settings_cli import PRECEDENCE, add_settings_arguments, describe, flag_values, load_settings
from switchyard.server.workers import WorkerPool, WorkersGaveUp, WorkerStartFailed

log = logging.getLogger("switchyard")

DEFAULT_TRITON_GRACE_S = 10.0
"""``switchyard triton``: how long Triton may finish in-flight requests after SIGTERM before it is killed."""
DEFAULT_TRITON_READY_TIMEOUT_S = 120.0
"""``switchyard triton``: how long a start or restart may take to have every model ready."""


SERVE_FLAG_ALIASES = {
    "routes_file": ["--config"],
    "tls_cert_file": ["--tls-cert"],
    "tls_key_file": ["--tls-key"],
    "tls_client_ca_file": ["--tls-client-ca"],
}
"""Shorter spellings of some settings' flags under ``serve``."""
SERVE_NOTES = {
    "triton_url": "Unset, serve starts a local Triton from the nvidia-pytriton wheel",
    "triton_shared_memory": "Under serve the default is system with the local Triton, off with --triton-url",
    "workers": "Metrics are summed over the workers",
}
"""What ``serve`` adds to some settings' help."""


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
    """The settings of ``serve``: flags, then ``SWITCHYARD_*`` variables, then ``--settings FILE``, then defaults."""
    flags = flag_values(args)
    if args.no_metrics:
        flags["metrics_port"] = None
    if args.no_jobs:
        flags["jobs_store"] = "off"
    return load_settings(flags, args.settings)


async def serve(args: argparse.Namespace) -> int:
    logs.configure(args.log_level, args.log_format)
    settings = _settings(args)
    routes_path = settings.routes_file or BUNDLED_ROUTES
    routes = load_routes(routes_path)
    if not routes.routes:
        log.warning("%s declares no routes: serving none until a reload brings some", routes_path)
    # Mistakes a user can fix fail here, each with one line, before Triton starts or models are built.
    load_security(settings)
    await preflight(settings, args)
    tritons: list[LocalTriton] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reloads = Reloads(routes_path, sync=None)
    reloads.install()  # SIGHUP reloads from now on (before, it would end the process)
    reloading: asyncio.Task[None] | None = None
    gateway: Gateway | WorkerPool | None = None
    supervisors: list[asyncio.Task[None]] = []
    try:
        # --triton-url or SWITCHYARD_TRITON_URL names a Triton elsewhere; with neither, serve runs its own.
        if "triton_url" not in settings.model_fields_set:
            # A repository named on the command line is the user's: used as it
            # is. The default one is ours: built, and rebuilt when stale.
            repository = args.model_repository or ensure_model_repository(default_model_repository())
            first_port = args.triton_grpc_port
            models = routes_models(routes)  # loaded at start; a reload loads more (explicit model control)
            tritons = [
                LocalTriton(repository, grpc_port=first_port + i if first_port else 0, models=models)
                for i in range(args.triton_replicas)
            ]
            log.info("starting %d local Triton(s) (model repository %s)", len(tritons), repository)
            for triton in tritons:
                await triton.start()
            await asyncio.gather(*(t.wait_ready(settings.backend_ready_timeout_s) for t in tritons))
            log.info("local Triton(s) ready at %s", ", ".join(t.grpc_url for t in tritons))
            reloads.sync = ModelSync(repository, tritons)
            reloads.sync.started(models)
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
            prepare = reloads.sync.sync if reloads.sync is not None else None
            gateway = Gateway(settings, routes, routes_path=routes_path, prepare_reload=prepare)
        port = await gateway.start()
        if not isinstance(gateway, WorkerPool):
            heap.settle()  # workers settle their own
        print(f"switchyard: serving on {settings.host}:{port}", flush=True)
        reloading = asyncio.create_task(reloads.run(gateway), name="reloads")
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
        background = [*supervisors, *([reloading] if reloading is not None else [])]
        for task in background:
            task.cancel()
        if background:
            await asyncio.wait(background)
        if gateway is not None:
            await gateway.stop()
        await asyncio.gather(*(t.stop() for t in tritons))
        log.info("stopped")


async def preflight(settings: GatewaySettings, args: argparse.Namespace) -> None:
    """``serve``'s checks before it starts anything (``server.preflight``)."""
    check_ports(settings)
    if "triton_url" not in settings.model_fields_set:
        TritonInstallation.find()  # raises TritonNotInstalled: install the triton extra or pass --triton-url
        if args.model_repository is not None:
            check_model_repository(args.model_repository)
    await check_redis(settings)


async def serve_triton(args: argparse.Namespace) -> int:
    """``switchyard triton``: runs the local Triton alone until SIGINT/SIGTERM, restarting it when it dies."""
    logs.configure(args.log_level, args.log_format)
    TritonInstallation.find()
    if args.model_repository is not None:
        check_model_repository(args.model_repository)
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


def check_config(args: argparse.Namespace) -> int:
    """``switchyard config check``: the routes file (and a settings file) checked as ``serve`` would, not served."""
    config = load_routes(args.routes_file)
    _check_ops(config)
    if args.settings is not None:
        load_settings({}, args.settings)
    if args.triton_url:
        uvloop.run(_check_against_triton(config, args.triton_url))
    names = ", ".join(route.name for route in config.routes)
    checked = f" against {args.triton_url}" if args.triton_url else ""
    print(f"switchyard: {args.routes_file}: {len(config.routes)} routes OK{checked} ({names})")
    return 0


def _check_ops(config: RoutesFile) -> None:
    """Every op of every route exists and takes its parameters (what start-up checks before any model)."""
    for route in config.routes:
        where = f"routes[{route.name}]"
        build_ops(route.pre, f"{where}.pre")
        build_ops(route.post, f"{where}.post")
        for kind in ("steps", "branches", "stages"):
            for i, step in enumerate(getattr(route, kind, ())):
                build_ops(step.post, f"{where}.{kind}[{i}].post")


async def _check_against_triton(config: RoutesFile, triton_url: str) -> None:
    backend = TritonBackend(triton_url, max_message_bytes=GatewaySettings.model_fields["max_message_bytes"].default)
    try:
        await build_routes(config, backend)
    finally:
        await backend.close()


def parser() -> argparse.ArgumentParser:
    """The server's commands on their own (``python -m switchyard.server.cli``)."""
    p = argparse.ArgumentParser(prog="switchyard", description="gRPC inference gateway in front of Triton")
    p.add_argument(
        "--log-level",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
        default=os.environ.get("SWITCHYARD_LOG_LEVEL", "INFO").upper(),
    )
    add_commands(p.add_subparsers(dest="command", required=True))
    return p


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds the server's commands (``serve``, ``triton``, ``config``, ``models``, ...) to the ``switchyard`` command."""
    s = sub.add_parser(
        "serve",
        help="serve the gateway (starts a local Triton unless --triton-url is given)",
        description="Serves the gateway. Every setting below is also read from its SWITCHYARD_* environment "
        f"variable and from a --settings file; where several give one, {PRECEDENCE} wins.",
    )
    s.add_argument(
        "--settings",
        type=Path,
        metavar="FILE",
        help="settings file (TOML: one 'setting_name = value' per line, names as the flags below with _ for -; "
        "relative paths in it are relative to its folder)",
    )
    s.add_argument("--no-metrics", action="store_true", help="do not serve metrics (as --metrics-port none)")
    s.add_argument("--no-jobs", action="store_true", help="do not serve the Jobs service (as --jobs-store off)")
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
    add_settings_arguments(s, aliases=SERVE_FLAG_ALIASES, notes=SERVE_NOTES)
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

    c = sub.add_parser("config", help="configuration commands")
    csub = c.add_subparsers(dest="config_command", required=True)
    k = csub.add_parser(
        "check",
        help="check a routes file (and a settings file) without serving",
        description="Checks a routes file: its TOML, every route's schema, ops and their parameters; with "
        "--triton-url also every model and tensor mapping against that Triton's model metadata. Exits 0 "
        "when all is well, 2 with the route and field named when not.",
    )
    k.add_argument("routes_file", type=Path, metavar="ROUTES_FILE", help="the routes file (TOML)")
    k.add_argument("--settings", type=Path, metavar="FILE", help="also check this settings file (TOML)")
    k.add_argument("--triton-url", help="also check the routes against the models of this Triton (host:port)")
    k.set_defaults(func=lambda a: run_command(lambda: check_config(a)))

    m = sub.add_parser("models", help="model repository commands")
    msub = m.add_subparsers(dest="models_command", required=True)
    b = msub.add_parser("build", help="train the bundled models and write the Triton model repository")
    b.add_argument("--out", type=Path, help="where to write it (default: the user cache)")
    b.set_defaults(func=lambda a: run_command(lambda: build_models(a)))
    model_commands.add_commands(sub, msub)  # models add | list | remove, reload
    project_init.add_command(sub)  # init


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
    except (ConfigError, PortInUse) as exc:
        print(f"switchyard: error: {where_to_set(str(exc))}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(f"switchyard: error: {describe(exc)}", file=sys.stderr)
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
