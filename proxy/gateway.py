"""Assembles one gateway process: backend client, routes, gRPC server.

``Gateway.start`` connects to Triton, waits for the routes' models, builds
and type-checks every route (failing before the port opens if any is wrong),
then serves ``switchyard.v1.Gateway``, ``grpc.health.v1.Health`` and server
reflection on one port, beside the Open Inference Protocol front
(``inference.GRPCInferenceService``, ``proxy.grpc.oip``) (TLS or mutual TLS and API keys when configured, see
``proxy.grpc.security``), plus Prometheus metrics on another. Unless jobs are off,
``switchyard.v1.Jobs`` is served on the same port, with its job store and this
process's job workers (``proxy.jobs``). ``switchyard.v1.Admin`` (unless
``admin_service`` is off) and ``Gateway.reload`` reload the routes file and the
models without a restart (``proxy.reloading``). ``Gateway.stop``
reports NOT_SERVING, stops taking calls, lets in-flight ones finish within
the grace period, then closes the backend channel.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from switchyard.proxy import metrics, tracing
from switchyard.proxy.backend.cuda_shared_memory import CudaSharedMemoryPool
from switchyard.proxy.backend.pool import TritonPool
from switchyard.proxy.backend.shared_memory import SharedMemoryPool, SlotPool
from switchyard.proxy.cache import Cache, MemoryCache, RedisCache
from switchyard.proxy.grpc.admin import ADMIN, ADMIN_SERVICE, AdminService
from switchyard.proxy.grpc.gateway import GatewayService
from switchyard.proxy.grpc.handlers import GATEWAY, GATEWAY_SERVICE, JOBS, JOBS_SERVICE, OIP, OIP_SERVICE, add_service
from switchyard.proxy.grpc.health import HealthMonitor
from switchyard.proxy.grpc.oip import OipService
from switchyard.proxy.grpc.security import Security, load_security
from switchyard.proxy.jobs import JobQueue
from switchyard.proxy.lifecycle.dataplane import DataPlane
from switchyard.proxy.metrics import start_metrics_server
from switchyard.proxy.ops.array_module import array_module
from switchyard.proxy.reloading import Prepare, Reloader, ReloadOutcome
from switchyard.proxy.routes.schema import RoutesFile
from switchyard.proxy.routes.table import RouteTable, build_routes
from switchyard.proxy.settings import GatewaySettings
from switchyard.v1.channel import server_options

log = logging.getLogger(__name__)

P = TypeVar("P", bound=SlotPool)


class PortInUse(RuntimeError):
    pass


def _shm_room(needed: int, folder: str = "/dev/shm") -> bool:
    """True when ``folder`` (the tmpfs behind POSIX shared memory) can hold ``needed`` bytes.

    A container's /dev/shm is often small (64 MiB by default in Docker): a
    region larger than what is free would be created sparse and fault with
    SIGBUS on first write, so shared memory is left off with a warning instead.
    """
    try:
        stats = os.statvfs(folder)
    except OSError as exc:
        log.warning("Triton shared memory off: cannot inspect %s (%s)", folder, exc.strerror)
        return False
    free = stats.f_bavail * stats.f_frsize
    if free < needed:
        log.warning(
            "Triton shared memory off: %s has %d MiB free, the slots need %d MiB "
            "(lower triton_shm_slots / triton_shm_slot_bytes, or enlarge %s)",
            folder,
            free >> 20,
            needed >> 20,
            folder,
        )
        return False
    return True


class Gateway:
    """One gateway server. Create and start it inside the running event loop."""

    def __init__(
        self,
        settings: GatewaySettings,
        routes: RoutesFile,
        *,
        reuse_port: bool = False,
        routes_path: Path | None = None,
        prepare_reload: Prepare | None = None,
    ) -> None:
        """``reuse_port``: bind the port with SO_REUSEPORT, beside the other workers of ``serve --workers``.

        ``routes_path``: the file ``routes`` came from, read again by a reload (default: ``routes_file`` of the
        settings); ``prepare_reload``: the process's own step of a reload (``proxy.reloading``).
        """
        self.settings = settings
        self._routes_path = routes_path or settings.routes_file
        self._prepare_reload = prepare_reload
        self.reloader: Reloader | None = None
        self._security: Security | None = None
        self.reload_request: Callable[[], Awaitable[ReloadOutcome]] | None = None
        """What Admin/Reload runs (None: :meth:`reload`); a worker of ``serve --workers`` asks its supervisor."""
        self._reuse_port = reuse_port
        self._routes_config = routes
        self.port: int | None = None
        self.metrics_port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._backend: TritonPool | None = None
        self._health: HealthMonitor | None = None
        self.routes: RouteTable | None = None
        self._cache: Cache | None = None
        self._data_cache: Cache | None = None
        self.jobs: JobQueue | None = None
        self._plane: DataPlane | None = None
        self._flusher: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Starts serving; returns the bound gRPC port."""
        s = self.settings
        security = load_security(s)  # TLS files and API keys: a bad one fails here, before anything starts
        self._security = security
        if tracing.tracer is None:
            tracing.configure_from_env()  # off unless OTEL_* asks for an exporter
        self._backend = TritonPool(
            s.triton_url,
            max_message_bytes=s.max_message_bytes,
            shared_memory=self._shared_memory if s.triton_shared_memory == "system" else None,
            cuda_shared_memory=self._cuda_shared_memory if s.triton_shared_memory == "system" else None,
            dns_refresh_s=s.triton_dns_refresh_s,
        )
        await self._backend.start()
        models = sorted({m for r in self._routes_config.routes for m in r.models()})
        log.info("waiting for models in Triton at %s: %s", s.triton_url, ", ".join(models))
        await self._backend.wait_models_ready(models, timeout_s=s.backend_ready_timeout_s)
        self._data_cache = MemoryCache(s.data_cache_max_bytes, s.data_cache_ttl_s, name="data")
        if s.cache_backend == "redis":
            self._cache = RedisCache(s.redis_url, op_timeout_s=s.cache_op_timeout_s, name="redis")
        else:
            self._cache = MemoryCache(s.cache_max_bytes, name="memory")
        self.routes = await build_routes(self._routes_config, self._backend, data_cache=self._data_cache)
        self._health = HealthMonitor(self.routes, self._backend, interval_s=s.health_interval_s)
        security.log_warnings(r.name for r in self.routes)

        server = grpc.aio.server(
            interceptors=security.interceptors(),
            options=server_options(max_message_bytes=s.max_message_bytes, reuse_port=self._reuse_port),
            maximum_concurrent_rpcs=s.max_concurrent_rpcs,
        )
        self._plane = DataPlane(self.routes, s, cache=self._cache, on_backend_down=self._health.mark_backend_down)
        add_service(GatewayService(self._plane, stream_max_inflight=s.stream_max_inflight), server, GATEWAY)
        oip = OipService(self._plane, route_ready=self._health.is_ready, stream_max_inflight=s.stream_max_inflight)
        add_service(oip, server, OIP)
        health_pb2_grpc.add_HealthServicer_to_server(self._health.servicer, server)
        services = [
            GATEWAY_SERVICE,
            OIP_SERVICE,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ]
        self.reloader = Reloader(
            routes_path=self._routes_path,
            config=self._routes_config,
            table=self.routes,
            backend=self._backend,
            plane=self._plane,
            health=self._health,
            data_cache=self._data_cache,
            ready_timeout_s=s.backend_ready_timeout_s,
            prepare=self._prepare_reload,
            on_routes=self._on_reloaded,
        )
        if s.admin_service:
            add_service(AdminService(lambda: (self.reload_request or self.reload)()), server, ADMIN)
            services.insert(1, ADMIN_SERVICE)
        if s.jobs_backend != "off":
            health_servicer = self._health.servicer

            async def jobs_health(ok: bool) -> None:
                status = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
                await health_servicer.set(JOBS_SERVICE, status)

            self.jobs = JobQueue(s, self._plane, keys=security.keys, on_store_health=jobs_health)
            add_service(self.jobs.service, server, JOBS)
            services.insert(1, JOBS_SERVICE)
        reflection.enable_server_reflection(services, server)
        address = f"{s.host}:{s.port}"
        try:
            port = security.add_port(server, address)  # TLS only when TLS is configured
        except RuntimeError as exc:
            raise PortInUse(f"cannot listen on {address}: the port is in use or the address is not local") from exc
        if port == 0:
            raise PortInUse(f"cannot listen on {address}: the port is in use or the address is not local")
        await self._health.start()
        if metrics.MULTIPROCESS:
            self._flusher = asyncio.create_task(metrics.flush_every(), name="metrics-flush")
        if self.jobs is not None:
            await self.jobs.start()
        await server.start()
        self._server = server
        self.port = port
        if s.metrics_port is not None:
            try:
                self.metrics_port = start_metrics_server(s.metrics_host, s.metrics_port)
            except OSError as exc:
                await self.stop(grace_s=0)
                raise PortInUse(f"cannot serve metrics on {s.metrics_host}:{s.metrics_port}: {exc.strerror}") from exc
        log.info(
            "gateway serving %d routes on %s:%d (metrics %s)",
            len(list(self.routes)),
            s.host,
            port,
            f"{s.metrics_host}:{self.metrics_port}" if self.metrics_port else "off",
        )
        log.info("gateway port security: %s", security.describe())
        return port

    async def reload(self) -> ReloadOutcome:
        """Reads the routes file and the models again and swaps the routes; ReloadRefused keeps the running ones."""
        if self.reloader is None:
            raise RuntimeError("the gateway has not started")
        return await self.reloader.reload()

    def _on_reloaded(self, table: RouteTable) -> None:
        self.routes = table
        if self.reloader is not None:
            self._routes_config = self.reloader.config
        if self._security is not None:
            self._security.log_warnings(r.name for r in table)

    def _shared_memory(self, endpoint: str) -> SharedMemoryPool | None:
        """Shared-memory slots for a Triton endpoint on this host, when /dev/shm has room for them."""
        s = self.settings
        if not _shm_room(s.triton_shm_slots * s.triton_shm_slot_bytes):
            return None
        return self._slot_pool(SharedMemoryPool, endpoint)

    def _cuda_shared_memory(self, endpoint: str) -> CudaSharedMemoryPool | None:
        """CUDA shared-memory slots for a Triton endpoint on this host, when the ops run on a GPU (CuPy)."""
        return None if array_module() is np else self._slot_pool(CudaSharedMemoryPool, endpoint)

    def _slot_pool(self, kind: type[P], endpoint: str) -> P:
        s = self.settings
        return kind(
            slots=s.triton_shm_slots,
            slot_bytes=s.triton_shm_slot_bytes,
            threshold_bytes=s.triton_shm_threshold_bytes,
            quarantine_s=s.triton_shm_quarantine_s,
            label=endpoint,
        )

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    async def stop(self, grace_s: float | None = None) -> None:
        """Drains and stops; safe to call more than once."""
        grace = self.settings.grace_s if grace_s is None else grace_s
        if self._health is not None:
            await self._health.stop()
        jobs, self.jobs = self.jobs, None
        server, self._server = self._server, None
        # Running jobs and in-flight calls drain together, within the same grace period.
        await asyncio.gather(
            *([server.stop(grace)] if server is not None else []),
            *([jobs.stop(grace)] if jobs is not None else []),
        )
        if self._plane is not None:
            await self._plane.close()
            self._plane = None
        if self._backend is not None:
            await self._backend.close()
            self._backend = None
        for cache in (self._cache, self._data_cache):
            if cache is not None:
                await cache.close()
        self._cache = self._data_cache = None
        if self._flusher is not None:
            self._flusher.cancel()  # flushes once more on the way out
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
