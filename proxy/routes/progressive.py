"""ProgressiveRoute: stages (fast first) run at once; each answer is streamed as it improves on the last.

An answer is streamed as soon as it is ready unless a better stage has already
answered, and the last message is marked final.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

from switchyard.proxy.backend.triton import InferBackend, ModelInfo
from switchyard.proxy.errors import BackendError, ConfigError, GatewayError
from switchyard.proxy.lifecycle.context import CallContext
from switchyard.proxy.routes.base import chain_specs
from switchyard.proxy.routes.composite import _Composite
from switchyard.proxy.routes.schema import ProgressiveRouteConfig
from switchyard.proxy.routes.step import ModelStep, Tensors
from switchyard.proxy.tensor_spec import TensorSpec
from switchyard.v1 import gateway_pb2 as pb


class ProgressiveRoute(_Composite[ProgressiveRouteConfig], kind=pb.ROUTE_KIND_PROGRESSIVE, label="stage"):
    def _build(
        self, config: ProgressiveRouteConfig, infos: Mapping[str, ModelInfo], backend: InferBackend
    ) -> tuple[list[ModelStep], list[TensorSpec]]:
        self.stages = self._side_by_side(config.stages, "stages", infos, backend)
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
        return self.stages, list(finals[0].values())

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
