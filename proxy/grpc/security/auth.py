"""The authentication interceptor: API key per call, route authorisation per request message."""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc
import grpc.aio
from google.protobuf.message import Message
from prometheus_client import Counter

from switchyard.proxy.client_text import shown
from switchyard.proxy.grpc.handlers import GATEWAY_SERVICE, JOBS_SERVICE, OIP, OIP_SERVICE
from switchyard.proxy.grpc.security.keys import ApiKey, KeyStore, _credential

log = logging.getLogger(__name__)

DEFAULT_PUBLIC_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)


# Method -> the request field that names the route the call uses.
ROUTE_FIELDS: dict[str, str] = {
    f"/{GATEWAY_SERVICE}/Infer": "route",
    f"/{GATEWAY_SERVICE}/InferStream": "route",
    f"/{GATEWAY_SERVICE}/InferProgressive": "route",
    f"/{GATEWAY_SERVICE}/GetRoute": "name",
    f"/{JOBS_SERVICE}/SubmitJob": "request.route",
    # The Open Inference Protocol front: a route is a model.
    f"/{OIP_SERVICE}/ModelInfer": "model_name",
    f"/{OIP_SERVICE}/ModelStreamInfer": "model_name",
    f"/{OIP_SERVICE}/ModelReady": "name",
    f"/{OIP_SERVICE}/ModelMetadata": "name",
    f"/{OIP_SERVICE}/ModelConfig": "name",
}
# Methods that use no route and are open to every valid key (the Jobs service
# lets a key reach only its own jobs; the OIP front's other methods are server
# liveness, readiness and metadata, or answer UNIMPLEMENTED).
LIST_ROUTES = f"/{GATEWAY_SERVICE}/ListRoutes"
ROUTELESS_METHODS = frozenset(
    {
        LIST_ROUTES,
        *(f"/{JOBS_SERVICE}/{m}" for m in ("GetJob", "WatchJob", "CancelJob", "ListJobs")),
        *(f"/{OIP_SERVICE}/{m.name}" for m in OIP.methods if f"/{OIP_SERVICE}/{m.name}" not in ROUTE_FIELDS),
    }
)

AUTH_REFUSED = Counter(
    "switchyard_auth_refused",
    "Calls refused by authentication or authorisation, by gRPC status code.",
    ["code"],
)

MISSING_CREDENTIALS = (
    "missing credentials: send an API key as 'authorization: Bearer <key>' or 'x-api-key: <key>' metadata"
)
INVALID_CREDENTIALS = "invalid API key"


def _service(method: str) -> str:
    return method.lstrip("/").partition("/")[0]


Behaviour = Callable[..., Any]


async def _finish(result: Any) -> AsyncIterator[Any]:
    """Yields a handler's messages, whether it is an async generator or a coroutine using ``context.write``."""
    if inspect.isasyncgen(result):
        async with contextlib.aclosing(result):
            async for message in result:
                yield message
    elif inspect.isawaitable(result):
        await result
    elif result is not None:
        for message in result:
            yield message


async def _call(behaviour: Behaviour, *args: Any) -> Any:
    result = behaviour(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates every call of a non-public service by API key and checks each request's route."""

    def __init__(self, keys: KeyStore, public_services: Iterable[str] = DEFAULT_PUBLIC_SERVICES) -> None:
        self._keys = keys
        self._public = frozenset(public_services)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method: str = handler_call_details.method
        handler = await continuation(handler_call_details)
        if handler is None or _service(method) in self._public:
            return handler
        presented = _credential(handler_call_details.invocation_metadata)
        if presented is None:
            log.info("refused %s: no API key", method)
            return _refusal(handler, grpc.StatusCode.UNAUTHENTICATED, MISSING_CREDENTIALS)
        key = self._keys.lookup(presented)
        if key is None:
            log.info("refused %s: unknown API key", method)
            return _refusal(handler, grpc.StatusCode.UNAUTHENTICATED, INVALID_CREDENTIALS)
        log.debug("call %s with API key %r", method, key.name)
        if key.all_routes and method != LIST_ROUTES:
            return handler
        return _authorised(handler, method, key)


def _refusal(
    handler: grpc.RpcMethodHandler[Any, Any], code: grpc.StatusCode, message: str
) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same kind that fails at once, without reading the request."""
    AUTH_REFUSED.labels(code.name).inc()

    async def refuse(_request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(code, message)

    return _handler_like(handler, refuse, request_deserializer=None)


def _handler_like(
    handler: grpc.RpcMethodHandler[Any, Any], behaviour: Behaviour, *, request_deserializer: Any
) -> grpc.RpcMethodHandler[Any, Any]:
    serializer = handler.response_serializer
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(behaviour, request_deserializer, serializer)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(behaviour, request_deserializer, serializer)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(behaviour, request_deserializer, serializer)
    return grpc.unary_unary_rpc_method_handler(behaviour, request_deserializer, serializer)


def _route_of(method: str, request: Message) -> str | None:
    """The route a request uses (None: the message names none)."""
    name = ROUTE_FIELDS.get(method)
    if name is None and "route" in request.DESCRIPTOR.fields_by_name:
        name = "route"
    if name is None:
        return None
    value: Any = request
    for part in name.split("."):  # "request.route": the route of a nested InferRequest
        value = getattr(value, part)
    return str(value)


async def _check(method: str, key: ApiKey, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    if not isinstance(request, Message):
        return  # bytes that did not parse: the handler refuses them (INVALID_ARGUMENT); they reach no route
    route = _route_of(method, request)
    if route is None:
        if method in ROUTELESS_METHODS or key.all_routes:
            return
        AUTH_REFUSED.labels(grpc.StatusCode.PERMISSION_DENIED.name).inc()
        log.info("refused %s for API key %r: the method needs a key allowed every route", method, key.name)
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"API key {key.name!r} may not call {method}")
        return
    if not key.allows(route):
        AUTH_REFUSED.labels(grpc.StatusCode.PERMISSION_DENIED.name).inc()
        log.info("refused %s for API key %r on route %r", method, key.name, route)
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"API key {key.name!r} may not use route {shown(route)}")


def _authorised(handler: grpc.RpcMethodHandler[Any, Any], method: str, key: ApiKey) -> grpc.RpcMethodHandler[Any, Any]:
    """The handler with the route check before each request message (and ListRoutes filtered)."""
    deserializer = handler.request_deserializer
    if handler.request_streaming:
        inner: Behaviour | None = handler.stream_stream if handler.response_streaming else handler.stream_unary
        assert inner is not None

        def checked(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            async def gen() -> AsyncIterator[Any]:
                async for request in requests:
                    await _check(method, key, request, context)
                    yield request

            return gen()

        if handler.response_streaming:

            async def stream_stream(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                async for message in _finish(inner(checked(requests, context), context)):
                    yield message

            return _handler_like(handler, stream_stream, request_deserializer=deserializer)

        async def stream_unary(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            return await _call(inner, checked(requests, context), context)

        return _handler_like(handler, stream_unary, request_deserializer=deserializer)

    if handler.response_streaming:
        unary_stream_inner: Behaviour | None = handler.unary_stream
        assert unary_stream_inner is not None

        async def unary_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await _check(method, key, request, context)
            async for message in _finish(unary_stream_inner(request, context)):
                yield message

        return _handler_like(handler, unary_stream, request_deserializer=deserializer)

    unary_inner: Behaviour | None = handler.unary_unary
    assert unary_inner is not None

    async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await _check(method, key, request, context)
        response = await _call(unary_inner, request, context)
        if method == LIST_ROUTES and response is not None and not key.all_routes:
            kept = [route for route in response.routes if key.allows(route.name)]
            del response.routes[:]
            response.routes.extend(kept)
        return response

    return _handler_like(handler, unary_unary, request_deserializer=deserializer)
