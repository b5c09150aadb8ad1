"""Open Inference Protocol messages <-> the gateway's own: what the OIP front translates, and nothing else.

A ``ModelInferRequest`` (KServe v2 / Triton gRPC, the descriptors ``tritonclient``
ships) becomes a ``switchyard.v1.InferRequest``: ``model_name`` is the route,
``id`` the request id, each input's data comes from ``raw_input_contents`` (one
entry per input, in order) or from its typed ``contents`` (packed into the
same little-endian bytes), the outputs asked for keep their order, and the
request parameters Switchyard understands (``bypass_cache``, ``data_key``,
``model_versions``) fill the fields of the same names. The answer goes back
as a ``ModelInferResponse`` with every output in ``raw_output_contents``, as
Triton's gRPC endpoint always answers (``binary_data`` only matters over
HTTP), and Triton's ``classification`` output parameter turns an output into
its top classes (``"score:index"`` strings).

Errors keep the gateway's status codes and reasons; only the field a message
names is translated into the OIP request's own (``route`` -> ``model_name``,
``inputs[image].raw_data`` -> ``raw_input_contents[0]`` or
``inputs[image].contents``, ...). What is refused here, before the data plane,
is only what has no gateway request at all: contents of the wrong type,
``raw_input_contents`` not matching the inputs, shared memory. Everything else
(unknown route, shapes, sizes, outputs, versions) is the data plane's
validation, with the same order and wording as ``switchyard.v1.Gateway/Infer``.
"""

from __future__ import annotations

import re
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
from tritonclient.grpc import service_pb2

from switchyard.proxy.client_text import bounded, shown
from switchyard.proxy.errors import GatewayError, InvalidInput, ModelNotFound, RouteNotFound, Unsupported
from switchyard.proxy.tensor_spec import TensorSpec
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1.tensors import DATATYPES, encode_bytes

ROUTE_VERSION = "1"
"""The one version every route has as an OIP model."""
PLATFORM_PREFIX = "switchyard_"
"""A route's ``platform`` is this plus its kind (``switchyard_single``, ``switchyard_parallel``, ...)."""

BYPASS_CACHE = "bypass_cache"
DATA_KEY = "data_key"
MODEL_VERSIONS = "model_versions"
"""Request parameters that fill the gateway request's fields of the same names (``model_versions``: ``m=1,n=2``)."""
EMPTY_FINAL_RESPONSE = "triton_enable_empty_final_response"
FINAL_RESPONSE = "triton_final_response"
"""Triton's stream flags: every answer of a route is final, so each stream answer carries ``triton_final_response``."""
CLASSIFICATION = "classification"
SHARED_MEMORY = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")
STATUS_PARAMETER = "grpc_status"
"""Set on a stream answer that carries an error: the gRPC status name the same request would get from ModelInfer."""
CACHED, MODELS, MISSING = "cached", "models", "missing"
"""Response parameters: whether the answer came from the prediction cache, the models that ran (``m=1,n=2``),
the branches of a ``partial`` parallel route that did not answer (``branch=CODE,...``)."""

SHARED_MEMORY_UNSUPPORTED = (
    "shared memory is not supported by Switchyard's Open Inference Protocol front; send the data in "
    "raw_input_contents (the gateway itself uses shared memory with a local Triton)"
)

# OIP datatype -> (the typed contents field that holds it, the NumPy dtype of its wire bytes).
_TYPED: Mapping[str, tuple[str, np.dtype[Any]]] = {
    "BOOL": ("bool_contents", np.dtype("?")),
    "INT8": ("int_contents", np.dtype("<i1")),
    "INT16": ("int_contents", np.dtype("<i2")),
    "INT32": ("int_contents", np.dtype("<i4")),
    "INT64": ("int64_contents", np.dtype("<i8")),
    "UINT8": ("uint_contents", np.dtype("<u1")),
    "UINT16": ("uint_contents", np.dtype("<u2")),
    "UINT32": ("uint_contents", np.dtype("<u4")),
    "UINT64": ("uint64_contents", np.dtype("<u8")),
    "FP32": ("fp32_contents", np.dtype("<f4")),
    "FP64": ("fp64_contents", np.dtype("<f8")),
    "BYTES": ("bytes_contents", np.dtype(np.object_)),
}
_NARROW_INTS = frozenset({"INT8", "INT16", "UINT8", "UINT16"})
_OUTPUT = service_pb2.ModelInferResponse.InferOutputTensor
_OUTPUT_INDEX = re.compile(r"^outputs\[\d+\]$")


def route_platform(kind: int) -> str:
    """``switchyard_single`` for ``ROUTE_KIND_SINGLE``, and so on."""
    return PLATFORM_PREFIX + pb.RouteKind.Name(kind).removeprefix("ROUTE_KIND_").lower()


def check_version(version: str, route: str, *, where: str = "model_version") -> None:
    """A route has one version, ``1``; ``""`` means it too. Raises InvalidInput or ModelNotFound otherwise."""
    if not version or version == ROUTE_VERSION:
        return
    if not version.isdigit() or int(version) < 1:
        raise InvalidInput(where, f"must be a positive integer, got {version!r}")
    raise ModelNotFound(f"{where}: route {route!r} has no version {version} (its only version is {ROUTE_VERSION})")


@dataclass(slots=True)
class Translated:
    """One ``ModelInferRequest`` as the gateway's request, with what its answer and errors need."""

    request: pb.InferRequest
    sources: dict[str, str] = field(default_factory=dict)
    """Input name -> the field its data came from (``raw_input_contents[0]`` or ``inputs[image].contents``)."""
    classes: dict[str, int] = field(default_factory=dict)
    """Output name -> how many top classes Triton's ``classification`` parameter asked for."""

    def field_name(self, gateway_field: str) -> str:
        """The OIP request's field for a field the gateway's validation names."""
        if gateway_field == "route":
            return "model_name"
        if gateway_field == "request_id":
            return "id"
        if gateway_field == "data_key":
            return f"parameters[{DATA_KEY}]"
        if gateway_field.startswith("model_versions["):
            return f"parameters[{MODEL_VERSIONS}]" + gateway_field.removeprefix("model_versions")
        if _OUTPUT_INDEX.match(gateway_field):
            return gateway_field + ".name"
        if gateway_field.startswith("inputs[") and gateway_field.endswith("].raw_data"):
            name = gateway_field[len("inputs[") : -len("].raw_data")]
            return self.sources.get(name, f"inputs[{name}].contents")
        return gateway_field

    def message(self, error: GatewayError) -> str:
        """The client's message for ``error``: the gateway's reason, naming the OIP request's field."""
        if isinstance(error, RouteNotFound):
            return f"model_name: no route named {shown(error.name)}"
        if isinstance(error, InvalidInput):
            return bounded(f"{self.field_name(error.field)}: {error.reason}")
        return error.message


def translate(message: Any, routes: Container[str]) -> Translated:
    """The gateway request for ``message`` (a ``ModelInferRequest``); ``routes`` are the names served.

    Raises InvalidInput, ModelNotFound (a version the route does not have) or
    Unsupported (shared memory) for what the gateway request cannot express.
    """
    request = pb.InferRequest(route=message.model_name, request_id=message.id)
    translated = Translated(request)
    if message.model_name in routes:
        check_version(message.model_version, message.model_name)
    if message.parameters:
        _request_parameters(message.parameters, translated)
    raw = list(message.raw_input_contents)  # each read of a bytes field copies it: read once
    if raw and len(raw) != len(message.inputs):
        raise InvalidInput(
            "raw_input_contents",
            f"has {len(raw)} entries for {len(message.inputs)} inputs: send one per input, in the order of inputs",
        )
    for index, tensor in enumerate(message.inputs):
        if tensor.parameters:
            for name in SHARED_MEMORY:
                if name in tensor.parameters:
                    raise Unsupported(f"inputs[{tensor.name}].parameters[{name}]: {SHARED_MEMORY_UNSUPPORTED}")
        if raw:
            if tensor.HasField("contents") and tensor.contents.ListFields():
                raise InvalidInput(
                    f"inputs[{tensor.name}].contents",
                    "must be empty when raw_input_contents is used (one or the other, for every input)",
                )
            data = raw[index]
            translated.sources.setdefault(tensor.name, f"raw_input_contents[{index}]")
        else:
            data = _typed_bytes(tensor)
            translated.sources.setdefault(tensor.name, f"inputs[{tensor.name}].contents")
        request.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape, raw_data=data)
    for index, wanted in enumerate(message.outputs):
        request.outputs.append(wanted.name)
        parameters = wanted.parameters
        if not parameters:
            continue
        for name in SHARED_MEMORY:
            if name in parameters:
                raise Unsupported(f"outputs[{index}].parameters[{name}]: {SHARED_MEMORY_UNSUPPORTED}")
        if CLASSIFICATION in parameters:
            count = _int_parameter(parameters[CLASSIFICATION], f"outputs[{index}].parameters[{CLASSIFICATION}]")
            if count > 0:
                translated.classes[wanted.name] = count
    return translated


def _kind(parameter: Any) -> str:
    return str(parameter.WhichOneof("parameter_choice") or "nothing")


def _int_parameter(parameter: Any, where: str) -> int:
    kind = _kind(parameter)
    if kind not in ("int64_param", "uint64_param"):
        raise InvalidInput(where, f"must be an int64_param, got {kind}")
    value: int = getattr(parameter, kind)
    if value < 0:
        raise InvalidInput(where, f"must be >= 0, got {value}")
    return value


def _request_parameters(parameters: Any, translated: Translated) -> None:
    """Fills the gateway fields the parameters name; Triton's other parameters (priority, timeout, sequences on a
    model without sequence batching, custom ones) change nothing for a route, as on such a Triton model."""
    request = translated.request
    typed = ((BYPASS_CACHE, "bool_param"), (DATA_KEY, "string_param"), (EMPTY_FINAL_RESPONSE, "bool_param"))
    for key, expected in typed:
        if key not in parameters:
            continue
        parameter = parameters[key]
        if _kind(parameter) != expected:
            raise InvalidInput(f"parameters[{key}]", f"must be a {expected}, got {_kind(parameter)}")
        if key != EMPTY_FINAL_RESPONSE:  # every stream answer is final and says so, asked or not
            setattr(request, key, getattr(parameter, expected))
    if MODEL_VERSIONS in parameters:
        parameter = parameters[MODEL_VERSIONS]
        where = f"parameters[{MODEL_VERSIONS}]"
        if _kind(parameter) != "string_param":
            raise InvalidInput(where, f"must be a string_param, got {_kind(parameter)}")
        for item in filter(None, (part.strip() for part in parameter.string_param.split(","))):
            model, sep, version = item.partition("=")
            if not sep or not model.strip():
                raise InvalidInput(where, f"expected model=version[,model=version...], got {item!r}")
            request.model_versions[model.strip()] = version.strip()


def _typed_bytes(tensor: Any) -> bytes:
    """The wire bytes of an input sent in typed ``contents`` (empty when it has none)."""
    present = [descriptor.name for descriptor, _ in tensor.contents.ListFields()] if tensor.HasField("contents") else []
    if not present:
        return b""
    where = f"inputs[{tensor.name}].contents"
    typed = _TYPED.get(tensor.datatype)
    if typed is None:
        if tensor.datatype in DATATYPES:  # FP16: the protocol has no typed field for it
            raise InvalidInput(where, f"{tensor.datatype} has no typed contents; send it in raw_input_contents")
        return b""  # an unknown datatype: validation names it
    expected, dtype = typed
    if present != [expected]:
        others = ", ".join(name for name in present if name != expected) or expected
        raise InvalidInput(where, f"holds {others}; a {tensor.datatype} input takes {expected}")
    values = getattr(tensor.contents, expected)
    if tensor.datatype == "BYTES":
        return encode_bytes(np.array(list(values), dtype=np.object_))
    array: npt.NDArray[Any] = np.array(values, dtype=np.int64 if tensor.datatype in _NARROW_INTS else dtype)
    if tensor.datatype in _NARROW_INTS:
        info = np.iinfo(dtype)
        outside = np.flatnonzero((array < info.min) | (array > info.max))
        if outside.size:
            at = int(outside[0])
            raise InvalidInput(f"{where}.{expected}[{at}]", f"{int(array[at])} is out of range for {tensor.datatype}")
        array = array.astype(dtype)
    return array.tobytes()


def check_classes(translated: Translated, outputs: Sequence[TensorSpec]) -> None:
    """InvalidInput when ``classification`` is asked of a route output that is not numeric (before any backend
    call; an unknown output is left to validation)."""
    datatypes = {spec.name: spec.datatype for spec in outputs}
    for index, name in enumerate(translated.request.outputs):
        if name in translated.classes and datatypes.get(name) == "BYTES":
            raise InvalidInput(
                f"outputs[{index}].parameters[{CLASSIFICATION}]",
                f"classification needs a numeric output, {name!r} is BYTES",
            )


def infer_response(translated: Translated, response: pb.InferResponse, *, batched: bool) -> Any:
    """The ``ModelInferResponse`` for the gateway's answer; ``batched``: the route's tensors have a batch dimension.

    Outputs with a ``classification`` count are replaced by their top classes.
    """
    outputs, contents = [], []
    for tensor in response.outputs:
        count = translated.classes.get(tensor.name)
        if count is not None:
            tensor = classify(tensor, count, batched=batched)
        outputs.append(_OUTPUT(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape))
        contents.append(tensor.raw_data)
    parameters = {}
    if response.cached:
        parameters[CACHED] = service_pb2.InferParameter(bool_param=True)
    if response.models:
        models = ",".join(f"{m.name}={m.version}" for m in response.models)
        parameters[MODELS] = service_pb2.InferParameter(string_param=models)
    if response.missing:
        missing = ",".join(f"{m.branch}={_code_name(m.status.code)}" for m in response.missing)
        parameters[MISSING] = service_pb2.InferParameter(string_param=missing)
    answer = service_pb2.ModelInferResponse(
        model_name=response.route,
        model_version=ROUTE_VERSION,
        id=response.request_id,
        outputs=outputs,
        raw_output_contents=contents,
        parameters=parameters,
    )
    return answer


_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def _code_name(number: int) -> str:
    return _CODE_NAMES.get(number, str(number))


def classify(tensor: pb.Tensor, count: int, *, batched: bool) -> pb.Tensor:
    """Triton's classification extension: the ``count`` largest values of each batch row (of the whole tensor
    when not ``batched``) as BYTES ``"value:index"``, largest first, value as C's ``%f``."""
    dtype = DATATYPES.get(tensor.datatype)
    if dtype is None or tensor.datatype == "BYTES":
        raise InvalidInput(
            f"outputs[{tensor.name}].parameters[{CLASSIFICATION}]",
            f"classification needs a numeric output, {tensor.name!r} is {tensor.datatype}",
        )
    shape = [int(d) for d in tensor.shape]
    values = np.frombuffer(tensor.raw_data, dtype=dtype)
    rows = values.reshape(shape[0], -1) if batched and shape else values.reshape(1, -1)
    keep = min(count, rows.shape[1])
    order = np.argsort(-rows.astype(np.float64), axis=1, kind="stable")[:, :keep]
    labels = np.array(
        [f"{float(row[i]):f}:{int(i)}".encode() for row, indices in zip(rows, order, strict=True) for i in indices],
        dtype=np.object_,
    )
    out_shape = [shape[0], keep] if batched and shape else [keep]
    return pb.Tensor(name=tensor.name, datatype="BYTES", shape=out_shape, raw_data=encode_bytes(labels))
