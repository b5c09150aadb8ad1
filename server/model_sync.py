"""``serve``'s side of a reload: its own Tritons' models kept in step with the routes and the model repository.

``switchyard serve`` starts its local Tritons with explicit model control,
loading only the models its routes need. On a reload (SIGHUP, ``switchyard
reload``), before any gateway builds its new routes, :class:`ModelSync`
loads into every local Triton each model the new routes need that is new,
or whose folder changed since it was loaded (a version added by
``switchyard models add --version next``, a new ``config.pbtxt``): Triton
reads the folder again and swaps to it once ready, the loaded one serving
until then. Unchanged models are left alone (a load reloads a model even
when nothing changed). The models to load at a Triton restart follow.

With ``--workers N`` the supervisor syncs once and then has every worker
reload (``WorkerPool.reload``: what the sync found travels in a verdict file,
so a model Triton could not load refuses the reload in every worker with
Triton's message).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
from collections.abc import Iterable, Sequence
from pathlib import Path

import grpc

from switchyard.proxy.backend.repository import TritonRepository
from switchyard.proxy.errors import ConfigError, GatewayError
from switchyard.proxy.gateway import Gateway
from switchyard.proxy.reloading import ReloadRefused
from switchyard.proxy.routes.schema import RoutesFile, load_routes
from switchyard.proxy.routes.table import model_field
from switchyard.server.local_triton import LocalTriton
from switchyard.server.workers import WorkerPool

log = logging.getLogger(__name__)


def routes_models(config: RoutesFile) -> list[str]:
    """Every model the routes name, sorted."""
    return sorted({m for route in config.routes for m in route.models()})


def model_fingerprint(folder: Path) -> str:
    """What Triton would read of a model folder: every file's path, size and modification time.

    Leaves out ``__pycache__`` (the Python backend writes it when it loads the
    runner) and hidden entries (a version being written).
    """
    digest = hashlib.sha256()
    if not folder.is_dir():
        return ""
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part == "__pycache__" or part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        stat = path.stat()
        digest.update(f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()


class ModelSync:
    """Loads new and changed models into ``serve``'s local Tritons (see the module docstring)."""

    def __init__(self, repository: Path, tritons: Sequence[LocalTriton]) -> None:
        self.repository = repository
        self.tritons = list(tritons)
        self._loaded: dict[str, str] = {}

    def started(self, models: Iterable[str]) -> None:
        """The Tritons have just loaded ``models`` from the repository as it is now."""
        for model in models:
            self._loaded[model] = model_fingerprint(self.repository / model)

    async def sync(self, config: RoutesFile) -> list[str]:
        """Loads the models of ``config`` that are new or changed; returns them. ReloadRefused names the route."""
        models = routes_models(config)
        done = []
        for model in models:
            fingerprint = model_fingerprint(self.repository / model)
            if self._loaded.get(model) == fingerprint:
                continue
            route = next(r for r in config.routes if model in r.models())
            where = f"routes[{route.name}]{model_field(route, model)}"
            if not (self.repository / model / "config.pbtxt").is_file():
                raise ReloadRefused(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"{where}: no model {model!r} in the model repository {self.repository}",
                )
            for triton in self.tritons:
                try:
                    await TritonRepository(triton.grpc_url).load(model)
                except GatewayError as exc:
                    raise ReloadRefused(grpc.StatusCode.FAILED_PRECONDITION, f"{where}: {exc.message}") from None
            log.info("loaded model %s into %d local Triton(s)", model, len(self.tritons))
            self._loaded[model] = fingerprint
            done.append(model)
        for triton in self.tritons:
            # What a restarted Triton loads: these, and what the running routes use until a reload succeeds.
            triton.models = sorted(set(triton.models or []) | set(models))
        return done


class Reloads:
    """``serve``'s reloads: on SIGHUP (or a worker's request), sync the models, then reload the gateway or workers.

    Reloads run one after another; SIGHUPs that arrive during one make one more.
    """

    def __init__(self, routes_path: Path, sync: ModelSync | None) -> None:
        self.routes_path = routes_path
        self.sync = sync
        self._wanted = asyncio.Event()

    def install(self) -> None:
        """Takes SIGHUP (which would end the process) from now on; call it before anything slow starts."""
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._wanted.set)

    async def run(self, gateway: Gateway | WorkerPool) -> None:
        """Serves reload requests until cancelled."""
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            log.info("reload requested: reading %s and the model repository again", self.routes_path)
            try:
                await self.reload(gateway)
            except Exception:
                log.exception("reload failed unexpectedly; the running routes stay")

    async def reload(self, gateway: Gateway | WorkerPool) -> None:
        if isinstance(gateway, Gateway):
            with contextlib.suppress(ReloadRefused):  # logged and counted by the gateway
                await gateway.reload()
            return
        try:
            config = load_routes(self.routes_path)
            loaded = await self.sync.sync(config) if self.sync is not None else []
        except ConfigError:
            gateway.reload()  # each worker refuses it with the same message, and counts it
            return
        except ReloadRefused as exc:
            log.error("reload refused, the running routes stay: %s", exc.message)
            gateway.reload(refused=exc)
            return
        gateway.reload(loaded=loaded)
