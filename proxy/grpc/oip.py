"""The Open Inference Protocol front: ``inference.GRPCInferenceService`` (KServe v2, Triton) on the gateway's port.

Clients that speak Triton's or KServe's gRPC API (``tritonclient``, KServe's
clients, load tools built on the protocol) call routes as models: each route
is a model of version ``1`` whose inputs and outputs are the route's and whose
``platform`` is ``switchyard_<kind>``. ``ModelInfer`` and every request of
``ModelStreamInfer`` go through :meth:`DataPlane.infer
<switchyard.proxy.lifecycle.dataplane.DataPlane.infer>`, exactly as
``switchyard.v1.Gateway/Infer`` does, so admission, deadlines, validation,
the prediction cache, micro-batching, metrics and error codes are the same;
``oip_messages`` translates the messages and names the OIP request's fields in
error messages. A stream request's error travels in-band as Triton sends it
(``error_message``, and the request's ``id``) and the stream goes on.

Supported: ``ServerLive``, ``ServerReady``, ``ServerMetadata``, ``ModelReady``,
``ModelMetadata``, ``ModelConfig``, ``ModelInfer``, ``ModelStreamInfer``. The
rest of the service (statistics, model repository control, shared-memory
registration, trace and log settings) answers ``UNIMPLEMENTED`` saying what is
supported (``docs/oip.md``). Authorisation names the route by ``model_name``
or ``name`` (``proxy.grpc.security.auth``).
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import grpc
from tritonclient.grpc import model_config_pb2, service_pb2

from switchyard.proxy import tracing
from switchyard.proxy.client_text import shown
from switchyard.proxy.errors import GatewayError, RouteNotFound, Unsupported, abort_with, internal_error
from switchyard.proxy.grpc.gateway import TIMING_METADATA, unless_caller_gone
from switchyard.proxy.grpc.oip_messages import (
    FINAL_RESPONSE,
    ROUTE_VERSION,
    STATUS_PARAMETER,
    Translated,
    check_classes,
    check_version,
    infer_response,
    route_platform,
    translate,
)
from switchyard.proxy.grpc.streaming import pipelined
from switchyard.proxy.lifecycle.dataplane import DataPlane
from switchyard.proxy.routes.base import RouteDescription
from switchyard.proxy.tensor_spec import TensorSpec

log = logging.getLogger(__name__)

SERVER_NAME = "switchyard"
EXTENSIONS = ("classification", "model_configuration", "parameters")
"""The protocol extensions the front implements (``ServerMetadata``)."""
SUPPORTED = (
    "ServerLive",
    "ServerReady",
    "ServerMetadata",
    "ModelReady",
    "ModelMetadata",
    "ModelConfig",
    "ModelInfer",
    "ModelStreamInfer",
)
UNSUPPORTED = {
    "ModelStatistics": "statistics (the gateway's Prometheus metrics have them per route)",
    "RepositoryIndex": "model repository control (routes come from the routes file)",
    "RepositoryModelLoad": "model repository control (routes come from the routes file)",
    "RepositoryModelUnload": "model repository control (routes come from the routes file)",
    "SystemSharedMemoryStatus": "shared memory registration",
    "SystemSharedMemoryRegister": "shared memory registration",
    "SystemSharedMemoryUnregister": "shared memory registration",
    "CudaSharedMemoryStatus": "shared memory registration",
    "CudaSharedMemoryRegister": "shared memory registration",
    "CudaSharedMemoryUnregister": "shared memory registration",
    "TraceSetting": "trace settings",
    "LogSettings": "log settings",
}
"""Methods of the service that answer UNIMPLEMENTED, with what they would have done."""

_Handler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Coroutine[Any, Any, Any]]


def unsupported_message(method: str) -> str:
    return (
        f"{method} is not supported by Switchyard's Open Inference Protocol front ({UNSUPPORTED[method]}); "
        f"supported: {', '.join(SUPPORTED)} (docs/oip.md)"
    )


def _unsupported(method: str) -> _Handler:
    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await abort_with(context, Unsupported(unsupported_message(method)))

    refuse.__name__ = method
    return refuse


def _data_type(datatype: str) -> Any:
    """Triton's model-configuration enum for a protocol datatype (``BYTES`` is ``TYPE_STRING``)."""
    return model_config_pb2.DataType.Value("TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}")


def _dims(spec: TensorSpec, batched: bool) -> list[int]:
    """A configuration's ``dims`` leave out the batch dimension when the model batches."""
    return list(spec.shape[1:] if batched and spec.shape and spec.shape[0] == -1 else spec.shape)


def package_version() -> str:
    try:
        return importlib.metadata.version("switchyard")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class OipService:
    """``inference.GRPCInferenceService`` over the routes of one gateway process (see the module docstring).

    ``route_ready`` says whether a route's models are ready (the health
    monitor's view); the server is ready when every route is.
    """

    def __init__(self, plane: DataPlane, *, route_ready: Callable[[str], bool], stream_max_inflight: int) -> None:
        self._plane = plane
        self._route_ready = route_ready
        self._stream_max_inflight = stream_max_inflight
        self._version = package_version()

    # -- health and metadata --------------------------------------------------------------------------------

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return service_pb2.ServerReadyResponse(ready=all(self._route_ready(r.name) for r in self._plane.routes))

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return service_pb2.ServerMetadataResponse(name=SERVER_NAME, version=self._version, extensions=EXTENSIONS)

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        """Ready while the route's models are; an unknown route or version is not ready (as Triton answers)."""
        known = request.name in self._plane.routes and request.version in ("", ROUTE_VERSION)
        return service_pb2.ModelReadyResponse(ready=known and self._route_ready(request.name))

    async def _description(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> RouteDescription:
        """The route ``request.name`` (at ``request.version``) describes; aborts NOT_FOUND or INVALID_ARGUMENT."""
        try:
            if request.name not in self._plane.routes:
                raise RouteNotFound(request.name)
            check_version(request.version, request.name, where="version")
            return self._plane.routes.get(request.name).description
        except RouteNotFound as exc:
            await context.abort(exc.code, f"name: no route named {shown(exc.name)}")
            raise AssertionError("unreachable: ServicerContext.abort raises") from exc
        except GatewayError as exc:
            await abort_with(context, exc)

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        route = await self._description(request, context)
        return service_pb2.ModelMetadataResponse(
            name=route.name,
            versions=[ROUTE_VERSION],
            platform=route_platform(route.kind),
            inputs=[_metadata_tensor(spec) for spec in route.inputs],
            outputs=[_metadata_tensor(spec) for spec in route.outputs],
        )

    async def ModelConfig(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        """A configuration in Triton's terms: batch size, inputs and outputs, and the route's description,
        kind and models as parameters."""
        route = await self._description(request, context)
        batched = route.max_batch_size > 0
        config = model_config_pb2.ModelConfig(
            name=route.name,
            platform=route_platform(route.kind),
            max_batch_size=max(route.max_batch_size, 0),
            input=[
                model_config_pb2.ModelInput(name=s.name, data_type=_data_type(s.datatype), dims=_dims(s, batched))
                for s in route.inputs
            ],
            output=[
                model_config_pb2.ModelOutput(name=s.name, data_type=_data_type(s.datatype), dims=_dims(s, batched))
                for s in route.outputs
            ],
        )
        config.parameters["description"].string_value = route.description
        config.parameters["models"].string_value = ",".join(f"{n}={v}" if v else n for n, v in route.models)
        return service_pb2.ModelConfigResponse(config=config)

    # -- inference ------------------------------------------------------------------------------------------

    async def _infer(self, message: Any, context: grpc.aio.ServicerContext[Any, Any]) -> tuple[Any, str, str]:
        """Runs one ``ModelInferRequest``: (the ``ModelInferResponse`` or the error, the client's message for the
        error, the stage timings). A failure of the translation itself is INTERNAL, as the data plane's are."""
        translated: Translated | None = None
        timing = ""
        try:
            translated = translate(message, self._plane.routes)
            if message.model_name in self._plane.routes:
                check_classes(translated, self._plane.routes.get(message.model_name).description.outputs)
            with tracing.incoming(context):
                answer = await self._plane.infer(translated.request, context.time_remaining())
            timing = answer.timing
            if answer.error is not None:
                return answer.error, translated.message(answer.error), timing
            assert answer.response is not None
            batched = self._plane.routes.get(message.model_name).description.max_batch_size > 0
            return infer_response(translated, answer.response, batched=batched), "", timing
        except GatewayError as exc:
            return exc, (translated.message(exc) if translated else exc.message), timing
        except Exception:
            request_id = translated.request.request_id if translated else message.id
            log.exception("OIP request %s on model %r failed unexpectedly", request_id, message.model_name)
            error = internal_error(request_id or "none")
            return error, error.message, timing

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        outcome, message, timing = await self._infer(request, context)
        unless_caller_gone(context)  # as Gateway/Infer: nothing is sent once the caller's deadline has passed
        if timing:
            context.set_trailing_metadata(((TIMING_METADATA, timing),))
        if isinstance(outcome, GatewayError):
            await context.abort(outcome.code, message)
        return outcome

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        """Answers each request as soon as it is done (at most ``stream_max_inflight`` at once), errors in-band."""

        async def answer(request: Any) -> Any:
            outcome, message, _timing = await self._infer(request, context)
            if isinstance(outcome, GatewayError):
                failed = service_pb2.ModelStreamInferResponse(error_message=message)
                failed.infer_response.id = request.id
                failed.infer_response.parameters[STATUS_PARAMETER].string_param = outcome.code.name
                return failed
            # Every route answers once per request, so every answer is the final one (Triton 2.51 sets the flag
            # on each response of a model that is not decoupled, asked for or not).
            outcome.parameters[FINAL_RESPONSE].bool_param = True
            return service_pb2.ModelStreamInferResponse(infer_response=outcome)

        async for response in pipelined(request_iterator, answer, max_inflight=self._stream_max_inflight):
            yield response


# The rest of the service: each method refuses with UNIMPLEMENTED, naming what the gateway offers instead.
for _method in UNSUPPORTED:
    setattr(OipService, _method, staticmethod(_unsupported(_method)))


def _metadata_tensor(spec: TensorSpec) -> Any:
    return service_pb2.ModelMetadataResponse.TensorMetadata(name=spec.name, datatype=spec.datatype, shape=spec.shape)
