"""Domain errors of the gateway and their gRPC status codes.

Every error a client can see is one of these classes: each carries the gRPC
status code and the message sent to the client. Handlers raise them; one
place (``proxy.grpc.gateway``) turns them into statuses. Errors from Triton are
translated here too (:func:`from_backend`), so the rest of the proxy never
looks at backend status codes. Anything else is a bug and becomes
``INTERNAL`` with a fixed message and the request id (see ``internal_error``).
"""

from __future__ import annotations

from typing import Any, NoReturn

import grpc
import grpc.aio

from switchyard.proxy.client_text import bounded, shown
from switchyard.v1 import gateway_pb2 as pb


class GatewayError(Exception):
    """An error with a gRPC status and a message meant for the client.

    The message is cut to ``client_text.MAX_MESSAGE`` characters: whatever
    client text it quotes, it fits in a status (and a log line).
    """

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        message = bounded(message)
        super().__init__(message)
        self.message = message


class InvalidInput(GatewayError):
    """The request is malformed; ``field`` says which part and ``reason`` why."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class RouteNotFound(GatewayError):
    code = grpc.StatusCode.NOT_FOUND

    def __init__(self, name: str) -> None:
        super().__init__(f"route: no route named {shown(name)}")
        self.name = name


class ModelNotFound(GatewayError):
    code = grpc.StatusCode.NOT_FOUND


class BackendUnavailable(GatewayError):
    """The backend cannot be reached or is not ready; retrying may succeed."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(GatewayError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Overloaded(GatewayError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unsupported(GatewayError):
    """The request asks for something this server does not do (e.g. shared memory through the OIP front)."""

    code = grpc.StatusCode.UNIMPLEMENTED


class BackendError(GatewayError):
    """A backend failure passed on with the backend's own status code."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class ConfigError(Exception):
    """The route configuration is wrong; raised at start-up, never at request time."""


def status_of(error: GatewayError) -> pb.Status:
    """``error`` as the contract's ``Status`` message (a status carried inside a message)."""
    return pb.Status(code=error.code.value[0], message=error.message)


async def abort_with(context: grpc.aio.ServicerContext[Any, Any], error: GatewayError) -> NoReturn:
    """Ends the call with ``error``'s status and message."""
    await context.abort(error.code, error.message)
    raise AssertionError("unreachable: ServicerContext.abort raises")


def internal_error(request_id: str) -> GatewayError:
    """The error a client sees for a bug: no details, only the id to find the log."""
    return GatewayError(f"internal error (request id {request_id})")


# Backend status -> status the client sees. Codes that describe the client's
# own request pass through; codes that describe the backend's state become
# UNAVAILABLE so clients know a retry may help.
_BACKEND_CODES: dict[grpc.StatusCode, grpc.StatusCode] = {
    grpc.StatusCode.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED: grpc.StatusCode.CANCELLED,
    grpc.StatusCode.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE: grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNIMPLEMENTED: grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.ABORTED: grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.INTERNAL: grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN: grpc.StatusCode.INTERNAL,
    grpc.StatusCode.DATA_LOSS: grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNAUTHENTICATED: grpc.StatusCode.INTERNAL,
    grpc.StatusCode.PERMISSION_DENIED: grpc.StatusCode.INTERNAL,
}


def parse_status_name(name: str) -> grpc.StatusCode:
    """``"StatusCode.UNAVAILABLE"`` or ``"UNAVAILABLE"`` -> the enum (tritonclient's string form)."""
    key = name.rsplit(".", 1)[-1].strip().upper()
    try:
        return grpc.StatusCode[key]
    except KeyError:
        return grpc.StatusCode.UNKNOWN


def from_backend(code: grpc.StatusCode, details: str, model: str) -> GatewayError:
    """Translates a failed backend call on ``model`` into the client's error, keeping Triton's message."""
    mapped = _BACKEND_CODES.get(code, grpc.StatusCode.INTERNAL)
    if mapped is grpc.StatusCode.UNAVAILABLE:
        return BackendUnavailable(f"backend unavailable for model {model!r}: {details}")
    if mapped is grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"deadline exceeded waiting for model {model!r}")
    if mapped is grpc.StatusCode.NOT_FOUND:
        return ModelNotFound(f"model {model!r}: {details}")
    return BackendError(mapped, f"model {model!r}: {details}")
