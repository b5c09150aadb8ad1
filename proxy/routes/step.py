"""One model call (``ModelStep``), type-checked against what the route holds before it.

A step maps the model's inputs to tensors of the route's working set, may pick
its model row by row from an earlier result (``select``), renames the model's
outputs as they join the working set and runs its own post ops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt

from switchyard.proxy.backend.batching import MicroBatcher
from switchyard.proxy.backend.triton import InferBackend, InferResult, ModelInfo
from switchyard.proxy.errors import BackendError, ConfigError
from switchyard.proxy.lifecycle.context import CallContext
from switchyard.proxy.ops import Op
from switchyard.proxy.routes.base import build_ops, chain_specs, check_version, latest_version, run_ops
from switchyard.proxy.routes.schema import SelectConfig, StepConfig
from switchyard.proxy.tensor_spec import TensorLike, TensorSpec
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1.tensors import from_numpy, to_numpy

Specs = dict[str, TensorSpec]
Tensors = dict[str, pb.Tensor]

INTEGER_TYPES = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})
NUMERIC_TYPES = INTEGER_TYPES | {"FP16", "FP32", "FP64", "BF16"}


class ModelStep:
    """One model call, type-checked against what the route holds before it.

    A single-model route is one step (with its micro-batcher, when the route
    batches); a composite route is several, over its working set.
    """

    def __init__(
        self,
        config: StepConfig,
        infos: Mapping[str, ModelInfo],
        backend: InferBackend,
        available: Specs,
        where: str,
        label: str,
        *,
        batcher: MicroBatcher | None = None,
    ) -> None:
        self.name = config.name
        self.label = f"{label}:{config.name}"
        self.timeout_s = config.timeout_s
        self._backend = backend
        self._batcher = batcher
        self._version = config.version
        self._select = config.select
        self.models = config.models()
        if batcher is not None and (self._select is not None or batcher.model != self.models[0]):
            raise ValueError("a micro-batcher serves a step that calls its one model")
        base = infos[self.models[0]]
        check_version(base, config.version, f"{where}.version")
        self.resolved: tuple[tuple[str, str], ...] = tuple(
            (m, config.version or latest_version(infos[m])) for m in self.models
        )
        """(model, version) a call that pins none gets: the step's pin, else the latest ready at build time."""
        self._check_interchangeable(base, [infos[m] for m in self.models[1:]], where)
        self.max_batch_size = min((infos[m].max_batch_size for m in self.models), default=0)
        self.feed = self._feed(config, base, available, where)
        if self._select is not None:
            self._check_select(self._select, available, where)
        self.rename = self._renames(config, base, where)
        model_outputs = {s.name: s for s in base.outputs}
        produced = {new: model_outputs[old].renamed(new) for old, new in self.rename.items()}
        self._post: list[Op] = build_ops(config.post, f"{where}.post")
        self.specs_after = chain_specs(self._post, list({**available, **produced}.values()), f"{where}.post")
        self.produced = [n for n in self.specs_after if n not in available or n in produced]

    @staticmethod
    def _check_interchangeable(base: ModelInfo, others: Sequence[ModelInfo], where: str) -> None:
        """A step that selects its model row by row can only choose between models of the same signature."""
        for info in others:
            if _signature(info) != _signature(base):
                raise ConfigError(
                    f"{where}.select: models {base.name!r} and {info.name!r} differ in inputs or outputs; "
                    "a step can only choose between interchangeable models"
                )

    @staticmethod
    def _feed(config: StepConfig, model: ModelInfo, available: Specs, where: str) -> dict[str, str]:
        """Model input -> the working-set tensor it reads, each checked against the model's spec."""
        model_inputs = {s.name: s for s in model.inputs}
        for key in config.inputs:
            if key not in model_inputs:
                raise ConfigError(
                    f"{where}.inputs.{key}: model {model.name!r} has no input {key!r} "
                    f"(inputs: {', '.join(model_inputs)})"
                )
        feed = {name: config.inputs.get(name, name) for name in model_inputs}
        for name, source in feed.items():
            got = available.get(source)
            if got is None:
                raise ConfigError(
                    f"{where}.inputs.{name}: no tensor {source!r} in the route at this point "
                    f"(have: {', '.join(sorted(available)) or 'none'})"
                )
            if not model_inputs[name].accepts(got.renamed(name)):
                raise ConfigError(
                    f"{where}.inputs.{name}: model {model.name!r} needs {model_inputs[name]}, "
                    f"the route has {got} at this point"
                )
        return feed

    @staticmethod
    def _check_select(select: SelectConfig, available: Specs, where: str) -> None:
        spec = available.get(select.tensor)
        if spec is None:
            raise ConfigError(
                f"{where}.select.tensor: no tensor {select.tensor!r} in the route at this point "
                f"(have: {', '.join(sorted(available))})"
            )
        kinds = INTEGER_TYPES if select.models is not None else NUMERIC_TYPES
        if spec.datatype not in kinds or len(spec.shape) not in (1, 2) or (len(spec.shape) == 2 and spec.shape[1] != 1):
            raise ConfigError(
                f"{where}.select.tensor: {spec} must be one {'integer' if kinds is INTEGER_TYPES else 'number'} "
                "per row ([-1] or [-1, 1])"
            )

    @staticmethod
    def _renames(config: StepConfig, model: ModelInfo, where: str) -> dict[str, str]:
        """Model output -> the name it takes in the working set."""
        model_outputs = [s.name for s in model.outputs]
        for key in config.outputs:
            if key not in model_outputs:
                raise ConfigError(
                    f"{where}.outputs.{key}: model {model.name!r} has no output {key!r} "
                    f"(outputs: {', '.join(model_outputs)})"
                )
        return {name: config.outputs.get(name, name) for name in model_outputs}

    def model_refs(self, pins: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
        return tuple((m, pins.get(m, self._version)) for m in self.models)

    async def run(
        self, working: Tensors, request: pb.InferRequest, ctx: CallContext
    ) -> tuple[Tensors, list[pb.ModelRef]]:
        """Calls the model on the working set; returns the working set with this step's tensors added."""
        inputs = [_renamed(working[source], name) for name, source in self.feed.items()]
        with ctx.stage(self.label):
            if self._select is None:
                outputs, refs = await self._call(self.models[0], inputs, request, ctx)
            else:
                outputs, refs = await self._call_selected(working, inputs, request, ctx)
        merged = dict(working)
        for tensor in outputs:
            new = self.rename.get(tensor.name)
            if new is not None:
                merged[new] = _renamed(tensor, new)
        if self._post:
            keep = list(self.specs_after)
            merged = {t.name: t for t in await run_ops(self._post, list(merged.values()), keep)}
        return merged, refs

    def infer(
        self,
        model: str,
        inputs: Sequence[TensorLike],
        outputs: Sequence[str],
        request: pb.InferRequest,
        ctx: CallContext,
    ) -> Awaitable[InferResult]:
        """One call of ``model`` (through the micro-batcher, if any) at the version the request pins or the step's.

        ``outputs`` names the outputs wanted (empty: all of them). Returns the
        backend's (or batcher's) coroutine, to await.
        """
        version = request.model_versions.get(model, self._version) if request.model_versions else self._version
        if self._batcher is None:
            return self._backend.infer(
                model, version, inputs, outputs, timeout_s=ctx.remaining(), request_id=ctx.request_id
            )
        return self._batcher.infer(version, inputs, outputs, deadline=ctx.deadline, request_id=ctx.request_id)

    async def _call(
        self, model: str, inputs: list[pb.Tensor], request: pb.InferRequest, ctx: CallContext
    ) -> tuple[list[pb.Tensor], list[pb.ModelRef]]:
        result = await self.infer(model, inputs, list(self.rename), request, ctx)
        return result.outputs, [pb.ModelRef(name=result.model, version=result.version)]

    async def _call_selected(
        self, working: Tensors, inputs: list[pb.Tensor], request: pb.InferRequest, ctx: CallContext
    ) -> tuple[list[pb.Tensor], list[pb.ModelRef]]:
        assert self._select is not None
        selector = to_numpy(working[self._select.tensor]).reshape(-1)
        chosen = self._choose(selector)
        models = list(dict.fromkeys(chosen.tolist()))
        if len(models) == 1:
            return await self._call(models[0], inputs, request, ctx)
        arrays = [(t.name, to_numpy(t)) for t in inputs]
        groups = {m: np.flatnonzero(chosen == m) for m in models}
        answers = await asyncio.gather(
            *(
                self._call(m, [from_numpy(name, a[rows]) for name, a in arrays], request, ctx)
                for m, rows in groups.items()
            )
        )
        # Put every row's answer back in its place.
        combined: dict[str, npt.NDArray[Any]] = {}
        for rows, (outputs, _) in zip(groups.values(), answers, strict=True):
            for tensor in outputs:
                part = to_numpy(tensor)
                if tensor.name not in combined:
                    combined[tensor.name] = np.empty((len(chosen), *part.shape[1:]), dtype=part.dtype)
                combined[tensor.name][rows] = part
        refs = [ref for _, model_refs in answers for ref in model_refs]
        return [from_numpy(name, array) for name, array in combined.items()], refs

    def _choose(self, selector: npt.NDArray[Any]) -> npt.NDArray[Any]:
        select = self._select
        assert select is not None
        if select.models is not None:
            table = {int(k): v for k, v in select.models.items()}
            unknown = sorted({int(v) for v in selector} - set(table))
            if unknown:
                raise BackendError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"step {self.name!r}: {select.tensor} = {unknown[0]} has no model in select.models",
                )
            return np.array([table[int(v)] for v in selector], dtype=object)
        assert select.threshold is not None and select.below is not None and select.above is not None
        below = selector.astype(np.float64) < select.threshold
        return np.array([select.below if b else select.above for b in below], dtype=object)


def _signature(info: ModelInfo) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    return info.inputs, info.outputs


def _renamed(tensor: pb.Tensor, name: str) -> pb.Tensor:
    if tensor.name == name:
        return tensor
    return pb.Tensor(name=name, datatype=tensor.datatype, shape=tensor.shape, raw_data=tensor.raw_data)
