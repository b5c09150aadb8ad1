"""The ``switchyard.v1.Gateway`` gRPC service: the contract's messages in, the data plane's answers out.

Each method hands its requests to the :class:`~switchyard.proxy.lifecycle.dataplane.DataPlane`
(which owns admission, deadlines, validation, caching, metrics and logging)
and turns answers and errors into gRPC messages and statuses
(:func:`~switchyard.proxy.errors.status_of`, :func:`~switchyard.proxy.errors.abort_with`).
A stream request's error travels on the stream and the stream goes on; a
unary call's error ends the call with its status. Stage timings travel as
``switchyard-timing`` trailing metadata.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from switchyard.proxy import tracing
from switchyard.proxy.errors import GatewayError, abort_with, status_of
from switchyard.proxy.grpc.streaming import pipelined
from switchyard.proxy.lifecycle.context import new_request_id
from switchyard.proxy.lifecycle.dataplane import DataPlane
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc

TIMING_METADATA = "switchyard-timing"


class GatewayService(gateway_pb2_grpc.GatewayServicer):
    def __init__(self, plane: DataPlane, *, stream_max_inflight: int) -> None:
        self._plane = plane
        self._stream_max_inflight = stream_max_inflight

    async def Infer(self, request: pb.InferRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.InferResponse:
        if tracing.tracer is None:
            answer = await self._plane.infer(request, context.time_remaining())
        else:
            with tracing.incoming(context):
                answer = await self._plane.infer(request, context.time_remaining())
        unless_caller_gone(context)
        if answer.error is not None:
            await abort_with(context, answer.error)
        if answer.timing:
            context.set_trailing_metadata(((TIMING_METADATA, answer.timing),))
        assert answer.response is not None
        return answer.response

    async def InferProgressive(
        self, request: pb.InferRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.ProgressiveResponse]:
        """A progressive route's answers, stage by stage; other kinds answer once, final."""
        with tracing.incoming(context):
            async for item in self._plane.progressive(request, context.time_remaining()):
                unless_caller_gone(context)
                if isinstance(item, GatewayError):
                    await abort_with(context, item)
                if item.timing:
                    context.set_trailing_metadata(((TIMING_METADATA, item.timing),))
                message = pb.ProgressiveResponse(stage=item.stage, stage_index=item.index, final=item.final)
                if item.error is not None:
                    message.error.CopyFrom(status_of(item.error))
                elif item.response is not None:
                    message.response.CopyFrom(item.response)
                yield message

    async def ListRoutes(
        self, request: pb.ListRoutesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListRoutesResponse:
        return pb.ListRoutesResponse(routes=[r.description.to_proto() for r in self._plane.routes])

    async def GetRoute(self, request: pb.GetRouteRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.RouteInfo:
        try:
            return self._plane.routes.get(request.name).description.to_proto()
        except GatewayError as exc:
            await abort_with(context, exc)

    async def InferStream(
        self, request_iterator: AsyncIterator[pb.InferRequest], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.StreamInferResponse]:
        """Answers each request as soon as it is done; at most ``stream_max_inflight`` at once.

        A message with ``cancel`` set withdraws the running request with its
        ``request_id``: neither is answered.
        """

        async def answer(request: pb.InferRequest) -> pb.StreamInferResponse:
            if not request.request_id:
                request.request_id = new_request_id()  # assigned here so that an error can be matched too
            outcome = await self._plane.infer(request, context.time_remaining())
            if outcome.error is not None:
                return pb.StreamInferResponse(request_id=request.request_id, error=status_of(outcome.error))
            return pb.StreamInferResponse(request_id=request.request_id, response=outcome.response)

        async for message in pipelined(
            request_iterator,
            answer,
            max_inflight=self._stream_max_inflight,
            key=_request_id,
            withdraws=_withdraws,
        ):
            yield message


def _request_id(request: pb.InferRequest) -> str:
    return request.request_id


def _withdraws(request: pb.InferRequest) -> bool:
    return request.cancel


def unless_caller_gone(context: grpc.aio.ServicerContext[Any, Any]) -> None:
    """Ends the handler without an answer once the caller's deadline has passed: nobody listens any more.

    The caller has already seen DEADLINE_EXCEEDED from its own side. Sending
    an answer or a status on a call whose deadline has passed fails inside
    grpcio, which then logs an ExecuteBatchError traceback and leaks the
    native operation array of that batch (grpc/grpc#43360). Raising
    CancelledError is how grpcio's asyncio server expects a handler to stop
    on a call that was cancelled under it: nothing is sent, nothing logged.
    """
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        raise asyncio.CancelledError
