"""Reloading a running gateway: the routes file and the models again, without a restart.

A reload (``SIGHUP``, ``switchyard reload``, ``switchyard.v1.Admin/Reload``)
reads the routes file again and checks it as at start-up (the same messages),
runs the process's ``prepare`` step (``switchyard serve`` loads new and changed
models into its own Triton there), loads into Triton any model the new routes
need that no endpoint has ready (a Triton in explicit model-control mode
loads it; others refuse), builds and type-checks every route against
Triton's metadata (read again, so a route that follows the latest version
now follows the newest one loaded), and only then swaps the route table of
the data plane and of health at once.

Nothing is half-applied: any failure refuses the reload as a whole and the
running routes stay. Calls already running keep the route object they started
with (routes hold their own steps, batchers and versions), so they finish on
the old definition; a call that arrives after the swap sees only the new
table: a removed route is NOT_FOUND, its health name NOT_SERVING.

Reloads of one process run one at a time. ``switchyard_reloads_total{outcome}``
counts them (``ok``, ``refused``) per gateway process.

It does not unload models: a model no route uses stays loaded (calls on the old
routes may still need it); ``switchyard models remove`` unloads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
from prometheus_client import Counter

from switchyard.proxy.backend.pool import TritonPool
from switchyard.proxy.backend.repository import TritonRepository
from switchyard.proxy.cache import Cache
from switchyard.proxy.errors import ConfigError, GatewayError
from switchyard.proxy.grpc.health import HealthMonitor
from switchyard.proxy.lifecycle.dataplane import DataPlane
from switchyard.proxy.routes.schema import RoutesFile, load_routes
from switchyard.proxy.routes.table import RouteTable, build_routes, model_field
from switchyard.v1 import admin_pb2

log = logging.getLogger(__name__)

RELOADS = Counter(
    "switchyard_reloads",
    "Reloads of the routes file and the models (SIGHUP, switchyard reload, Admin/Reload) by this gateway process, "
    "by outcome: ok, or refused (the running routes stayed).",
    ["outcome"],
)


class ReloadRefused(Exception):
    """The reload changed nothing; ``code`` and ``message`` say why (the message names the route and field)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


Prepare = Callable[[RoutesFile], Awaitable[Sequence[str]]]
"""A process's own step before the routes are built (the models it loaded); raises ReloadRefused."""


@dataclass(frozen=True)
class ReloadOutcome:
    """What a reload changed."""

    routes: tuple[str, ...]
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    loaded_models: tuple[str, ...] = ()
    model_versions: dict[str, str] = field(default_factory=dict)

    def to_proto(self) -> admin_pb2.ReloadResponse:
        return admin_pb2.ReloadResponse(**asdict(self))

    def summary(self) -> str:
        parts = [f"{len(self.routes)} routes"]
        for label, names in (
            ("added", self.added),
            ("removed", self.removed),
            ("changed", self.changed),
            ("models loaded", self.loaded_models),
        ):
            if names:
                parts.append(f"{label}: {', '.join(names)}")
        return "; ".join(parts)


def _versions(table: RouteTable) -> dict[str, str]:
    """Model -> the version a call that pins none gets, over every route (a route's pin wins for its own calls)."""
    found: dict[str, str] = {}
    for route in table:
        for model, version in route.versions:
            if version and (model not in found or int(version) > int(found[model] or 0)):
                found[model] = version
    return found


@dataclass(eq=False, kw_only=True)
class Reloader:
    """Reloads one gateway process's routes (see the module docstring)."""

    routes_path: Path | None
    config: RoutesFile
    """The routes file now served."""
    table: RouteTable
    backend: TritonPool
    plane: DataPlane
    health: HealthMonitor
    data_cache: Cache | None
    ready_timeout_s: float
    prepare: Prepare | None = None
    on_routes: Callable[[RouteTable], None] = lambda _table: None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)
    _waiters: list[asyncio.Future[ReloadOutcome]] = field(default_factory=list, init=False)

    def next_reload(self) -> asyncio.Future[ReloadOutcome]:
        """The outcome of the next reload that starts after this call (ReloadRefused when it is refused)."""
        waiter: asyncio.Future[ReloadOutcome] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return waiter

    async def reload(self) -> ReloadOutcome:
        """Reloads; raises ReloadRefused (nothing changed) with the reason."""
        async with self._lock:
            waiters, self._waiters = self._waiters, []
            try:
                outcome = await self._reload()
            except ReloadRefused as exc:
                RELOADS.labels("refused").inc()
                log.error("reload refused, the running routes stay: %s", exc.message)
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(ReloadRefused(exc.code, exc.message))
                raise
            except Exception as exc:
                RELOADS.labels("refused").inc()
                log.exception("reload failed unexpectedly, the running routes stay")
                refused = ReloadRefused(grpc.StatusCode.INTERNAL, f"reload failed unexpectedly: {exc!r}")
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(ReloadRefused(refused.code, refused.message))
                raise refused from exc
            RELOADS.labels("ok").inc()
            log.info("reloaded: %s", outcome.summary())
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(outcome)
            return outcome

    def check_file(self) -> RoutesFile:
        """The routes file, parsed; a file that does not parse is refused (logged and counted) as a reload would."""
        try:
            return self.read_routes()
        except ReloadRefused as exc:
            RELOADS.labels("refused").inc()
            log.error("reload refused, the running routes stay: %s", exc.message)
            raise

    def read_routes(self) -> RoutesFile:
        """The routes file as it is now; ReloadRefused (INVALID_ARGUMENT) with the start-up message if it is wrong."""
        if self.routes_path is None:
            raise ReloadRefused(
                grpc.StatusCode.FAILED_PRECONDITION, "this gateway was given its routes directly: no file to read"
            )
        try:
            return load_routes(self.routes_path)
        except ConfigError as exc:
            raise ReloadRefused(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None

    async def _reload(self) -> ReloadOutcome:
        config = self.read_routes()
        loaded = list(await self.prepare(config)) if self.prepare is not None else []
        loaded += await self._ensure_models(config)
        try:
            table = await build_routes(config, self.backend, data_cache=self.data_cache)
        except ConfigError as exc:
            raise ReloadRefused(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        except GatewayError as exc:
            raise ReloadRefused(grpc.StatusCode.UNAVAILABLE, exc.message) from None
        old = self.table
        old_routes = {r.name: r for r in old}
        new_routes = {r.name: r for r in table}
        changed = tuple(
            name
            for name, route in new_routes.items()
            if name in old_routes
            and (route.fingerprint, route.versions) != (old_routes[name].fingerprint, old_routes[name].versions)
        )
        # The swap: no await between these two, so a request sees the old table or the new one, whole.
        self.plane.routes = table
        self.table, self.config = table, config
        self.on_routes(table)
        await self.health.set_routes(table)
        return ReloadOutcome(
            routes=tuple(sorted(new_routes)),
            added=tuple(sorted(set(new_routes) - set(old_routes))),
            removed=tuple(sorted(set(old_routes) - set(new_routes))),
            changed=tuple(sorted(changed)),
            loaded_models=tuple(sorted(set(loaded))),
            model_versions=_versions(table),
        )

    async def _ensure_models(self, config: RoutesFile) -> list[str]:
        """Loads into Triton the models of ``config`` that no endpoint has ready; the models loaded."""
        models = sorted({m for r in config.routes for m in r.models()})
        watched = sorted(set(models) | set(self.table.models()))  # the running routes' readiness stays known
        await self.backend.refresh(watched, timeout_s=min(2.0, self.ready_timeout_s))
        missing = [m for m in models if not self.backend.serving([m])]
        loaded = []
        for model in missing:
            where = next(f"routes[{r.name}]{model_field(r, model)}" for r in config.routes if model in r.models())
            failures = []
            for endpoint in list(self.backend.endpoints):
                try:
                    await TritonRepository(endpoint).load(model)
                except GatewayError as exc:
                    failures.append(exc.message)
            if failures and len(failures) == len(self.backend.endpoints):
                raise ReloadRefused(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"{where}: model {model!r} is not ready in Triton and could not be loaded: {failures[0]}",
                )
            loaded.append(model)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ready_timeout_s
        while models and not self.backend.serving(models):
            if loop.time() >= deadline:
                pending = ", ".join(m for m in models if not self.backend.serving([m]))
                raise ReloadRefused(
                    grpc.StatusCode.UNAVAILABLE,
                    f"models not ready in Triton after {self.ready_timeout_s:g} s: {pending}",
                )
            await asyncio.sleep(0.25)
            await self.backend.refresh(watched, timeout_s=min(2.0, self.ready_timeout_s))
        return loaded
