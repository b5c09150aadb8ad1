"""Triton's model repository API on one endpoint: which models it has and in what state, loading, unloading.

A Triton started with ``--model-control-mode=explicit`` (the local one,
``server.local_triton``) loads and unloads models when asked; a load of a
model already loaded reads its folder again (new versions, a new config)
while the loaded one keeps serving until the new one is ready. A Triton in
another mode refuses loads: a model it does not serve already cannot be
served by asking.

Used rarely (start-up, reloads, the ``models`` commands), so each call opens a
channel of its own and closes it; inference never goes through here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from switchyard.proxy import errors
from switchyard.v1.channel import channel_options

LOAD_TIMEOUT_S = 300.0
"""How long one load may take: Triton answers once the model is ready or has failed (Python backends start
processes; large models take a while)."""


@dataclass(frozen=True)
class ModelState:
    """One entry of Triton's repository index: a model, or one version of it, and its state."""

    name: str
    version: str
    """Empty for a model Triton has never loaded."""
    state: str
    """READY, LOADING, UNLOADING, UNAVAILABLE, or empty (never loaded)."""
    reason: str = ""


class TritonRepository:
    """The repository API of the Triton at ``url`` (``host:port`` of its gRPC endpoint)."""

    def __init__(self, url: str) -> None:
        self.url = url

    @asynccontextmanager
    async def _stub(self) -> AsyncIterator[service_pb2_grpc.GRPCInferenceServiceStub]:
        async with grpc.aio.insecure_channel(self.url, options=channel_options()) as channel:
            yield service_pb2_grpc.GRPCInferenceServiceStub(channel)

    async def index(self, *, timeout_s: float = 10.0) -> list[ModelState]:
        """Every model of the repository, one entry per loaded version (one without a version if none is)."""
        async with self._stub() as stub:
            try:
                reply = await stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(), timeout=timeout_s)
            except grpc.aio.AioRpcError as exc:
                raise errors.BackendUnavailable(f"Triton at {self.url}: {exc.details() or exc.code().name}") from None
        return [ModelState(m.name, m.version, m.state, m.reason) for m in reply.models]

    async def load(self, name: str, *, timeout_s: float = LOAD_TIMEOUT_S) -> None:
        """Loads (or reads again) model ``name``; returns once it is ready. BackendError quotes Triton."""
        await self._control("load", name, timeout_s)

    async def unload(self, name: str, *, timeout_s: float = 60.0) -> None:
        """Unloads model ``name`` (calls in flight finish first)."""
        await self._control("unload", name, timeout_s)

    async def _control(self, action: str, name: str, timeout_s: float) -> None:
        async with self._stub() as stub:
            try:
                if action == "load":
                    request = service_pb2.RepositoryModelLoadRequest(model_name=name)
                    await stub.RepositoryModelLoad(request, timeout=timeout_s)
                else:
                    unload = service_pb2.RepositoryModelUnloadRequest(model_name=name)
                    await stub.RepositoryModelUnload(unload, timeout=timeout_s)
            except grpc.aio.AioRpcError as exc:
                details = exc.details() or exc.code().name
                if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    message = f"Triton at {self.url}: cannot {action} {name!r}: {details}"
                    raise errors.BackendUnavailable(message) from None
                raise errors.BackendError(
                    grpc.StatusCode.FAILED_PRECONDITION, f"Triton at {self.url} could not {action} {name!r}: {details}"
                ) from None
