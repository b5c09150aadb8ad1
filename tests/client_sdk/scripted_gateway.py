"""A real grpc.aio Gateway server whose behaviour each test scripts.

Routes (the request's ``route`` picks the behaviour, for unary calls and for
each request on a stream alike):

- ``echo``: answers with the inputs as outputs (only those named in
  ``outputs`` when given), model ``echo`` at the pinned version (default
  ``"1"``), ``cached`` unless ``bypass_cache``.
- ``slow``: like ``echo`` after ``slow_s`` seconds.
- ``partial``: like ``echo``, with :data:`MISSING_BRANCHES` listed as missing.
- ``invalid``: fails with INVALID_ARGUMENT and :data:`INVALID_MESSAGE`.
- ``abort`` (streams only): ends the whole stream with UNAVAILABLE.
- anything else: NOT_FOUND.

``InferProgressive`` answers the routes of :data:`PROGRESSIVE_ROUTES` stage by
stage (each stage like ``echo``, with the stage's name as its model):

- ``progressive``: stages ``fast`` then ``accurate`` (final).
- ``progressive-flaky``: stage ``fast`` fails (a message with ``error``
  UNAVAILABLE and :data:`STAGE_FAILURE`), then ``accurate`` answers (final).
- ``progressive-abort``: stage ``fast`` answers, then the call fails with
  UNAVAILABLE.

While ``stage_gate`` is a ``threading.Event``, every stage after the first
waits until it is set. Any other route answers once, as ``Infer`` would, in
one final message whose stage is the route's name (a failure fails the call).

An ``INT32`` input ``delay_ms`` delays a request's answer (or failure) by that
much, so stream answers can be made to come out of order.

While ``unavailable_calls`` > 0 every unary call (and every stream) fails
with UNAVAILABLE and decrements it. Each call is recorded with the deadline
the server saw and its metadata.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
import numpy as np

from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc
from switchyard.v1.tensors import to_numpy

INVALID_MESSAGE = "inputs[x]: datatype INT64 is not FP32"
UNAVAILABLE_MESSAGE = "backend triton is unavailable"
STAGE_FAILURE = "stage fast: backend triton is unavailable"
MISSING_BRANCHES = [
    pb.BranchError(
        branch="linear",
        status=pb.Status(
            code=grpc.StatusCode.DEADLINE_EXCEEDED.value[0], message="branch linear did not answer in time"
        ),
    ),
    pb.BranchError(
        branch="tree",
        status=pb.Status(code=grpc.StatusCode.UNAVAILABLE.value[0], message="model tree is unavailable"),
    ),
]
PROGRESSIVE_ROUTES = {
    "progressive": ("fast", "accurate"),
    "progressive-flaky": ("fast", "accurate"),
    "progressive-abort": ("fast", "accurate"),
}

ROUTES = [
    pb.RouteInfo(
        name="echo",
        kind=pb.ROUTE_KIND_SINGLE,
        description="Answers with its inputs.",
        inputs=[pb.TensorSpec(name="x", datatype="FP32", shape=[-1, 3])],
        outputs=[pb.TensorSpec(name="x", datatype="FP32", shape=[-1, 3])],
        models=[pb.ModelRef(name="echo", version="")],
        max_batch_size=8,
        cached=True,
    ),
    pb.RouteInfo(
        name="ensemble",
        kind=pb.ROUTE_KIND_PARALLEL,
        description="Two models at once.",
        inputs=[pb.TensorSpec(name="features", datatype="FP64", shape=[4])],
        outputs=[pb.TensorSpec(name="label", datatype="BYTES", shape=[1])],
        models=[pb.ModelRef(name="tree", version="2"), pb.ModelRef(name="linear", version="")],
        max_batch_size=0,
        steps=[
            pb.RouteStep(name="trees", models=[pb.ModelRef(name="tree", version="2")]),
            pb.RouteStep(
                name="linear", models=[pb.ModelRef(name="linear", version=""), pb.ModelRef(name="linear", version="3")]
            ),
        ],
    ),
]


@dataclass
class Call:
    """One call as the server saw it."""

    method: str
    request: Any  # the request message; None for streams
    time_remaining: float | None
    metadata: dict[str, str | bytes]


class Failure(Exception):
    """A scripted failure of one request."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ScriptedGateway(gateway_pb2_grpc.GatewayServicer):
    def __init__(self) -> None:
        self.target = ""
        self.calls: list[Call] = []
        self.stream_requests: list[pb.InferRequest] = []
        self.unavailable_calls = 0
        self.slow_s = 5.0
        self.stream_cancelled = threading.Event()
        self.progressive_cancelled = threading.Event()
        self.stage_gate: threading.Event | None = None

    def _record(self, method: str, request: object, context: grpc.aio.ServicerContext) -> None:
        metadata = {key: value for key, value in (context.invocation_metadata() or ())}
        self.calls.append(Call(method, request, context.time_remaining(), metadata))

    def calls_to(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    async def _maybe_unavailable(self, context: grpc.aio.ServicerContext) -> None:
        if self.unavailable_calls > 0:
            self.unavailable_calls -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, UNAVAILABLE_MESSAGE)

    async def _answer(self, request: pb.InferRequest) -> pb.InferResponse:
        for tensor in request.inputs:
            if tensor.name == "delay_ms":
                await asyncio.sleep(int(np.asarray(to_numpy(tensor)).reshape(-1)[0]) / 1000)
        if request.route == "invalid":
            raise Failure(grpc.StatusCode.INVALID_ARGUMENT, INVALID_MESSAGE)
        if request.route == "abort":
            raise Failure(grpc.StatusCode.UNAVAILABLE, UNAVAILABLE_MESSAGE)
        if request.route not in ("echo", "slow", "partial"):
            raise Failure(grpc.StatusCode.NOT_FOUND, f"route {request.route!r} not found")
        if request.route == "slow":
            await asyncio.sleep(self.slow_s)
        response = self._echo(request, "echo")
        if request.route == "partial":
            response.missing.extend(MISSING_BRANCHES)
        return response

    @staticmethod
    def _echo(request: pb.InferRequest, model: str) -> pb.InferResponse:
        wanted = set(request.outputs)
        return pb.InferResponse(
            route=request.route,
            request_id=request.request_id,
            outputs=[tensor for tensor in request.inputs if not wanted or tensor.name in wanted],
            models=[pb.ModelRef(name=model, version=request.model_versions.get(model, "1"))],
            cached=not request.bypass_cache,
        )

    async def Infer(self, request: pb.InferRequest, context: grpc.aio.ServicerContext) -> pb.InferResponse:
        self._record("Infer", request, context)
        await self._maybe_unavailable(context)
        try:
            return await self._answer(request)
        except Failure as failure:
            await context.abort(failure.code, failure.message)
            raise  # unreachable: abort raises

    async def ListRoutes(
        self, request: pb.ListRoutesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRoutesResponse:
        self._record("ListRoutes", request, context)
        await self._maybe_unavailable(context)
        return pb.ListRoutesResponse(routes=ROUTES)

    async def GetRoute(self, request: pb.GetRouteRequest, context: grpc.aio.ServicerContext) -> pb.RouteInfo:
        self._record("GetRoute", request, context)
        await self._maybe_unavailable(context)
        for info in ROUTES:
            if info.name == request.name:
                return info
        await context.abort(grpc.StatusCode.NOT_FOUND, f"route {request.name!r} not found")
        raise AssertionError("unreachable")

    async def InferStream(
        self, request_iterator: AsyncIterator[pb.InferRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamInferResponse]:
        self._record("InferStream", None, context)
        await self._maybe_unavailable(context)
        answers: asyncio.Queue[pb.StreamInferResponse | Failure | None] = asyncio.Queue()

        async def answer(request: pb.InferRequest) -> None:
            try:
                response = await self._answer(request)
            except Failure as failure:
                if request.route == "abort":
                    await answers.put(failure)
                    return
                status = pb.Status(code=failure.code.value[0], message=failure.message)
                await answers.put(pb.StreamInferResponse(request_id=request.request_id, error=status))
            else:
                await answers.put(pb.StreamInferResponse(request_id=request.request_id, response=response))

        tasks: list[asyncio.Future[None]] = []

        async def read_all() -> None:
            async for request in request_iterator:
                self.stream_requests.append(request)
                tasks.append(asyncio.ensure_future(answer(request)))
            await asyncio.gather(*tasks)
            await answers.put(None)

        reader = asyncio.ensure_future(read_all())
        try:
            while (item := await answers.get()) is not None:
                if isinstance(item, Failure):
                    await context.abort(item.code, item.message)
                yield item
        except asyncio.CancelledError:
            self.stream_cancelled.set()
            raise
        finally:
            for task in (reader, *tasks):
                task.cancel()

    async def InferProgressive(
        self, request: pb.InferRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ProgressiveResponse]:
        self._record("InferProgressive", request, context)
        await self._maybe_unavailable(context)
        try:
            stages = PROGRESSIVE_ROUTES.get(request.route)
            if stages is None:
                try:
                    response = await self._answer(request)
                except Failure as failure:
                    await context.abort(failure.code, failure.message)
                    raise  # unreachable: abort raises
                yield pb.ProgressiveResponse(stage=request.route, stage_index=0, final=True, response=response)
                return
            for index, stage in enumerate(stages):
                if index > 0 and self.stage_gate is not None:
                    # A threading.Event, as the blocking client's tests set it from their own thread.
                    while not self.stage_gate.is_set():  # noqa: ASYNC110
                        await asyncio.sleep(0.005)
                final = index == len(stages) - 1
                if request.route == "progressive-abort" and index > 0:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, UNAVAILABLE_MESSAGE)
                if request.route == "progressive-flaky" and stage == "fast":
                    status = pb.Status(code=grpc.StatusCode.UNAVAILABLE.value[0], message=STAGE_FAILURE)
                    yield pb.ProgressiveResponse(stage=stage, stage_index=index, final=final, error=status)
                    continue
                response = self._echo(request, stage)
                yield pb.ProgressiveResponse(stage=stage, stage_index=index, final=final, response=response)
        except asyncio.CancelledError:
            self.progressive_cancelled.set()
            raise
