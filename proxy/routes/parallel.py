"""ParallelRoute: branches run at once on the same working set, each under its own timeout.

Outputs are named ``<branch>.<output>``. Policy ``all`` fails the call when a
branch fails or is late (naming it); ``partial`` answers with what finished and
lists the missing branches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import grpc

from switchyard.proxy.backend.triton import InferBackend, ModelInfo
from switchyard.proxy.errors import BackendError, DeadlineExceeded, GatewayError, status_of
from switchyard.proxy.lifecycle.context import CallContext
from switchyard.proxy.routes.base import chain_specs
from switchyard.proxy.routes.composite import _Composite
from switchyard.proxy.routes.schema import ParallelRouteConfig
from switchyard.proxy.routes.step import ModelStep, Specs, Tensors, _renamed
from switchyard.proxy.tensor_spec import TensorSpec
from switchyard.v1 import gateway_pb2 as pb


class ParallelRoute(_Composite[ParallelRouteConfig], kind=pb.ROUTE_KIND_PARALLEL, label="branch"):
    def _build(
        self, config: ParallelRouteConfig, infos: Mapping[str, ModelInfo], backend: InferBackend
    ) -> tuple[list[ModelStep], list[TensorSpec]]:
        self.policy = config.policy
        self.branches = self._side_by_side(config.branches, "branches", infos, backend)
        merged: Specs = {}
        for branch in self.branches:
            for name in branch.produced:
                merged[f"{branch.name}.{name}"] = branch.specs_after[name].renamed(f"{branch.name}.{name}")
        final = chain_specs(self._route_post, list(merged.values()), f"{self._where}.post")
        self._available = list(final)
        return self.branches, list(final.values())

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
                missing.append(pb.BranchError(branch=branch.name, status=status_of(exc)))
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
