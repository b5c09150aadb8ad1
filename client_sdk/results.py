"""What the SDK's calls take and return, as plain Python values.

Owns :class:`InferResult` (decoded outputs plus the answer's route, request id,
models, cache flag and missing parallel branches), :class:`ProgressiveResult`
(one stage's answer or error on a progressive call), the route description
types (:class:`RouteInfo`, :class:`RouteStep`, :class:`TensorSpec`,
:class:`ModelRef`) and :class:`StreamRequest`, one request to send on a
stream. It holds no conversion code: ``messages`` builds these from and to the
contract's messages.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from .errors import SwitchyardError


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
class RouteStep:
    """One serial step, parallel branch or progressive stage of a composite route."""

    name: str
    """Name from the gateway's configuration (a progressive stage's name is ``ProgressiveResult.stage``)."""
    models: list[ModelRef]
    """Models this step may call (several when it picks one from an earlier result)."""


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
    steps: list[RouteStep] = field(default_factory=list)
    """Serial steps, parallel branches or progressive stages, in order; empty for a single-model route."""
    cached: bool = False
    """True when the route's answers may come from the prediction cache."""


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
    missing: dict[str, SwitchyardError] = field(default_factory=dict)
    """Parallel routes with the ``partial`` policy: branch name -> why that branch's outputs are absent
    (``DeadlineExceeded`` when it was late). Empty when every branch answered."""

    def __getitem__(self, name: str) -> npt.NDArray[np.generic]:
        try:
            return self.outputs[name]
        except KeyError:
            raise KeyError(f"no output {name!r}; the answer has {sorted(self.outputs)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self.outputs

    def __iter__(self) -> Iterator[str]:
        return iter(self.outputs)


@dataclass(frozen=True, eq=False)
class ProgressiveResult:
    """One message of ``infer_progressive``: a stage's answer, or why that stage failed.

    Exactly one of ``result`` and ``error`` is set. A failed stage does not end
    the call: later stages may still answer. ``final`` marks the last message.
    """

    stage: str
    """Name of the stage that produced this message (e.g. "fast", "accurate"); the route's name on
    routes that are not progressive, which answer with one final message."""
    stage_index: int
    """Position of the stage in the route's declaration, from 0."""
    final: bool
    """True on the last message: no better answer follows."""
    result: InferResult | None = None
    """The stage's answer, when it succeeded."""
    error: SwitchyardError | None = None
    """The stage's failure (with the request's id), when it failed."""

    @property
    def ok(self) -> bool:
        """True when this stage answered (``result`` is set)."""
        return self.error is None and self.result is not None


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
    data_key: str | None = None
    """Key naming these inputs in the route's data cache (up to 128 characters); see ``infer``."""
