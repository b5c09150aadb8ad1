"""What the SDK's calls take and return, as plain Python values.

Owns :class:`InferResult` (decoded outputs plus the answer's route, request id,
models and cache flag), the route description types (:class:`RouteInfo`,
:class:`TensorSpec`, :class:`ModelRef`) and :class:`StreamRequest`, one request
to send on a stream. It holds no conversion code: ``messages`` builds these
from and to the contract's messages.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import numpy.typing as npt


def new_request_id() -> str:
    """A fresh request id (32 hex digits)."""
    return uuid.uuid4().hex


class ModelRef(NamedTuple):
    """A model and its version; an empty version in a route means "latest ready"."""

    name: str
    version: str


class TensorSpec(NamedTuple):
    """Name, datatype and shape of a route input or output; -1 marks a variable dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class RouteInfo:
    """Description of one route, as ``routes()`` and ``route(name)`` return it."""

    name: str
    kind: str
    """Serving pattern: "single", "serial", "parallel", "progressive" ("unknown" if newer than this SDK)."""
    description: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    models: list[ModelRef]
    max_batch_size: int
    """Largest first dimension one request may carry; 0 when the route takes no batch dimension."""


@dataclass(frozen=True, eq=False)
class InferResult:
    """The answer to one inference request; ``result["name"]`` is an output array.

    Numeric outputs are read-only views of the received bytes (no copy); call
    ``.copy()`` on one to modify it. BYTES outputs are object arrays of ``bytes``.
    """

    outputs: dict[str, npt.NDArray[np.generic]]
    route: str
    request_id: str
    models: list[ModelRef]
    cached: bool

    def __getitem__(self, name: str) -> npt.NDArray[np.generic]:
        try:
            return self.outputs[name]
        except KeyError:
            raise KeyError(f"no output {name!r}; the answer has {sorted(self.outputs)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self.outputs

    def __iter__(self) -> Iterator[str]:
        return iter(self.outputs)


@dataclass(frozen=True)
class StreamRequest:
    """One request to send on ``infer_stream``.

    ``request_id`` defaults to a fresh id so the caller always knows which
    answer is whose; ids must be unique within one stream.
    """

    route: str
    inputs: Mapping[str, npt.ArrayLike]
    outputs: Sequence[str] | None = None
    request_id: str = field(default_factory=new_request_id)
    model_versions: Mapping[str, str | int] | None = None
    bypass_cache: bool = False
