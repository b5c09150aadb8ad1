"""Conversion between the SDK's values and the contract's messages.

Both clients (``aio`` and ``sync``) build every request and read every answer
through this module, so they send byte-identical requests: tensors through the
``tensors`` codec, a request id assigned when the caller gives none, model
versions as strings, call metadata normalised once. It does no I/O and knows
nothing of retries or deadlines (``retry`` owns those).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy.typing as npt

from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1.tensors import from_numpy, to_numpy

from .errors import SwitchyardError, Unknown, error_from
from .results import (
    InferResult,
    ModelRef,
    ProgressiveResult,
    RouteInfo,
    RouteStep,
    StreamRequest,
    TensorSpec,
    new_request_id,
)

Metadata = tuple[tuple[str, str | bytes], ...]
MetadataLike = Mapping[str, str | bytes] | Sequence[tuple[str, str | bytes]]

_KIND_PREFIX = "ROUTE_KIND_"


def call_metadata(metadata: MetadataLike | None, *, api_key: str | None = None) -> Metadata | None:
    """Metadata sent with every call, as the tuple of pairs gRPC expects.

    ``api_key`` adds ``authorization: Bearer <key>``; it may not be combined
    with an ``authorization`` entry in ``metadata``.
    """
    pairs = () if metadata is None else metadata.items() if isinstance(metadata, Mapping) else metadata
    normalised = tuple((str(key).lower(), value) for key, value in pairs)
    if api_key is not None:
        if not api_key or api_key != api_key.strip():
            raise ValueError("api_key must be a non-empty string without surrounding whitespace")
        if any(key == "authorization" for key, _ in normalised):
            raise ValueError("give either api_key or an 'authorization' metadata entry, not both")
        normalised += (("authorization", f"Bearer {api_key}"),)
    if metadata is None and api_key is None:
        return None
    return normalised


def infer_request(
    route: str,
    inputs: Mapping[str, npt.ArrayLike],
    *,
    outputs: Sequence[str] | None = None,
    request_id: str | None = None,
    model_versions: Mapping[str, str | int] | None = None,
    bypass_cache: bool = False,
    data_key: str | None = None,
) -> pb.InferRequest:
    """An ``InferRequest``; assigns a fresh request id when ``request_id`` is empty.

    ``data_key`` is sent as given (the gateway checks its length).
    """
    if isinstance(outputs, str):
        raise TypeError("outputs must be a sequence of output names, not a string")
    return pb.InferRequest(
        route=route,
        request_id=request_id or new_request_id(),
        inputs=[from_numpy(name, array) for name, array in inputs.items()],
        outputs=list(outputs or ()),
        model_versions={name: str(version) for name, version in (model_versions or {}).items()},
        bypass_cache=bypass_cache,
        data_key=data_key or "",
    )


def stream_request(request: StreamRequest, seen: set[str]) -> pb.InferRequest:
    """The message for one stream request; ``seen`` holds the ids already sent on this stream."""
    if not isinstance(request, StreamRequest):
        raise TypeError(f"infer_stream takes StreamRequest items, got {type(request).__name__}")
    if not request.request_id:
        raise ValueError("StreamRequest.request_id must not be empty")
    if request.request_id in seen:
        raise ValueError(f"request_id {request.request_id!r} was already sent on this stream")
    seen.add(request.request_id)
    return infer_request(
        request.route,
        request.inputs,
        outputs=request.outputs,
        request_id=request.request_id,
        model_versions=request.model_versions,
        bypass_cache=request.bypass_cache,
        data_key=request.data_key,
    )


def model_refs(models: Sequence[pb.ModelRef]) -> list[ModelRef]:
    return [ModelRef(model.name, model.version) for model in models]


def infer_result(response: pb.InferResponse, *, request_id: str = "") -> InferResult:
    """Decodes an ``InferResponse``; ``request_id`` fills in when the response's own is empty.

    Each missing parallel branch becomes the error for its status, carrying the request's id.
    """
    request_id = response.request_id or request_id
    return InferResult(
        outputs={tensor.name: to_numpy(tensor) for tensor in response.outputs},
        route=response.route,
        request_id=request_id,
        models=model_refs(response.models),
        cached=response.cached,
        missing={item.branch: error_from(item.status, request_id=request_id or None) for item in response.missing},
    )


def stream_item(message: pb.StreamInferResponse) -> InferResult | SwitchyardError:
    """One stream answer: the result, or the error of the request it names."""
    which = message.WhichOneof("result")
    if which == "response":
        return infer_result(message.response, request_id=message.request_id)
    if which == "error":
        return error_from(message.error, request_id=message.request_id)
    return Unknown("stream message carries neither a response nor an error", request_id=message.request_id)


def progressive_result(message: pb.ProgressiveResponse, *, request_id: str) -> ProgressiveResult:
    """One progressive message: the stage's result, or its error (with ``request_id``)."""
    result: InferResult | None = None
    error: SwitchyardError | None = None
    if message.HasField("response"):
        result = infer_result(message.response, request_id=request_id)
    elif message.HasField("error"):
        error = error_from(message.error, request_id=request_id)
    else:
        error = Unknown("progressive message carries neither a response nor an error", request_id=request_id)
    return ProgressiveResult(
        stage=message.stage, stage_index=message.stage_index, final=message.final, result=result, error=error
    )


def route_kind(kind: int) -> str:
    """``ROUTE_KIND_SINGLE`` -> ``"single"``; ``"unknown"`` for kinds newer than these stubs."""
    try:
        name = str(pb.RouteKind.Name(kind))
    except ValueError:
        return "unknown"
    return name.removeprefix(_KIND_PREFIX).lower()


def tensor_specs(specs: Sequence[pb.TensorSpec]) -> list[TensorSpec]:
    return [TensorSpec(spec.name, spec.datatype, tuple(int(d) for d in spec.shape)) for spec in specs]


def route_info(info: pb.RouteInfo) -> RouteInfo:
    return RouteInfo(
        name=info.name,
        kind=route_kind(info.kind),
        description=info.description,
        inputs=tensor_specs(info.inputs),
        outputs=tensor_specs(info.outputs),
        models=model_refs(info.models),
        max_batch_size=info.max_batch_size,
        steps=[RouteStep(step.name, model_refs(step.models)) for step in info.steps],
        cached=info.cached,
    )
