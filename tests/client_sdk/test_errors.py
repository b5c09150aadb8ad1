from __future__ import annotations

import pickle

import grpc
import grpc.aio
import pytest

from switchyard.client import errors
from switchyard.v1 import gateway_pb2 as pb

# Every status a call can fail with, and the class the SDK raises for it.
TABLE: list[tuple[grpc.StatusCode, type[errors.SwitchyardError]]] = [
    (grpc.StatusCode.CANCELLED, errors.Cancelled),
    (grpc.StatusCode.UNKNOWN, errors.Unknown),
    (grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidArgument),
    (grpc.StatusCode.DEADLINE_EXCEEDED, errors.DeadlineExceeded),
    (grpc.StatusCode.NOT_FOUND, errors.NotFound),
    (grpc.StatusCode.ALREADY_EXISTS, errors.AlreadyExists),
    (grpc.StatusCode.PERMISSION_DENIED, errors.PermissionDenied),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, errors.ResourceExhausted),
    (grpc.StatusCode.FAILED_PRECONDITION, errors.FailedPrecondition),
    (grpc.StatusCode.ABORTED, errors.Aborted),
    (grpc.StatusCode.OUT_OF_RANGE, errors.OutOfRange),
    (grpc.StatusCode.UNIMPLEMENTED, errors.Unimplemented),
    (grpc.StatusCode.INTERNAL, errors.Internal),
    (grpc.StatusCode.UNAVAILABLE, errors.Unavailable),
    (grpc.StatusCode.DATA_LOSS, errors.DataLoss),
    (grpc.StatusCode.UNAUTHENTICATED, errors.Unauthenticated),
]


class SyncRpcError(grpc.RpcError):
    """Shaped like the blocking client's errors: a grpc.RpcError with code() and details()."""

    def __init__(self, code: grpc.StatusCode, details: str | None) -> None:
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str | None:
        return self._details


def test_table_covers_every_failure_code() -> None:
    assert {code for code, _ in TABLE} == set(grpc.StatusCode) - {grpc.StatusCode.OK}
    assert len({cls for _, cls in TABLE}) == len(TABLE)


@pytest.mark.parametrize(("code", "cls"), TABLE, ids=[code.name for code, _ in TABLE])
def test_aio_rpc_error_maps_to_its_class(code: grpc.StatusCode, cls: type[errors.SwitchyardError]) -> None:
    rpc_error = grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="why it failed")
    error = errors.error_from(rpc_error, request_id="req-1")
    assert type(error) is cls
    assert error.code is code
    assert error.message == "why it failed"
    assert error.request_id == "req-1"
    assert isinstance(error, errors.SwitchyardError)


@pytest.mark.parametrize(("code", "cls"), TABLE, ids=[code.name for code, _ in TABLE])
def test_sync_rpc_error_maps_to_its_class(code: grpc.StatusCode, cls: type[errors.SwitchyardError]) -> None:
    error = errors.error_from(SyncRpcError(code, "why"))
    assert type(error) is cls
    assert (error.code, error.message, error.request_id) == (code, "why", None)


@pytest.mark.parametrize(("code", "cls"), TABLE, ids=[code.name for code, _ in TABLE])
def test_stream_status_maps_to_its_class(code: grpc.StatusCode, cls: type[errors.SwitchyardError]) -> None:
    status = pb.Status(code=code.value[0], message="inputs[0]: bad")
    error = errors.error_from(status, request_id="r7")
    assert type(error) is cls
    assert (error.code, error.message, error.request_id) == (code, "inputs[0]: bad", "r7")


@pytest.mark.parametrize("number", [0, 17, 99, -1])
def test_status_numbers_without_a_failure_code_map_to_unknown(number: int) -> None:
    error = errors.error_from(pb.Status(code=number, message="odd"), request_id="r")
    assert type(error) is errors.Unknown
    assert error.message == "odd"


def test_bare_rpc_error_and_missing_details_map_to_unknown_and_empty_message() -> None:
    assert type(errors.error_from(grpc.RpcError())) is errors.Unknown
    assert errors.error_from(SyncRpcError(grpc.StatusCode.INTERNAL, None)).message == ""


def test_str_names_code_message_and_request_id() -> None:
    error = errors.InvalidArgument("inputs[x]: bad shape", request_id="abc")
    assert str(error) == "INVALID_ARGUMENT: inputs[x]: bad shape (request_id=abc)"
    assert str(errors.NotFound("route 'r' not found")) == "NOT_FOUND: route 'r' not found"


@pytest.mark.parametrize(("code", "cls"), TABLE, ids=[code.name for code, _ in TABLE])
def test_errors_survive_pickling(code: grpc.StatusCode, cls: type[errors.SwitchyardError]) -> None:
    error = cls("message", request_id="rid")
    restored = pickle.loads(pickle.dumps(error))
    assert type(restored) is cls
    assert (restored.code, restored.message, restored.request_id) == (code, "message", "rid")
