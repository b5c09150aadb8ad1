"""What every route kind shares: its description and the op-chain helpers.

A route kind (``single`` here; serial, parallel and progressive later) turns
a validated request into a response. This module owns the common contract
(``Route``), the check that an op chain fits between the specs a client sends
and the specs a model takes, and running ops on the array module off the
event loop when the tensors are large.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from switchyard.client.tensors import from_numpy, to_numpy
from switchyard.proxy.context import CallContext
from switchyard.proxy.errors import ConfigError
from switchyard.proxy.ops import Op, OpTypeError
from switchyard.proxy.specs import TensorSpec
from switchyard.proxy.xp import array_module, to_device, to_host
from switchyard.v1 import gateway_pb2 as pb

# Above this many input bytes, ops run in a worker thread so one large
# request cannot stall every other call on the event loop.
OFFLOAD_BYTES = 256 * 1024


@dataclass(frozen=True)
class RouteDescription:
    name: str
    kind: pb.RouteKind.ValueType
    description: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    models: tuple[tuple[str, str], ...]
    max_batch_size: int
    max_request_bytes: int
    timeout_s: float | None

    def to_proto(self) -> pb.RouteInfo:
        return pb.RouteInfo(
            name=self.name,
            kind=self.kind,
            description=self.description,
            inputs=[s.to_proto() for s in self.inputs],
            outputs=[s.to_proto() for s in self.outputs],
            models=[pb.ModelRef(name=n, version=v) for n, v in self.models],
            max_batch_size=self.max_batch_size,
        )

    @property
    def model_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.models)


class Route(ABC):
    description: RouteDescription

    @property
    def name(self) -> str:
        return self.description.name

    @abstractmethod
    async def infer(self, request: pb.InferRequest, ctx: CallContext) -> pb.InferResponse:
        """Answers a request that has passed validation."""


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
    size = sum(len(t.raw_data) for t in tensors)
    if size > OFFLOAD_BYTES:
        return await asyncio.to_thread(_run_ops_sync, ops, tensors, keep)
    return _run_ops_sync(ops, tensors, keep)


def _run_ops_sync(ops: Sequence[Op], tensors: Sequence[pb.Tensor], keep: Sequence[str]) -> list[pb.Tensor]:
    xp = array_module()
    arrays = {t.name: to_device(to_numpy(t), xp) for t in tensors}
    for op in ops:
        arrays = op.apply(arrays, xp)
    return [from_numpy(name, to_host(arrays[name])) for name in keep]
