"""SerialRoute: steps run in order; a step may pick its model row by row from an earlier result."""

from __future__ import annotations

from collections.abc import Mapping

from switchyard.proxy.backend.triton import InferBackend, ModelInfo
from switchyard.proxy.errors import ConfigError
from switchyard.proxy.lifecycle.context import CallContext
from switchyard.proxy.routes.base import chain_specs
from switchyard.proxy.routes.composite import _Composite
from switchyard.proxy.routes.schema import SerialRouteConfig
from switchyard.proxy.routes.step import ModelStep
from switchyard.proxy.tensor_spec import TensorSpec
from switchyard.v1 import gateway_pb2 as pb


class SerialRoute(_Composite[SerialRouteConfig], kind=pb.ROUTE_KIND_SERIAL, label="step"):
    def _build(
        self, config: SerialRouteConfig, infos: Mapping[str, ModelInfo], backend: InferBackend
    ) -> tuple[list[ModelStep], list[TensorSpec]]:
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
        return self.steps, [final[n] for n in names]

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
