"""Request validation against a route's declared inputs.

Runs before any backend call and reads only shapes, datatypes and byte
lengths; it decodes numeric data only for a route that refuses non-finite
floats (``allow_non_finite = false``). Every failure is an
``InvalidInput(field, reason)`` whose field is a path into the request
(``inputs[image].shape[1]``), so a client knows exactly what to fix.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from switchyard.proxy.client_text import MAX_SHOWN, escaped, shown
from switchyard.proxy.errors import InvalidInput
from switchyard.proxy.tensor_spec import TensorSpec
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1.tensors import DATATYPES, TensorDecodeError, decode_bytes, element_count, itemsize

_VERSION = re.compile(r"^[0-9]+$")
MAX_REQUEST_ID_LENGTH = 128
"""Bytes (UTF-8) of a request id; its characters must be printable."""
_FLOATS: dict[str, np.dtype[Any]] = {"FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}


class RequestChecker:
    """Checks requests for one route, with what it derives from the route's specs worked out once.

    :meth:`check` raises InvalidInput for the first problem found in a request.
    With ``allow_non_finite=False``, FP16/FP32/FP64 inputs holding NaN or
    +-Inf are refused, naming the input and the first such element.
    """

    __slots__ = (
        "_allow_non_finite",
        "_by_name",
        "_known_outputs",
        "_max_batch_size",
        "_max_request_bytes",
        "_models",
        "_single",
    )

    def __init__(
        self,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[TensorSpec],
        *,
        models: Sequence[str],
        max_batch_size: int,
        max_request_bytes: int,
        allow_non_finite: bool = True,
    ) -> None:
        # name -> (spec, rank, its fixed dimensions as (axis, size), bytes per element; 0: BYTES)
        self._by_name: dict[str, tuple[TensorSpec, int, tuple[tuple[int, int], ...], int]] = {
            spec.name: (
                spec,
                len(spec.shape),
                tuple((axis, want) for axis, want in enumerate(spec.shape) if want != -1),
                itemsize(spec.datatype) if spec.datatype in DATATYPES else 0,
            )
            for spec in inputs
        }
        self._single = len(self._by_name) == 1 and allow_non_finite
        """Whether a one-input request may take :meth:`_single_fits`, the short way."""
        self._known_outputs = frozenset(spec.name for spec in outputs)
        self._models = tuple(models)
        self._max_batch_size = max_batch_size
        self._max_request_bytes = max_request_bytes
        self._allow_non_finite = allow_non_finite

    def check(self, request: pb.InferRequest) -> int:
        """Raises InvalidInput for the first problem found in ``request`` (see the class docstring).

        Returns the request's rows: its first input's leading dimension (0 when that input has none).
        """
        request_id = request.request_id
        if request_id and not (
            len(request_id) <= MAX_REQUEST_ID_LENGTH and request_id.isascii() and request_id.isprintable()
        ):
            _check_request_id(request_id)
        data_key = request.data_key
        if len(data_key) > MAX_REQUEST_ID_LENGTH:
            raise InvalidInput("data_key", f"is {len(data_key)} characters long, at most {MAX_REQUEST_ID_LENGTH}")
        tensors = request.inputs
        rows = self._single_fits(tensors[0]) if self._single and len(tensors) == 1 else -1
        if rows < 0:  # not the short way: every check, in order, naming the first problem
            # Each read of a protobuf bytes field copies it (upb): read every payload once.
            payloads = [t.raw_data for t in tensors]
            total = sum(map(len, payloads))
            if total > self._max_request_bytes:
                raise InvalidInput(
                    "inputs", f"carry {total} bytes, this route accepts at most {self._max_request_bytes}"
                )
            rows = self._check_inputs(tensors, payloads)
            if not self._allow_non_finite:
                for tensor, payload in zip(tensors, payloads, strict=True):
                    _check_finite(tensor, payload)
        names = request.outputs
        if names:
            known_outputs = self._known_outputs
            seen: set[str] = set()
            for i, name in enumerate(names):
                if name not in known_outputs:
                    raise InvalidInput(
                        f"outputs[{i}]",
                        f"unknown output {shown(name)} (route outputs: {', '.join(sorted(known_outputs))})",
                    )
                if name in seen:
                    raise InvalidInput(f"outputs[{i}]", f"output {name!r} is requested twice")
                seen.add(name)
        pins = request.model_versions
        if pins:
            _check_versions(pins, self._models)
        return rows

    def _single_fits(self, tensor: pb.Tensor) -> int:
        """The rows of a route's one input when it is exactly as its spec says; -1 when anything is off.

        The short way for the common request (one numeric input, as declared):
        the same conditions as the full checks, decided without naming a problem
        (on -1 the full checks run and name it).
        """
        known = self._by_name.get(tensor.name)
        if known is None:
            return -1
        spec, rank, fixed, size = known
        if not size or tensor.datatype != spec.datatype:
            return -1
        shape = tuple(tensor.shape)
        if len(shape) != rank or (shape and min(shape) < 0):
            return -1
        for axis, want in fixed:
            if shape[axis] != want:
                return -1
        rows = shape[0] if shape else 0
        if self._max_batch_size > 0 and not 0 < rows <= self._max_batch_size:
            return -1
        nbytes = len(tensor.raw_data)
        if nbytes > self._max_request_bytes or nbytes != math.prod(shape) * size:
            return -1
        return rows

    def _check_inputs(self, tensors: Sequence[pb.Tensor], payloads: Sequence[bytes]) -> int:
        """Checks each input against its spec; returns the first input's leading dimension (0: none)."""
        by_name = self._by_name
        max_batch_size = self._max_batch_size
        seen: set[str] = set()
        batch: int | None = None
        batch_from = ""
        rows = -1
        for tensor, payload in zip(tensors, payloads, strict=True):
            name = tensor.name
            known = by_name.get(name)
            if known is None:
                field = f"inputs[{escaped(name, MAX_SHOWN)}]" if name else "inputs[]"
                raise InvalidInput(
                    f"{field}.name", f"unknown input {shown(name)} (route inputs: {', '.join(sorted(by_name))})"
                )
            if name in seen:
                raise InvalidInput(f"inputs[{name}].name", "input is given twice")
            seen.add(name)
            spec, rank, fixed, size = known
            shape = tuple(tensor.shape)
            fits = tensor.datatype == spec.datatype and len(shape) == rank and (not shape or min(shape) >= 0)
            if fits:
                for axis, want in fixed:
                    if shape[axis] != want:
                        fits = False
                        break
            if not fits:
                _check_shape(tensor, spec, f"inputs[{name}]")  # raises, naming the problem
            if rows < 0:
                rows = shape[0] if shape else 0
            if max_batch_size > 0:
                rows = int(shape[0])
                if rows == 0:
                    raise InvalidInput(f"inputs[{name}].shape[0]", "batch is empty")
                if rows > max_batch_size:
                    raise InvalidInput(
                        f"inputs[{name}].shape[0]", f"batch of {rows} exceeds this route's maximum of {max_batch_size}"
                    )
                if batch is not None and rows != batch:
                    raise InvalidInput(
                        f"inputs[{name}].shape[0]", f"batch of {rows} differs from {batch_from}'s batch of {batch}"
                    )
                batch, batch_from = rows, f"inputs[{name}]"
            if size == 0 or len(payload) != math.prod(shape) * size:
                _check_bytes(tensor, payload, f"inputs[{name}]")  # BYTES, or a wrong length: raises if bad
        if len(seen) != len(by_name):
            missing = [name for name in by_name if name not in seen]
            raise InvalidInput(f"inputs[{missing[0]}]", "required input is missing")
        return max(rows, 0)


def _check_request_id(request_id: str) -> None:
    """At most ``MAX_REQUEST_ID_LENGTH`` bytes (UTF-8), printable: it is logged, traced and echoed back."""
    size = len(request_id.encode())
    if size > MAX_REQUEST_ID_LENGTH:
        raise InvalidInput("request_id", f"is {size} bytes long, at most {MAX_REQUEST_ID_LENGTH}")
    if not request_id.isprintable():
        index = next(i for i, c in enumerate(request_id) if not c.isprintable())
        raise InvalidInput(
            "request_id", f"character {index} ({request_id[index]!r}) is not printable; use printable characters"
        )


def _check_versions(pins: Mapping[str, str], models: Sequence[str]) -> None:
    for model, version in pins.items():
        if model not in models:
            raise InvalidInput(
                f"model_versions[{escaped(model, MAX_SHOWN)}]",
                f"this route does not use model {shown(model)} (uses: {', '.join(models)})",
            )
        if not _VERSION.match(version):
            raise InvalidInput(f"model_versions[{model}]", f"version must be a positive integer, got {shown(version)}")


def _check_shape(tensor: pb.Tensor, spec: TensorSpec, field: str) -> None:
    if tensor.datatype not in DATATYPES:
        raise InvalidInput(f"{field}.datatype", f"unknown datatype {tensor.datatype!r}")
    if tensor.datatype != spec.datatype:
        raise InvalidInput(f"{field}.datatype", f"expected {spec.datatype}, got {tensor.datatype}")
    shape = list(tensor.shape)
    if len(shape) != len(spec.shape):
        raise InvalidInput(
            f"{field}.shape", f"expected rank {len(spec.shape)} {list(spec.shape)}, got rank {len(shape)} {shape}"
        )
    for axis, (got, want) in enumerate(zip(shape, spec.shape, strict=True)):
        if got < 0:
            raise InvalidInput(f"{field}.shape[{axis}]", f"dimension must be >= 0, got {got}")
        if want != -1 and got != want:
            raise InvalidInput(f"{field}.shape[{axis}]", f"expected {want}, got {got} (route shape {list(spec.shape)})")


def _check_bytes(tensor: pb.Tensor, payload: bytes, field: str) -> None:
    shape = list(tensor.shape)
    count = element_count(shape)
    if tensor.datatype == "BYTES":
        try:
            decode_bytes(payload, count)
        except TensorDecodeError as exc:
            raise InvalidInput(f"{field}.raw_data", str(exc)) from None
        return
    expected = count * itemsize(tensor.datatype)
    if len(payload) != expected:
        raise InvalidInput(
            f"{field}.raw_data",
            f"has {len(payload)} bytes, shape {shape} of {tensor.datatype} needs {expected}",
        )


def _check_finite(tensor: pb.Tensor, payload: bytes) -> None:
    """InvalidInput naming the first NaN or +-Inf element of a float tensor (whose length is already checked)."""
    dtype = _FLOATS.get(tensor.datatype)
    if dtype is None or not payload:
        return
    values = np.frombuffer(payload, dtype=dtype)
    finite = np.isfinite(values)
    if finite.all():
        return
    index = int(np.argmin(finite))
    raise InvalidInput(
        f"inputs[{tensor.name}]", f"element {index} is {values[index]}; this route accepts finite numbers only"
    )
