"""Generic Triton Python-backend model that serves the ``model.onnx`` beside it.

The build copies this file unchanged as ``<model>/1/model.py`` of every bundled
model, so it must stay self-contained: it imports nothing from ``switchyard``.
It owns one dynamic batch's trip through onnxruntime: gather each request's
inputs, run the session once on the concatenated rows, and hand every request
back exactly its own rows, cast to the dtypes the model's ``config.pbtxt``
declares. A request that cannot be served gets its own error response; the
others in the batch are still answered, and ``execute`` never raises. A
model whose config has ``max_batch_size: 0`` has no batch dimension: each
request then runs alone, its inputs as they came.

It does not decide shapes, names or batching policy; ``config.pbtxt`` does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # imported outside Triton, e.g. by the tests of the pure helpers below
    pb_utils = None

ONNX_FILE = "model.onnx"
"""File name of the exported model inside the version folder."""


def row_count(inputs: Mapping[str, npt.NDArray[Any]]) -> int:
    """Return the number of rows (batch size) shared by all of one request's inputs.

    Raises ``ValueError`` when the request has no inputs, an input is a scalar, or
    inputs disagree on the batch dimension.
    """
    if not inputs:
        raise ValueError("request has no inputs")
    counts: dict[str, int] = {}
    for name, array in inputs.items():
        if array.ndim == 0:
            raise ValueError(f"input '{name}' has no batch dimension")
        counts[name] = int(array.shape[0])
    if len(set(counts.values())) != 1:
        detail = ", ".join(f"'{name}': {count}" for name, count in counts.items())
        raise ValueError(f"inputs disagree on the batch dimension ({detail})")
    return next(iter(counts.values()))


def concat_rows(per_request: Sequence[Mapping[str, npt.NDArray[Any]]]) -> dict[str, npt.NDArray[Any]]:
    """Concatenate each named input over all requests along the batch dimension.

    Every request must carry the same input names (Triton guarantees it for a
    model's required inputs); a single request is passed through without copying.
    """
    if not per_request:
        raise ValueError("no requests to batch")
    names = list(per_request[0])
    for index, inputs in enumerate(per_request):
        if sorted(inputs) != sorted(names):
            raise ValueError(f"request {index} has inputs {sorted(inputs)}, expected {sorted(names)}")
    if len(per_request) == 1:
        return {name: np.ascontiguousarray(per_request[0][name]) for name in names}
    return {name: np.concatenate([inputs[name] for inputs in per_request], axis=0) for name in names}


def split_rows(array: npt.NDArray[Any], counts: Sequence[int]) -> list[npt.NDArray[Any]]:
    """Split a batched output back into one array per request by their row counts.

    ``counts`` are the requests' row counts in batch order; they must add up to
    ``array.shape[0]`` exactly, otherwise the rows cannot be attributed and a
    ``ValueError`` is raised instead of returning misaligned results.
    """
    if any(count < 0 for count in counts):
        raise ValueError(f"row counts must be >= 0, got {list(counts)}")
    if array.ndim == 0:
        raise ValueError("output has no batch dimension")
    total = sum(counts)
    if array.shape[0] != total:
        raise ValueError(f"output has {array.shape[0]} rows, requests asked for {total}")
    offsets = np.cumsum(counts)[:-1]
    return list(np.split(array, offsets, axis=0))


class TritonPythonModel:
    """Serves ``model.onnx`` through onnxruntime, one session run per dynamic batch."""

    def initialize(self, args: dict[str, str]) -> None:
        import onnxruntime as ort

        config = json.loads(args["model_config"])
        self.model_name: str = config["name"]
        self.batching: bool = int(config.get("max_batch_size", 0)) > 0
        self.input_names: list[str] = [tensor["name"] for tensor in config["input"]]
        self.output_dtypes: dict[str, np.dtype[Any]] = {
            tensor["name"]: np.dtype(pb_utils.triton_string_to_numpy(tensor["data_type"]))
            for tensor in config["output"]
        }
        path = os.path.join(args["model_repository"], args["model_version"], ONNX_FILE)
        options = ort.SessionOptions()
        # Several instances of several models share few cores: one thread each
        # avoids oversubscription; Triton's instance_group provides the parallelism.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
        session_inputs = {node.name for node in self.session.get_inputs()}
        session_outputs = [node.name for node in self.session.get_outputs()]
        if session_inputs != set(self.input_names):
            raise ValueError(f"{path} has inputs {sorted(session_inputs)}, config declares {sorted(self.input_names)}")
        missing = set(self.output_dtypes) - set(session_outputs)
        if missing:
            raise ValueError(f"{path} lacks outputs {sorted(missing)} declared in config.pbtxt")
        self.output_names: list[str] = [name for name in session_outputs if name in self.output_dtypes]

    def execute(self, requests: list[Any]) -> list[Any]:
        if not self.batching:
            return [self._alone(request) for request in requests]
        responses: list[Any] = [None] * len(requests)
        batch: list[int] = []
        batch_inputs: list[dict[str, npt.NDArray[Any]]] = []
        counts: list[int] = []
        for index, request in enumerate(requests):
            try:
                inputs = self._read_inputs(request)
                counts.append(row_count(inputs))
            except Exception as exc:
                responses[index] = self._error(exc)
                continue
            batch.append(index)
            batch_inputs.append(inputs)

        if batch:
            try:
                outputs = self._run(concat_rows(batch_inputs))
                per_output = {name: split_rows(array, counts) for name, array in outputs.items()}
                for position, index in enumerate(batch):
                    responses[index] = self._response({name: parts[position] for name, parts in per_output.items()})
            except Exception as exc:
                if len(batch) == 1:
                    responses[batch[0]] = self._error(exc)
                    return responses
                # One bad request must not fail its neighbours: serve each alone so
                # only the culprit gets the error.
                for inputs, index in zip(batch_inputs, batch, strict=True):
                    try:
                        responses[index] = self._response(self._run(inputs))
                    except Exception as single_exc:
                        responses[index] = self._error(single_exc)
        return responses

    def _alone(self, request: Any) -> Any:
        """One request of a model without a batch dimension: its own session run."""
        try:
            return self._response(self._run(self._read_inputs(request)))
        except Exception as exc:
            return self._error(exc)

    def finalize(self) -> None:
        self.session = None

    def _read_inputs(self, request: Any) -> dict[str, npt.NDArray[Any]]:
        inputs: dict[str, npt.NDArray[Any]] = {}
        for name in self.input_names:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise ValueError(f"missing input '{name}'")
            inputs[name] = tensor.as_numpy()
        return inputs

    def _run(self, inputs: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        values = self.session.run(self.output_names, dict(inputs))
        return {
            name: np.asarray(value).astype(self.output_dtypes[name], copy=False)
            for name, value in zip(self.output_names, values, strict=True)
        }

    def _response(self, outputs: Mapping[str, npt.NDArray[Any]]) -> Any:
        tensors = [pb_utils.Tensor(name, np.ascontiguousarray(value)) for name, value in outputs.items()]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def _error(self, exc: Exception) -> Any:
        message = f"{self.model_name}: {exc}"
        return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))
