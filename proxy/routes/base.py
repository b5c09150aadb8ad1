"""What every route kind shares: its description and the op-chain helpers.

A route kind (``single`` here; serial, parallel and progressive later) turns
a validated request into a response. This module owns the common contract
(``Route``), the check that an op chain fits between the specs a client sends
and the specs a model takes, and running ops on the array module off the
event loop when the tensors are large.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel

from switchyard.proxy.backend.cuda_shared_memory import DeviceTensor, as_message
from switchyard.proxy.backend.triton import ModelInfo
from switchyard.proxy.cache import DATA_PREFIX, Cache, cache_key
from switchyard.proxy.errors import ConfigError
from switchyard.proxy.lifecycle.context import CallContext
from switchyard.proxy.ops import Op, OpTypeError, build_op
from switchyard.proxy.ops.array_module import array_module, to_device, to_host
from switchyard.proxy.routes.schema import OpConfig, RouteConfigBase, TensorSpecConfig
from switchyard.proxy.tensor_spec import TensorLike, TensorSpec
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1.tensors import datatype_of, from_numpy, to_numpy

# Above this many input bytes, ops run in a worker thread so one large
# request cannot stall every other call on the event loop.
OFFLOAD_BYTES = 256 * 1024

T = TypeVar("T")


@functools.cache
def _offload_pool() -> concurrent.futures.ThreadPoolExecutor:
    """The threads large pre/post-processing runs on: one per CPU this process may use.

    asyncio's default pool has CPUs + 4 threads; with more threads than CPUs
    the image work gains nothing and the event loop waits longer for the GIL.
    On 2 CPUs, with 8 clients sending 1.6 MB PNG batches, this pool kept the
    throughput (435-445 calls against 367-441 in the same time) and cut
    health-check latency under that load from p50 18-22 / p99 37-61 ms to
    p50 4.4-4.8 / p99 16-17 ms (tests/integration/test_responsiveness.py -s).
    """
    return concurrent.futures.ThreadPoolExecutor(max_workers=usable_cpus(), thread_name_prefix="switchyard-ops")


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


@dataclass(frozen=True)
class RouteDescription:
    name: str
    kind: pb.RouteKind
    description: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    models: tuple[tuple[str, str], ...]
    max_batch_size: int
    max_request_bytes: int
    timeout_s: float | None
    steps: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    cached: bool = False
    max_inflight: int | None = None
    """Requests of this route in flight at once before more are shed; None: only the process's bound."""

    def to_proto(self) -> pb.RouteInfo:
        return pb.RouteInfo(
            name=self.name,
            kind=self.kind,
            description=self.description,
            inputs=[s.to_proto() for s in self.inputs],
            outputs=[s.to_proto() for s in self.outputs],
            models=[pb.ModelRef(name=n, version=v) for n, v in self.models],
            max_batch_size=self.max_batch_size,
            steps=[
                pb.RouteStep(name=step, models=[pb.ModelRef(name=n, version=v) for n, v in models])
                for step, models in self.steps
            ],
            cached=self.cached,
        )

    @property
    def model_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.models)


class Route(ABC):
    """A route kind turns a validated request into a response; its constructor type-checks it against Triton."""

    description: RouteDescription

    def __init__(self, config: RouteConfigBase) -> None:
        self.cache_ttl_s: float | None = config.cache.ttl_s if config.cache is not None else None
        """Seconds answers stay in the prediction cache; None: the route is not cached."""
        self.coalesce = config.coalesce
        """Whether identical requests in flight at once share one backend call."""
        self.fingerprint = fingerprint_of(config)
        """Everything besides the inputs that decides an answer (models, versions, op parameters)."""
        self.allow_non_finite = config.allow_non_finite
        """Whether float inputs may hold NaN or +-Inf; False: such requests are INVALID_ARGUMENT."""
        self.bounded_by_backend = False
        """Whether the route's only wait is a backend call that ends at the deadline on its own (see DataPlane)."""

    @property
    def name(self) -> str:
        return self.description.name

    @abstractmethod
    async def infer(self, request: pb.InferRequest, ctx: CallContext) -> pb.InferResponse:
        """Answers a request that has passed validation."""

    def answer_key_part(self, request: pb.InferRequest) -> str:
        """The fingerprint plus the request's version pins: the non-input part of a cache key."""
        pins = ",".join(f"{m}={v}" for m, v in sorted(request.model_versions.items()))
        return f"{self.fingerprint}|{pins}"


def fingerprint_of(config: BaseModel) -> str:
    """A stable text of a route's configuration (models, versions, ops and their parameters)."""
    return config.model_dump_json(exclude={"description", "timeout_s", "max_request_bytes", "max_inflight", "batching"})


class Preprocessor:
    """Runs a route's pre ops, reusing earlier results from the data cache when one is configured.

    The data cache holds pre-processed tensors under a hash of the route's
    pre-op configuration and the input bytes, or under the client's
    ``data_key`` when the request has one.
    """

    def __init__(
        self,
        route: str,
        ops: Sequence[Op],
        keep: Sequence[str],
        cache: Cache | None,
        ttl_s: float | None = None,
        *,
        on_device: bool = False,
    ) -> None:
        self._route = route
        self._ops = list(ops)
        self._keep = list(keep)
        self._cache = cache if ops else None
        self._ttl_s = ttl_s
        self._on_device = on_device
        self._config = "|".join(op.model_dump_json() + op.name for op in ops) + "|" + ",".join(keep)

    async def run(self, request: pb.InferRequest, ctx: CallContext) -> Sequence[TensorLike]:
        if not self._ops:
            return list(request.inputs)
        key = None
        if self._cache is not None:
            if request.data_key:
                key = cache_key(self._route, f"key|{self._config}|{request.data_key}", [], prefix=DATA_PREFIX)
            else:
                key = cache_key(self._route, self._config, request.inputs, prefix=DATA_PREFIX)
            stored = await self._cache.get(key, route=self._route, timeout_s=ctx.remaining())
            if stored is not None:
                return list(pb.InferResponse.FromString(stored).outputs)
        with ctx.stage("pre"):
            if self._on_device:
                tensors = await run_ops_on_device(self._ops, request.inputs, self._keep)
            else:
                tensors = list(await run_ops(self._ops, request.inputs, self._keep))
        if key is not None and self._cache is not None:
            messages = [as_message(t) for t in tensors]
            await self._cache.set(key, pb.InferResponse(outputs=messages).SerializeToString(), self._ttl_s)
        return tensors


def build_ops(configs: Sequence[OpConfig], where: str) -> list[Op]:
    """The ops of a ``pre`` or ``post`` list; ConfigError names ``where[i]`` for a bad one."""
    return [build_op(o.op, o.params(), f"{where}[{i}]") for i, o in enumerate(configs)]


def check_version(model: ModelInfo, version: str, where: str) -> None:
    """A pinned version must be one Triton has ready ("" follows the latest)."""
    if version and version not in model.versions:
        raise ConfigError(
            f"{where}: model {model.name!r} has no ready version {version!r} "
            f"(ready: {', '.join(model.versions) or 'none'})"
        )


def declared_inputs(
    declared: Sequence[TensorSpecConfig] | None,
    defaults: Sequence[TensorSpec],
    where: str,
    *,
    has_pre: bool,
    batch_dim: bool = False,
) -> list[TensorSpec]:
    """What clients send: the declared ``inputs`` (the first dimension -1 when ``batch_dim``), else ``defaults``."""
    if declared is None:
        if has_pre:
            raise ConfigError(f"{where}.inputs: a route with pre-processing ops must declare its inputs")
        return list(defaults)
    specs = [TensorSpec(i.name, i.datatype, tuple(i.shape)) for i in declared]
    if batch_dim:
        for i, spec in enumerate(specs):
            if spec.shape[0] != -1:
                raise ConfigError(
                    f"{where}.inputs[{i}].shape: first dimension must be -1 (the batch); got {list(spec.shape)}"
                )
    return specs


def chain_specs(ops: Sequence[Op], specs: Sequence[TensorSpec], where: str) -> dict[str, TensorSpec]:
    """Specs after running ``ops`` on ``specs``; ConfigError names the op that does not fit."""
    current = {s.name: s for s in specs}
    for i, op in enumerate(ops):
        try:
            current = op.output_specs(current)
        except OpTypeError as exc:
            raise ConfigError(f"{where}[{i}] ({op.name}): {exc}") from None
    return current


async def run_ops(ops: Sequence[Op], tensors: Sequence[pb.Tensor], keep: Sequence[str]) -> list[pb.Tensor]:
    """Decodes ``tensors``, runs ``ops`` on the array module and encodes the tensors named in ``keep``."""
    return await _offloaded(_run_ops_sync, ops, tensors, keep)


async def run_ops_on_device(ops: Sequence[Op], tensors: Sequence[pb.Tensor], keep: Sequence[str]) -> list[TensorLike]:
    """:func:`run_ops`, but the tensors the ops leave on the GPU stay there, as :class:`DeviceTensor`.

    What a route hands to Triton through CUDA shared memory; on NumPy the same as :func:`run_ops`.
    """
    return await _offloaded(_run_ops_on_device_sync, ops, tensors, keep)


async def _offloaded(run: Callable[..., T], ops: Sequence[Op], tensors: Sequence[pb.Tensor], keep: Sequence[str]) -> T:
    size = sum(len(t.raw_data) for t in tensors)
    if size > OFFLOAD_BYTES:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(_offload_pool(), run, ops, tensors, keep)
    return run(ops, tensors, keep)


def _applied(ops: Sequence[Op], tensors: Sequence[pb.Tensor]) -> tuple[dict[str, Any], ModuleType]:
    xp = array_module()
    arrays = {t.name: to_device(to_numpy(t), xp) for t in tensors}
    for op in ops:
        arrays = op.apply(arrays, xp)
    return arrays, xp


def _run_ops_sync(ops: Sequence[Op], tensors: Sequence[pb.Tensor], keep: Sequence[str]) -> list[pb.Tensor]:
    arrays, _ = _applied(ops, tensors)
    return [from_numpy(name, to_host(arrays[name])) for name in keep]


def _run_ops_on_device_sync(ops: Sequence[Op], tensors: Sequence[pb.Tensor], keep: Sequence[str]) -> list[TensorLike]:
    arrays, xp = _applied(ops, tensors)
    kept: list[TensorLike] = []
    for name in keep:
        array = arrays[name]
        if xp is np or isinstance(array, np.ndarray):  # NumPy, or a BYTES tensor (those stay on the host)
            kept.append(from_numpy(name, to_host(array)))
        else:
            kept.append(DeviceTensor(name, datatype_of(np.empty((0,), dtype=array.dtype)), array))
    return kept
