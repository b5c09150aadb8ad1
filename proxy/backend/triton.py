"""The Triton backend client: one long-lived gRPC channel per process.

Speaks the Open Inference Protocol through tritonclient's generated stubs
(``tritonclient.grpc.service_pb2``) on a ``grpc.aio`` channel built by the
shared option factory. Using the stubs directly, rather than
``InferenceServerClient.infer``, lets tensors travel as the raw bytes the
client sent: no NumPy round trip, no copy beyond protobuf's own. Every call
carries the caller's remaining deadline; every failure becomes a
:class:`~switchyard.proxy.errors.GatewayError` here and nowhere else.

It owns transport and metadata, not validation or routing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from switchyard.client.channel import channel_options
from switchyard.proxy import errors
from switchyard.proxy.specs import TensorSpec
from switchyard.v1 import gateway_pb2 as pb


@dataclass(frozen=True)
class ModelInfo:
    """What the proxy needs to know of a model, read from Triton at start-up."""

    name: str
    versions: tuple[str, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int


@dataclass(frozen=True)
class InferResult:
    model: str
    version: str
    outputs: list[pb.Tensor]


class TritonBackend:
    """Async client of one Triton server. Create it inside the running event loop."""

    def __init__(self, url: str, *, max_message_bytes: int) -> None:
        self.url = url
        self._channel = grpc.aio.insecure_channel(url, options=channel_options(max_message_bytes=max_message_bytes))
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def server_ready(self, timeout_s: float) -> bool:
        try:
            reply = await self._stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=timeout_s)
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.ready)

    async def model_ready(self, name: str, version: str = "", *, timeout_s: float) -> bool:
        try:
            reply = await self._stub.ModelReady(
                service_pb2.ModelReadyRequest(name=name, version=version), timeout=timeout_s
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.ready)

    async def wait_models_ready(self, names: Sequence[str], *, timeout_s: float, poll_s: float = 0.25) -> None:
        """Waits until every model is ready; raises BackendUnavailable naming the ones that are not."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        pending = list(dict.fromkeys(names))
        while True:
            ready = await asyncio.gather(*(self.model_ready(n, timeout_s=min(2.0, timeout_s)) for n in pending))
            pending = [n for n, ok in zip(pending, ready, strict=True) if not ok]
            if not pending:
                return
            if loop.time() >= deadline:
                raise errors.BackendUnavailable(
                    f"models not ready in Triton at {self.url} after {timeout_s:g} s: {', '.join(pending)}"
                )
            await asyncio.sleep(poll_s)

    async def model_info(self, name: str, *, timeout_s: float) -> ModelInfo:
        try:
            meta = await self._stub.ModelMetadata(service_pb2.ModelMetadataRequest(name=name), timeout=timeout_s)
            config = await self._stub.ModelConfig(service_pb2.ModelConfigRequest(name=name), timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise errors.from_backend(exc.code(), exc.details() or "", name) from None
        return ModelInfo(
            name=meta.name,
            versions=tuple(meta.versions),
            inputs=tuple(TensorSpec(t.name, t.datatype, tuple(t.shape)) for t in meta.inputs),
            outputs=tuple(TensorSpec(t.name, t.datatype, tuple(t.shape)) for t in meta.outputs),
            max_batch_size=int(config.config.max_batch_size),
        )

    async def infer(
        self,
        model: str,
        version: str,
        inputs: Sequence[pb.Tensor],
        outputs: Sequence[str],
        *,
        timeout_s: float,
        request_id: str = "",
    ) -> InferResult:
        """Runs one inference; ``inputs`` travel as their raw bytes."""
        request = service_pb2.ModelInferRequest(model_name=model, model_version=version, id=request_id)
        for tensor in inputs:
            request.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
            request.raw_input_contents.append(tensor.raw_data)
        for name in outputs:
            request.outputs.add(name=name)
        if timeout_s <= 0:
            raise errors.DeadlineExceeded(f"deadline exceeded before calling model {model!r}")
        try:
            reply = await self._stub.ModelInfer(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise errors.from_backend(exc.code(), exc.details() or "", model) from None
        tensors = [
            pb.Tensor(name=out.name, datatype=out.datatype, shape=out.shape, raw_data=raw)
            for out, raw in zip(reply.outputs, reply.raw_output_contents, strict=True)
        ]
        return InferResult(model=reply.model_name, version=reply.model_version, outputs=tensors)
