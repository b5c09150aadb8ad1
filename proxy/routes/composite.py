"""Composite routes: serial, parallel and progressive.

Each is a set of model calls (``ModelStep``) over a *working set*: the
route's inputs after its pre ops, to which every step adds its (renamed)
outputs. A step maps the model's inputs to tensors of the working set, and
everything is type-checked against Triton's model metadata at start-up, so
a route that cannot work never serves.

- ``SerialRoute``: steps run in order; a step may pick its model row by row
  from an earlier result (a class, or a threshold on a score).
- ``ParallelRoute``: branches run at once on the same working set, each
  under its own timeout; outputs are named ``<branch>.<output>``. Policy
  ``all`` fails the call when a branch fails or is late (naming it);
  ``partial`` answers with what finished and lists the missing branches.
- ``ProgressiveRoute``: stages (fast first) run at once; each answer is
  streamed as soon as it is ready unless a better stage has already
  answered, and the last message is marked final.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence

import grpc
import numpy as np

from switchyard.proxy.backend.triton import ModelInfo, TritonBackend
from switchyard.proxy.cache import Cache
from switchyard.proxy.errors import BackendError, ConfigError, DeadlineExceeded, GatewayError
from switchyard.proxy.lifecycle.context import CallContext
from switchyard.proxy.ops import Op, build_op
from switchyard.proxy.routes.base import (
    Preprocessor,
    Route,
    RouteDescription,
    chain_specs,
    fingerprint_of,
    run_ops,
)
from switchyard.proxy.routes.schema import (
    ParallelRouteConfig,
    ProgressiveRouteConfig,
    SerialRouteConfig,
    StepConfig,
    TensorSpecConfig,
)
from switchyard.proxy.tensor_spec import TensorSpec
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1.tensors import from_numpy, to_numpy

Specs = dict[str, TensorSpec]
Tensors = dict[str, pb.Tensor]

INTEGER_TYPES = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})
NUMERIC_TYPES = INTEGER_TYPES | {"FP16", "FP32", "FP64", "BF16"}


class ModelStep:
    """One model call of a composite route, type-checked against what the working set holds before it."""

    def __init__(
        self,
        config: StepConfig,
        infos: Mapping[str, ModelInfo],
        backend: TritonBackend,
        available: Specs,
        where: str,
        label: str,
    ) -> None:
        self.name = config.name
        self.label = f"{label}:{config.name}"
        self.timeout_s = config.timeout_s
        self._backend = backend
        self._version = config.version
        self._select = config.select
        self.models = config.models()
        base = infos[self.models[0]]
        if config.version and config.version not in base.versions:
            raise ConfigError(
                f"{where}.version: model {base.name!r} has no ready version {config.version!r} "
                f"(ready: {', '.join(base.versions) or 'none'})"
            )
        for other in self.models[1:]:
            info = infos[other]
            if _signature(info) != _signature(base):
                raise ConfigError(
                    f"{where}.select: models {base.name!r} and {other!r} differ in inputs or outputs; "
                    "a step can only choose between interchangeable models"
                )
        self.max_batch_size = min((infos[m].max_batch_size for m in self.models), default=0)

        model_inputs = {s.name: s for s in base.inputs}
        for key in config.inputs:
            if key not in model_inputs:
                raise ConfigError(
                    f"{where}.inputs.{key}: model {base.name!r} has no input {key!r} "
                    f"(inputs: {', '.join(model_inputs)})"
                )
        self.feed = {name: config.inputs.get(name, name) for name in model_inputs}
        for name, source in self.feed.items():
            got = available.get(source)
            if got is None:
                raise ConfigError(
                    f"{where}.inputs.{name}: no tensor {source!r} in the route at this point "
                    f"(have: {', '.join(sorted(available)) or 'none'})"
                )
            if not model_inputs[name].accepts(got.renamed(name)):
                raise ConfigError(
                    f"{where}.inputs.{name}: model {base.name!r} needs {model_inputs[name]}, "
                    f"the route has {got} at this point"
                )
        if self._select is not None:
            spec = available.get(self._select.tensor)
            if spec is None:
                raise ConfigError(
                    f"{where}.select.tensor: no tensor {self._select.tensor!r} in the route at this point "
                    f"(have: {', '.join(sorted(available))})"
                )
            kinds = INTEGER_TYPES if self._select.models is not None else NUMERIC_TYPES
            if (
                spec.datatype not in kinds
                or len(spec.shape) not in (1, 2)
                or (len(spec.shape) == 2 and spec.shape[1] != 1)
            ):
                raise ConfigError(
                    f"{where}.select.tensor: {spec} must be one {'integer' if kinds is INTEGER_TYPES else 'number'} "
                    "per row ([-1] or [-1, 1])"
                )

        model_outputs = {s.name: s for s in base.outputs}
        for key in config.outputs:
            if key not in model_outputs:
                raise ConfigError(
                    f"{where}.outputs.{key}: model {base.name!r} has no output {key!r} "
                    f"(outputs: {', '.join(model_outputs)})"
                )
        self.rename = {name: config.outputs.get(name, name) for name in model_outputs}
        produced = {new: model_outputs[old].renamed(new) for old, new in self.rename.items()}
        self._post: list[Op] = [build_op(o.op, o.params(), f"{where}.post[{i}]") for i, o in enumerate(config.post)]
        self.specs_after = chain_specs(self._post, list({**available, **produced}.values()), f"{where}.post")
        self.produced = [n for n in self.specs_after if n not in available or n in produced]

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

    async def _call(
        self, model: str, inputs: list[pb.Tensor], request: pb.InferRequest, ctx: CallContext
    ) -> tuple[list[pb.Tensor], list[pb.ModelRef]]:
        version = request.model_versions.get(model, self._version)
        result = await self._backend.infer(
            model, version, inputs, list(self.rename), timeout_s=ctx.remaining(), request_id=ctx.request_id
        )
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
        combined: dict[str, np.ndarray] = {}
        for rows, (outputs, _) in zip(groups.values(), answers, strict=True):
            for tensor in outputs:
                part = to_numpy(tensor)
                if tensor.name not in combined:
                    combined[tensor.name] = np.empty((len(chosen), *part.shape[1:]), dtype=part.dtype)
                combined[tensor.name][rows] = part
        refs = [ref for _, model_refs in answers for ref in model_refs]
        return [from_numpy(name, array) for name, array in combined.items()], refs

    def _choose(self, selector: np.ndarray) -> np.ndarray:
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


class _Composite(Route):
    """What the three kinds share: route inputs, pre ops, the data cache and the description."""

    kind: pb.RouteKind
    label: str

    def __init__(
        self,
        config: SerialRouteConfig | ParallelRouteConfig | ProgressiveRouteConfig,
        infos: Mapping[str, ModelInfo],
        backend: TritonBackend,
        data_cache: Cache | None,
    ) -> None:
        self._where = f"routes[{config.name}]"
        self.config = config
        self.cache_ttl_s = config.cache.ttl_s if config.cache is not None else None
        self.coalesce = config.coalesce
        self.fingerprint = fingerprint_of(config)
        steps = config.step_list()
        first = infos[steps[0].models()[0]]
        self.inputs = _route_inputs(config.inputs, steps[0], first, self._where, bool(config.pre))
        pre = [build_op(o.op, o.params(), f"{self._where}.pre[{i}]") for i, o in enumerate(config.pre)]
        self.start_specs = chain_specs(pre, self.inputs, f"{self._where}.pre")
        self._pre = Preprocessor(
            config.name, pre, list(self.start_specs), data_cache if config.data_cache else None, 60.0
        )
        self._route_post: list[Op] = [
            build_op(o.op, o.params(), f"{self._where}.post[{i}]") for i, o in enumerate(config.post)
        ]

    def _describe(self, outputs: Sequence[TensorSpec], steps: Sequence[ModelStep]) -> RouteDescription:
        batch_limits = [s.max_batch_size for s in steps if s.max_batch_size > 0]
        return RouteDescription(
            name=self.config.name,
            kind=self.kind,
            description=self.config.description,
            inputs=tuple(self.inputs),
            outputs=tuple(outputs),
            models=tuple(dict.fromkeys(ref for s in steps for ref in s.model_refs({}))),
            max_batch_size=min(batch_limits) if batch_limits else 0,
            max_request_bytes=self.config.max_request_bytes,
            timeout_s=self.config.timeout_s,
            steps=tuple((s.name, s.model_refs({})) for s in steps),
            cached=self.cache_ttl_s is not None,
            max_inflight=self.config.max_inflight,
        )

    async def _start(self, request: pb.InferRequest, ctx: CallContext) -> Tensors:
        return {t.name: t for t in await self._pre.run(request, ctx)}

    async def _finish(
        self, working: Tensors, available: Sequence[str], request: pb.InferRequest, ctx: CallContext
    ) -> list[pb.Tensor]:
        wanted = list(request.outputs) or [s.name for s in self.description.outputs]
        if self._route_post:
            with ctx.stage("post"):
                return await run_ops(self._route_post, list(working.values()), [w for w in wanted if w in available])
        return [working[name] for name in wanted if name in working]


def _route_inputs(
    declared: list[TensorSpecConfig] | None, first: StepConfig, model: ModelInfo, where: str, has_pre: bool
) -> list[TensorSpec]:
    if declared is not None:
        return [TensorSpec(i.name, i.datatype, tuple(i.shape)) for i in declared]
    if has_pre:
        raise ConfigError(f"{where}.inputs: a route with pre-processing ops must declare its inputs")
    # Default: the first model's inputs, under the names the first step reads them from.
    return [s.renamed(first.inputs.get(s.name, s.name)) for s in model.inputs]


class SerialRoute(_Composite):
    kind = pb.ROUTE_KIND_SERIAL
    label = "step"

    def __init__(
        self,
        config: SerialRouteConfig,
        infos: Mapping[str, ModelInfo],
        backend: TritonBackend,
        data_cache: Cache | None,
    ) -> None:
        super().__init__(config, infos, backend, data_cache)
        _reject_cycles(config, infos, self._where)
        available = dict(self.start_specs)
        self.steps: list[ModelStep] = []
        for i, step in enumerate(config.steps):
            built = ModelStep(step, infos, backend, available, f"{self._where}.steps[{i}]", self.label)
            self.steps.append(built)
            available = built.specs_after
        final = chain_specs(self._route_post, list(available.values()), f"{self._where}.post")
        if config.outputs is not None:
            for i, name in enumerate(config.outputs):
                if name not in final:
                    raise ConfigError(
                        f"{self._where}.outputs[{i}]: no tensor {name!r} at the end of the route "
                        f"(have: {', '.join(sorted(final))})"
                    )
            names = list(config.outputs)
        else:
            names = [n for n in final if n not in self.start_specs]
        self._available = list(final)
        self.description = self._describe([final[n] for n in names], self.steps)

    async def infer(self, request: pb.InferRequest, ctx: CallContext) -> pb.InferResponse:
        working = await self._start(request, ctx)
        refs: list[pb.ModelRef] = []
        for step in self.steps:
            working, step_refs = await step.run(working, request, ctx)
            refs.extend(step_refs)
        outputs = await self._finish(working, self._available, request, ctx)
        return pb.InferResponse(route=self.name, request_id=ctx.request_id, outputs=outputs, models=refs)


def _reject_cycles(config: SerialRouteConfig, infos: Mapping[str, ModelInfo], where: str) -> None:
    """A step may only read what the route's inputs or earlier steps provide, never a later step's output."""
    producers: dict[str, int] = {}
    for j, step in enumerate(config.steps):
        for output in infos[step.models()[0]].outputs:
            producers.setdefault(step.outputs.get(output.name, output.name), j)
    for i, step in enumerate(config.steps):
        model = infos[step.models()[0]]
        sources = [(f"inputs.{s.name}", step.inputs.get(s.name, s.name)) for s in model.inputs]
        if step.select is not None:
            sources.append(("select.tensor", step.select.tensor))
        for field, source in sources:
            producer = producers.get(source)
            if producer is not None and producer >= i:
                j = producer
                raise ConfigError(
                    f"{where}.steps[{i}].{field}: reads {source!r}, which step {config.steps[j].name!r} "
                    "produces at or after this one; steps run in order, so this is a cycle"
                )


class ParallelRoute(_Composite):
    kind = pb.ROUTE_KIND_PARALLEL
    label = "branch"

    def __init__(
        self,
        config: ParallelRouteConfig,
        infos: Mapping[str, ModelInfo],
        backend: TritonBackend,
        data_cache: Cache | None,
    ) -> None:
        super().__init__(config, infos, backend, data_cache)
        self.policy = config.policy
        self.branches = [
            ModelStep(b, infos, backend, dict(self.start_specs), f"{self._where}.branches[{i}]", self.label)
            for i, b in enumerate(config.branches)
        ]
        merged: Specs = {}
        for branch in self.branches:
            for name in branch.produced:
                merged[f"{branch.name}.{name}"] = branch.specs_after[name].renamed(f"{branch.name}.{name}")
        final = chain_specs(self._route_post, list(merged.values()), f"{self._where}.post")
        self._available = list(final)
        self.description = self._describe(list(final.values()), self.branches)

    async def infer(self, request: pb.InferRequest, ctx: CallContext) -> pb.InferResponse:
        working = await self._start(request, ctx)
        tasks = [asyncio.create_task(self._branch(b, working, request, ctx)) for b in self.branches]
        try:
            if self.policy == "all":
                # The first failure fails the call at once; the others are cancelled below.
                for done in asyncio.as_completed(tasks):
                    await done
            else:
                await asyncio.wait(tasks)
        finally:
            for task in tasks:
                task.cancel()
        merged: Tensors = {}
        refs: list[pb.ModelRef] = []
        missing: list[pb.BranchError] = []
        for branch, task in zip(self.branches, tasks, strict=True):
            exc = task.exception()
            if exc is not None:
                if not isinstance(exc, GatewayError):
                    raise exc
                missing.append(
                    pb.BranchError(branch=branch.name, status=pb.Status(code=exc.code.value[0], message=exc.message))
                )
                continue
            tensors, branch_refs = task.result()
            refs.extend(branch_refs)
            for name in branch.produced:
                key = f"{branch.name}.{name}"
                merged[key] = _renamed(tensors[name], key)
        if len(missing) == len(self.branches):
            first = tasks[0].exception()
            assert isinstance(first, GatewayError)
            raise BackendError(first.code, f"every branch failed; {missing[0].branch}: {missing[0].status.message}")
        outputs = await self._finish(merged, self._available, request, ctx)
        return pb.InferResponse(
            route=self.name, request_id=ctx.request_id, outputs=outputs, models=refs, missing=missing
        )

    async def _branch(
        self, branch: ModelStep, working: Tensors, request: pb.InferRequest, ctx: CallContext
    ) -> tuple[Tensors, list[pb.ModelRef]]:
        child = ctx.child(branch.timeout_s)
        try:
            async with asyncio.timeout(max(child.remaining(), 0.0)):
                return await branch.run(working, request, child)
        except TimeoutError:
            raise DeadlineExceeded(f"branch {branch.name!r} {self._late(branch, child, ctx)}") from None
        except GatewayError as exc:
            if exc.code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise DeadlineExceeded(f"branch {branch.name!r} {self._late(branch, child, ctx)}") from None
            raise BackendError(exc.code, f"branch {branch.name!r}: {exc.message}") from None

    @staticmethod
    def _late(branch: ModelStep, child: CallContext, ctx: CallContext) -> str:
        if branch.timeout_s is not None and child.deadline < ctx.deadline:
            return f"did not answer within its timeout of {branch.timeout_s:g} s"
        return "did not answer before the call's deadline"


class ProgressiveRoute(_Composite):
    kind = pb.ROUTE_KIND_PROGRESSIVE
    label = "stage"

    def __init__(
        self,
        config: ProgressiveRouteConfig,
        infos: Mapping[str, ModelInfo],
        backend: TritonBackend,
        data_cache: Cache | None,
    ) -> None:
        super().__init__(config, infos, backend, data_cache)
        self.stages = [
            ModelStep(s, infos, backend, dict(self.start_specs), f"{self._where}.stages[{i}]", self.label)
            for i, s in enumerate(config.stages)
        ]
        finals = []
        for i, stage in enumerate(self.stages):
            specs = {n: stage.specs_after[n] for n in stage.produced}
            finals.append(chain_specs(self._route_post, list(specs.values()), f"{self._where}.stages[{i}].post"))
        for i, specs in enumerate(finals[1:], start=1):
            if specs != finals[0]:
                raise ConfigError(
                    f"{self._where}.stages[{i}]: every stage must produce the same outputs; "
                    f"{self.stages[0].name!r} gives {', '.join(map(str, finals[0].values()))}, "
                    f"{self.stages[i].name!r} gives {', '.join(map(str, specs.values()))}"
                )
        self._available = list(finals[0])
        self.description = self._describe(list(finals[0].values()), self.stages)

    async def infer(self, request: pb.InferRequest, ctx: CallContext) -> pb.InferResponse:
        """The best answer: the last stage's, or the best earlier one if later stages failed."""
        best: pb.InferResponse | None = None
        error: GatewayError | None = None
        async for _index, outcome, _final in self.answers(request, ctx):
            if isinstance(outcome, GatewayError):
                error = error or outcome
            else:
                best = outcome
        if best is None:
            assert error is not None
            raise error
        return best

    async def answers(
        self, request: pb.InferRequest, ctx: CallContext
    ) -> AsyncIterator[tuple[int, pb.InferResponse | GatewayError, bool]]:
        """(stage index, answer or error, final) as stages finish, never one worse than an answer given.

        ``final`` is true on the last item: no better stage is still running.
        """
        working = await self._start(request, ctx)
        tasks = {asyncio.create_task(self._stage(s, working, request, ctx)): i for i, s in enumerate(self.stages)}
        best = -1
        try:
            pending = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                ordered = sorted(done, key=tasks.__getitem__)
                for n, task in enumerate(ordered):
                    index = tasks[task]
                    if index < best:
                        continue  # a better stage has answered already
                    exc = task.exception()
                    if exc is not None and not isinstance(exc, GatewayError):
                        raise exc
                    if exc is None:
                        best = index
                    final = not any(tasks[t] > index for t in pending) and n == len(ordered) - 1
                    yield index, exc if exc is not None else task.result(), final
                # Stages worse than the best answer so far are of no more use.
                for task in [t for t in pending if tasks[t] < best]:
                    task.cancel()
                    pending.discard(task)
        finally:
            for task in tasks:
                task.cancel()

    async def _stage(
        self, stage: ModelStep, working: Tensors, request: pb.InferRequest, ctx: CallContext
    ) -> pb.InferResponse:
        child = ctx.child(stage.timeout_s)
        try:
            tensors, refs = await stage.run(working, request, child)
        except GatewayError as exc:
            raise BackendError(exc.code, f"stage {stage.name!r}: {exc.message}") from None
        outputs = {n: tensors[n] for n in stage.produced}
        return pb.InferResponse(
            route=self.name,
            request_id=ctx.request_id,
            outputs=await self._finish(outputs, self._available, request, ctx),
            models=refs,
        )


__all__ = ["ModelStep", "ParallelRoute", "ProgressiveRoute", "SerialRoute"]
