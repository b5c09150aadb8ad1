"""The ``switchyard.v1.Admin`` gRPC service: operator calls on a running gateway.

``Reload`` runs the process's reload (``proxy.reloading``; under
``switchyard serve --workers N`` the worker asks the supervisor, which has
every worker reload) and answers what changed, or the refusal's status and
message. Who may call it is the API-key interceptor's business
(``proxy.grpc.security``): with keys configured, only keys allowed every
route, since the request names no route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from switchyard.proxy.reloading import ReloadOutcome, ReloadRefused
from switchyard.v1 import admin_pb2, admin_pb2_grpc

ADMIN: ServiceDescriptor = admin_pb2.DESCRIPTOR.services_by_name["Admin"]
ADMIN_SERVICE: str = ADMIN.full_name
"""``switchyard.v1.Admin``."""


class AdminService(admin_pb2_grpc.AdminServicer):
    def __init__(self, reload: Callable[[], Awaitable[ReloadOutcome]]) -> None:
        self._reload = reload

    async def Reload(
        self, request: admin_pb2.ReloadRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.ReloadResponse:
        try:
            outcome = await self._reload()
        except ReloadRefused as exc:
            await context.abort(exc.code, exc.message)
        return outcome.to_proto()
