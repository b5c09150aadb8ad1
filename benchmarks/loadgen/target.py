"""What a point calls: :class:`Target` (address, protocol, payload), its pre-serialized request and the answer check."""

from __future__ import annotations

import json
from dataclasses import dataclass

PROTOCOL_METHODS = {
    "oip": "/inference.GRPCInferenceService/ModelInfer",
    "switchyard": "/switchyard.v1.Gateway/Infer",
    "switchyard_stream": "/switchyard.v1.Gateway/InferStream",
    "oip_stream": "/inference.GRPCInferenceService/ModelStreamInfer",
    "http": "POST",
}
"""The method each protocol calls. ``oip``: the Open Inference Protocol (Triton, the floor proxy, a KServe
model server); ``switchyard_stream``: the gateway's requests on one bidirectional ``InferStream`` per worker;
``oip_stream``: Open Inference Protocol requests on one ``ModelStreamInfer`` per worker (Triton's streaming RPC);
``http``: an HTTP/1.1 POST of the payload's bytes to ``Target.path`` (the HTTP peers)."""

STREAMING = ("switchyard_stream", "oip_stream")


@dataclass(frozen=True)
class Target:
    """Where and what to call: an address, a protocol and one request's payload.

    ``oip`` sends an Open Inference Protocol ``ModelInferRequest`` for ``model``
    (Triton itself, or the floor proxy in front of it); ``switchyard`` sends a
    gateway ``InferRequest`` for ``route``. The payload is ``batch`` rows of
    ``features`` FP32 values (pixels 0..16, fixed seed) as input ``input_name``,
    shaped ``[batch, features]``, or ``[batch, *row_shape]`` when ``row_shape``
    is given (an image model's ``(3, 224, 224)``; ``features`` is then ignored).
    With ``payload`` the input is instead a BYTES tensor ``[batch]`` holding
    ``payload`` (e.g. a PNG file) ``batch`` times; ``http`` POSTs ``payload``
    alone as the body to ``path`` and expects a JSON object holding
    ``outputs`` as keys.
    ``check`` False skips checking the answer in ``probe`` (the echo server
    answers an empty message). ``bypass_cache`` sets the gateway request's
    field of that name (always a cache miss). ``then`` (``switchyard`` only)
    names routes called after ``route``, one after another with the same
    inputs and outputs asked for, as one request of the load (a client making
    dependent calls); its latency is the whole sequence's. ``connections``
    (unary gRPC only) is how many connections each load generator process
    opens to ``address``, its calls taking them in turn: more than one lets
    the kernel spread the load over the processes of a server that shares its
    port (``switchyard serve --workers``).
    """

    name: str
    address: str
    protocol: str
    model: str = "digits_logreg"
    route: str = "digits"
    input_name: str = "image"
    features: int = 64
    batch: int = 1
    outputs: tuple[str, ...] = ("label", "probabilities")
    check: bool = True
    row_shape: tuple[int, ...] | None = None
    payload: bytes | None = None
    path: str = "/"
    bypass_cache: bool = False
    then: tuple[str, ...] = ()
    connections: int = 1

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOL_METHODS:
            raise ValueError(f"unknown protocol {self.protocol!r}; one of {', '.join(PROTOCOL_METHODS)}")
        if self.connections < 1:
            raise ValueError(f"connections must be at least 1, got {self.connections}")
        if self.connections > 1 and self.protocol in STREAMING + ("http",):
            raise ValueError("connections > 1 is for unary gRPC protocols")
        if self.then and self.protocol != "switchyard":
            raise ValueError("then (a sequence of routes) needs the switchyard protocol")

    @property
    def method(self) -> str:
        return PROTOCOL_METHODS[self.protocol]

    @property
    def shape(self) -> list[int]:
        """The input tensor's shape, batch first."""
        return [self.batch, *(self.row_shape if self.row_shape is not None else (self.features,))]

    def _raw_input(self) -> bytes:
        import numpy as np

        if self.payload is not None:  # Triton's BYTES layout: a 4-byte little-endian length before each element
            return (len(self.payload).to_bytes(4, "little") + self.payload) * self.batch
        pixels = np.random.default_rng(0).integers(0, 17, size=self.shape)
        return pixels.astype("<f4").tobytes()

    def request_bytes(self) -> bytes:
        """One serialized request, sent as it is by every call."""
        shape, datatype = (self.shape, "FP32") if self.payload is None else ([self.batch], "BYTES")
        if self.protocol == "http":
            host = self.address.rpartition(":")[0]
            head = (
                f"POST {self.path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Length: {len(self.payload or b'')}\r\n\r\n"
            )
            return head.encode("ascii") + (self.payload or b"")
        if self.protocol in ("oip", "oip_stream"):
            from tritonclient.grpc import service_pb2

            request = service_pb2.ModelInferRequest(model_name=self.model)
            request.inputs.add(name=self.input_name, datatype=datatype, shape=shape)
            request.raw_input_contents.append(self._raw_input())
            for name in self.outputs:
                request.outputs.add(name=name)
            return bytes(request.SerializeToString())
        from switchyard.v1 import gateway_pb2

        gateway_request = gateway_pb2.InferRequest(
            route=self.route, outputs=list(self.outputs), bypass_cache=self.bypass_cache
        )
        gateway_request.inputs.add(name=self.input_name, datatype=datatype, shape=shape, raw_data=self._raw_input())
        return bytes(gateway_request.SerializeToString())

    def check_response(self, data: bytes) -> str | None:
        """What is wrong with one answer, or None when it holds every output for every row."""
        if not self.check:
            return None
        if self.protocol == "http":
            try:
                answer = json.loads(data)
            except ValueError:
                return f"answer is not JSON: {data[:200]!r}"
            missing = [name for name in self.outputs if not isinstance(answer, dict) or not answer.get(name)]
            return f"answer lacks outputs {missing}: {answer!r}" if missing else None
        if self.protocol in ("oip", "oip_stream"):
            from tritonclient.grpc import service_pb2

            if self.protocol == "oip_stream":
                message = service_pb2.ModelStreamInferResponse.FromString(data)
                if message.error_message:
                    return f"stream answer is an error: {message.error_message}"
                data = message.infer_response.SerializeToString()
            reply = service_pb2.ModelInferResponse.FromString(data)
            if reply.raw_output_contents:
                if len(reply.raw_output_contents) != len(reply.outputs):
                    return "answer's outputs come partly as raw_output_contents"
                pairs = zip(reply.outputs, reply.raw_output_contents, strict=True)
                tensors = {o.name: (list(o.shape), len(raw)) for o, raw in pairs}
            else:  # typed contents (a KServe model server answers so)
                tensors = {o.name: (list(o.shape), o.contents.ByteSize()) for o in reply.outputs}
        else:
            from switchyard.v1 import gateway_pb2

            if self.protocol == "switchyard_stream":
                message = gateway_pb2.StreamInferResponse.FromString(data)
                if message.HasField("error"):
                    return f"stream answer is an error: {message.error.code} {message.error.message}"
                answer = message.response
            else:
                answer = gateway_pb2.InferResponse.FromString(data)
            tensors = {t.name: (list(t.shape), len(t.raw_data)) for t in answer.outputs}
        missing = [name for name in self.outputs if name not in tensors]
        if missing:
            return f"answer lacks outputs {missing}; got {sorted(tensors)}"
        short = [name for name in self.outputs if tensors[name][0][:1] != [self.batch] or tensors[name][1] == 0]
        if short:
            return f"outputs {short} do not hold {self.batch} rows: {tensors}"
        return None
