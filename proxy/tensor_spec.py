"""Tensor specifications: name, datatype and shape (``-1`` = any size).

Routes describe their inputs and outputs with these; validation checks
requests against them and ops compute the specs they produce, so a route's
chain of ops is type-checked at start-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from switchyard.v1 import gateway_pb2 as pb


class TensorLike(Protocol):
    """A tensor as the backend sends it: a ``switchyard.v1.Tensor`` message, or a tensor left on the GPU."""

    @property
    def name(self) -> str: ...

    @property
    def datatype(self) -> str: ...

    @property
    def shape(self) -> Sequence[int]: ...

    @property
    def raw_data(self) -> bytes: ...


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]

    def renamed(self, name: str) -> TensorSpec:
        return TensorSpec(name, self.datatype, self.shape)

    def to_proto(self) -> pb.TensorSpec:
        return pb.TensorSpec(name=self.name, datatype=self.datatype, shape=list(self.shape))

    def accepts(self, other: TensorSpec) -> bool:
        """Whether every tensor matching ``other`` also matches this spec."""
        if self.datatype != other.datatype or len(self.shape) != len(other.shape):
            return False
        return all(mine == -1 or mine == theirs for mine, theirs in zip(self.shape, other.shape, strict=True))

    def __str__(self) -> str:
        return f"{self.name} {self.datatype}{list(self.shape)}"
