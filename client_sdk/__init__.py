"""Switchyard's Python SDK: call a Switchyard gateway with NumPy in and out.

``Client`` (blocking) and ``AsyncClient`` (asyncio) share one API: ``routes()``,
``route(name)``, ``infer(route, inputs)``, ``infer_stream(requests)`` and
``infer_progressive(route, inputs)`` (one ``ProgressiveResult`` per stage of a
progressive route, as each arrives), and asynchronous jobs: ``submit_job``,
``get_job``, ``watch_job``, ``cancel_job``, ``list_jobs`` and ``wait`` (a
:class:`Job` with its ``InferResult`` once it succeeded).
``Tls`` carries TLS settings (CA, client certificate and key) as plain data.
Failures raise ``SwitchyardError`` subclasses named for their gRPC status;
idempotent calls are retried on ``UNAVAILABLE`` by ``RetryPolicy``. The
``tensors`` codec is exported for code that builds contract messages itself.
Generated contract stubs live in ``switchyard.v1``.
"""

from __future__ import annotations

from .aio import AsyncClient
from .errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    SwitchyardError,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    Unknown,
    error_from,
)
from .jobs import Job, JobPage
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
from .retry import RetryPolicy
from .sync import Client
from .tensors import DATATYPES, TensorDecodeError, datatype_of, from_numpy, to_numpy
from .tls import Tls

__all__ = [
    "DATATYPES",
    "Aborted",
    "AlreadyExists",
    "AsyncClient",
    "Cancelled",
    "Client",
    "DataLoss",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InferResult",
    "Internal",
    "InvalidArgument",
    "Job",
    "JobPage",
    "ModelRef",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ProgressiveResult",
    "ResourceExhausted",
    "RetryPolicy",
    "RouteInfo",
    "RouteStep",
    "StreamRequest",
    "SwitchyardError",
    "TensorDecodeError",
    "TensorSpec",
    "Tls",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "datatype_of",
    "error_from",
    "from_numpy",
    "new_request_id",
    "to_numpy",
]
