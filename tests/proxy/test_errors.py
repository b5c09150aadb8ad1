"""Every domain error and every backend status maps to the documented gRPC status."""

from __future__ import annotations

import grpc
import pytest

from switchyard.proxy import errors

S = grpc.StatusCode


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (
            errors.InvalidInput("inputs[image].shape[1]", "expected 64, got 63"),
            S.INVALID_ARGUMENT,
            "inputs[image].shape[1]: expected 64, got 63",
        ),
        (errors.RouteNotFound("nope"), S.NOT_FOUND, "route: no route named 'nope'"),
        (errors.ModelNotFound("model 'm' is gone"), S.NOT_FOUND, "model 'm' is gone"),
        (errors.BackendUnavailable("down"), S.UNAVAILABLE, "down"),
        (errors.DeadlineExceeded("late"), S.DEADLINE_EXCEEDED, "late"),
        (errors.Overloaded("busy"), S.RESOURCE_EXHAUSTED, "busy"),
        (errors.Unsupported("no shared memory here"), S.UNIMPLEMENTED, "no shared memory here"),
        (errors.BackendError(S.FAILED_PRECONDITION, "x"), S.FAILED_PRECONDITION, "x"),
        (errors.internal_error("abc"), S.INTERNAL, "internal error (request id abc)"),
    ],
)
def test_domain_errors_carry_status_and_message(
    error: errors.GatewayError, code: grpc.StatusCode, message: str
) -> None:
    assert error.code is code
    assert error.message == message


@pytest.mark.parametrize(
    ("backend", "client"),
    [
        (S.INVALID_ARGUMENT, S.INVALID_ARGUMENT),
        (S.NOT_FOUND, S.NOT_FOUND),
        (S.DEADLINE_EXCEEDED, S.DEADLINE_EXCEEDED),
        (S.CANCELLED, S.CANCELLED),
        (S.RESOURCE_EXHAUSTED, S.RESOURCE_EXHAUSTED),
        (S.UNAVAILABLE, S.UNAVAILABLE),
        (S.FAILED_PRECONDITION, S.FAILED_PRECONDITION),
        (S.OUT_OF_RANGE, S.INVALID_ARGUMENT),
        (S.UNIMPLEMENTED, S.UNIMPLEMENTED),
        (S.ABORTED, S.UNAVAILABLE),
        (S.INTERNAL, S.INTERNAL),
        (S.UNKNOWN, S.INTERNAL),
        (S.DATA_LOSS, S.INTERNAL),
        (S.UNAUTHENTICATED, S.INTERNAL),
        (S.PERMISSION_DENIED, S.INTERNAL),
        (S.ALREADY_EXISTS, S.INTERNAL),
    ],
)
def test_backend_status_mapping(backend: grpc.StatusCode, client: grpc.StatusCode) -> None:
    error = errors.from_backend(backend, "triton says why", "digits_logreg")
    assert error.code is client
    assert "digits_logreg" in error.message
    if client not in (S.DEADLINE_EXCEEDED,):
        assert "triton says why" in error.message


@pytest.mark.parametrize(
    ("text", "code"),
    [("StatusCode.UNAVAILABLE", S.UNAVAILABLE), ("INVALID_ARGUMENT", S.INVALID_ARGUMENT), ("bogus", S.UNKNOWN)],
)
def test_parse_status_name(text: str, code: grpc.StatusCode) -> None:
    assert errors.parse_status_name(text) is code


def test_status_of_carries_code_and_message() -> None:
    status = errors.status_of(errors.InvalidInput("inputs[x]", "bad"))
    assert (status.code, status.message) == (S.INVALID_ARGUMENT.value[0], "inputs[x]: bad")


async def test_abort_with_ends_the_call_with_the_errors_status() -> None:
    class Context:
        async def abort(self, code: grpc.StatusCode, message: str) -> None:
            raise RuntimeError(f"{code.name}: {message}")  # as grpc's abort does, it never returns

    with pytest.raises(RuntimeError, match="^NOT_FOUND: route: no route named 'x'$"):
        await errors.abort_with(Context(), errors.RouteNotFound("x"))  # type: ignore[arg-type]
