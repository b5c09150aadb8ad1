"""The SDK's exceptions: one class per gRPC status, and the one mapping to them.

Every failed call raises a :class:`SwitchyardError` subclass chosen by status
code (``InvalidArgument``, ``NotFound``, ``Unavailable``, ...), carrying the
code, the server's message unchanged and the request id when the SDK knows it.
:func:`error_from` is the only place that turns a ``grpc.RpcError`` (sync or
aio) or a contract ``Status`` (a per-request failure inside ``InferStream``)
into one. Client-side misuse (a bad argument to an SDK method) raises the usual
``ValueError``/``TypeError`` instead; this module does not cover those.
"""

from __future__ import annotations

from typing import Any

import grpc

from switchyard.v1 import gateway_pb2 as pb


class SwitchyardError(Exception):
    """A call, or one request inside a stream, failed with a gRPC status.

    ``code`` is the ``grpc.StatusCode``, ``message`` the server's message as
    sent, ``request_id`` the id of the failed request when known (always for
    ``infer`` and stream items, ``None`` for route look-ups).
    """

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, *, request_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id

    def __str__(self) -> str:
        text = f"{self.code.name}: {self.message}"
        if self.request_id:
            text += f" (request_id={self.request_id})"
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        # The default reduction would drop the keyword-only request_id; batch
        # engines (Spark, Ray) pickle exceptions across processes.
        return (type(self), (self.message,), {"request_id": self.request_id})


class Cancelled(SwitchyardError):
    """The call was cancelled (by the caller or the server)."""

    code = grpc.StatusCode.CANCELLED


class Unknown(SwitchyardError):
    """The server sent an unknown status, or none that the SDK could read."""

    code = grpc.StatusCode.UNKNOWN


class InvalidArgument(SwitchyardError):
    """Bad input; the message names the field and the reason."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(SwitchyardError):
    """The call's deadline passed before an answer arrived."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(SwitchyardError):
    """Unknown route or model."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(SwitchyardError):
    """The thing to create exists already."""

    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(SwitchyardError):
    """The caller may not do this."""

    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(SwitchyardError):
    """The gateway shed load (or a message was too large); retry later."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(SwitchyardError):
    """The system is not in a state that allows the call."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(SwitchyardError):
    """The call was aborted, typically by a concurrency conflict."""

    code = grpc.StatusCode.ABORTED


class OutOfRange(SwitchyardError):
    """A value was past the valid range."""

    code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(SwitchyardError):
    """The gateway does not implement this method (an older server)."""

    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(SwitchyardError):
    """Unexpected server failure; the message carries a request id for its logs."""

    code = grpc.StatusCode.INTERNAL


class Unavailable(SwitchyardError):
    """The gateway or its backend is down; safe to retry."""

    code = grpc.StatusCode.UNAVAILABLE


class DataLoss(SwitchyardError):
    """Unrecoverable data loss or corruption."""

    code = grpc.StatusCode.DATA_LOSS


class Unauthenticated(SwitchyardError):
    """The call carried no valid credentials."""

    code = grpc.StatusCode.UNAUTHENTICATED


ERROR_CLASSES: dict[grpc.StatusCode, type[SwitchyardError]] = {
    cls.code: cls
    for cls in (
        Cancelled,
        Unknown,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        Unimplemented,
        Internal,
        Unavailable,
        DataLoss,
        Unauthenticated,
    )
}

_CODE_BY_NUMBER: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def status_code(number: int) -> grpc.StatusCode:
    """The ``grpc.StatusCode`` for a status number (``UNKNOWN`` for numbers gRPC does not define)."""
    return _CODE_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


def error_for_code(code: grpc.StatusCode, message: str, *, request_id: str | None = None) -> SwitchyardError:
    """The exception for ``code``; ``OK`` (a failure reported with a success code) counts as ``UNKNOWN``."""
    return ERROR_CLASSES.get(code, Unknown)(message, request_id=request_id)


def rpc_code(error: grpc.RpcError) -> grpc.StatusCode:
    """The status code of a failed RPC (sync or aio); ``UNKNOWN`` for a bare ``grpc.RpcError``."""
    # grpc.aio.AioRpcError and the sync client's errors are also grpc.Call;
    # a bare grpc.RpcError carries no status at all.
    code_of = getattr(error, "code", None)
    code = code_of() if callable(code_of) else None
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


def error_from(source: grpc.RpcError | pb.Status, *, request_id: str | None = None) -> SwitchyardError:
    """Maps a failed RPC (sync or aio) or a stream's per-request ``Status`` to its exception."""
    if isinstance(source, pb.Status):
        return error_for_code(status_code(source.code), source.message, request_id=request_id)
    details_of = getattr(source, "details", None)
    if callable(details_of):
        message = details_of() or ""
    else:
        message = str(source)
    return error_for_code(rpc_code(source), message, request_id=request_id)
