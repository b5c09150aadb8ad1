from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RouteKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROUTE_KIND_UNSPECIFIED: _ClassVar[RouteKind]
    ROUTE_KIND_SINGLE: _ClassVar[RouteKind]
    ROUTE_KIND_SERIAL: _ClassVar[RouteKind]
    ROUTE_KIND_PARALLEL: _ClassVar[RouteKind]
    ROUTE_KIND_PROGRESSIVE: _ClassVar[RouteKind]
ROUTE_KIND_UNSPECIFIED: RouteKind
ROUTE_KIND_SINGLE: RouteKind
ROUTE_KIND_SERIAL: RouteKind
ROUTE_KIND_PARALLEL: RouteKind
ROUTE_KIND_PROGRESSIVE: RouteKind

class Tensor(_message.Message):
    __slots__ = ("name", "datatype", "shape", "raw_data")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATATYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    RAW_DATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    datatype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    raw_data: bytes
    def __init__(self, name: _Optional[str] = ..., datatype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., raw_data: _Optional[bytes] = ...) -> None: ...

class InferRequest(_message.Message):
    __slots__ = ("route", "request_id", "inputs", "outputs", "model_versions", "bypass_cache", "data_key", "timeout_ms", "cancel")
    class ModelVersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    BYPASS_CACHE_FIELD_NUMBER: _ClassVar[int]
    DATA_KEY_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    route: str
    request_id: str
    inputs: _containers.RepeatedCompositeFieldContainer[Tensor]
    outputs: _containers.RepeatedScalarFieldContainer[str]
    model_versions: _containers.ScalarMap[str, str]
    bypass_cache: bool
    data_key: str
    timeout_ms: int
    cancel: bool
    def __init__(self, route: _Optional[str] = ..., request_id: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., outputs: _Optional[_Iterable[str]] = ..., model_versions: _Optional[_Mapping[str, str]] = ..., bypass_cache: _Optional[bool] = ..., data_key: _Optional[str] = ..., timeout_ms: _Optional[int] = ..., cancel: _Optional[bool] = ...) -> None: ...

class ModelRef(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class InferResponse(_message.Message):
    __slots__ = ("route", "request_id", "outputs", "models", "cached", "missing")
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    route: str
    request_id: str
    outputs: _containers.RepeatedCompositeFieldContainer[Tensor]
    models: _containers.RepeatedCompositeFieldContainer[ModelRef]
    cached: bool
    missing: _containers.RepeatedCompositeFieldContainer[BranchError]
    def __init__(self, route: _Optional[str] = ..., request_id: _Optional[str] = ..., outputs: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., models: _Optional[_Iterable[_Union[ModelRef, _Mapping]]] = ..., cached: _Optional[bool] = ..., missing: _Optional[_Iterable[_Union[BranchError, _Mapping]]] = ...) -> None: ...

class BranchError(_message.Message):
    __slots__ = ("branch", "status")
    BRANCH_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    branch: str
    status: Status
    def __init__(self, branch: _Optional[str] = ..., status: _Optional[_Union[Status, _Mapping]] = ...) -> None: ...

class ProgressiveResponse(_message.Message):
    __slots__ = ("stage", "stage_index", "final", "response", "error")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    STAGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    stage: str
    stage_index: int
    final: bool
    response: InferResponse
    error: Status
    def __init__(self, stage: _Optional[str] = ..., stage_index: _Optional[int] = ..., final: _Optional[bool] = ..., response: _Optional[_Union[InferResponse, _Mapping]] = ..., error: _Optional[_Union[Status, _Mapping]] = ...) -> None: ...

class Status(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class StreamInferResponse(_message.Message):
    __slots__ = ("request_id", "response", "error")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    response: InferResponse
    error: Status
    def __init__(self, request_id: _Optional[str] = ..., response: _Optional[_Union[InferResponse, _Mapping]] = ..., error: _Optional[_Union[Status, _Mapping]] = ...) -> None: ...

class ListRoutesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListRoutesResponse(_message.Message):
    __slots__ = ("routes",)
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    routes: _containers.RepeatedCompositeFieldContainer[RouteInfo]
    def __init__(self, routes: _Optional[_Iterable[_Union[RouteInfo, _Mapping]]] = ...) -> None: ...

class GetRouteRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class TensorSpec(_message.Message):
    __slots__ = ("name", "datatype", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATATYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    datatype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., datatype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class RouteInfo(_message.Message):
    __slots__ = ("name", "kind", "description", "inputs", "outputs", "models", "max_batch_size", "steps", "cached")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: RouteKind
    description: str
    inputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    outputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    models: _containers.RepeatedCompositeFieldContainer[ModelRef]
    max_batch_size: int
    steps: _containers.RepeatedCompositeFieldContainer[RouteStep]
    cached: bool
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[RouteKind, str]] = ..., description: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., models: _Optional[_Iterable[_Union[ModelRef, _Mapping]]] = ..., max_batch_size: _Optional[int] = ..., steps: _Optional[_Iterable[_Union[RouteStep, _Mapping]]] = ..., cached: _Optional[bool] = ...) -> None: ...

class RouteStep(_message.Message):
    __slots__ = ("name", "models")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    name: str
    models: _containers.RepeatedCompositeFieldContainer[ModelRef]
    def __init__(self, name: _Optional[str] = ..., models: _Optional[_Iterable[_Union[ModelRef, _Mapping]]] = ...) -> None: ...
