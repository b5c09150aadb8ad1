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

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Generic, TypeVar

from switchyard.proxy.backend.cuda_shared_memory import as_message
from switchyard.proxy.backend.triton import InferBackend, ModelInfo
from switchyard.proxy.cache import Cache
from switchyard.proxy.lifecycle.context import CallContext
from switchyard.proxy.ops import Op
from switchyard.proxy.routes.base import (
    Preprocessor,
    Route,
    RouteDescription,
    build_ops,
    chain_specs,
    declared_inputs,
    run_ops,
)
from switchyard.proxy.routes.schema import (
    ParallelRouteConfig,
    ProgressiveRouteConfig,
    SerialRouteConfig,
    StepConfig,
)
from switchyard.proxy.routes.step import ModelStep, Tensors
from switchyard.proxy.tensor_spec import TensorSpec
from switchyard.v1 import gateway_pb2 as pb

AnyComposite = TypeVar("AnyComposite", SerialRouteConfig, ParallelRouteConfig, ProgressiveRouteConfig)


class _Composite(Route, Generic[AnyComposite]):
    """What the three kinds share: route inputs, pre ops, the data cache and the description.

    A kind names its ``kind`` and ``label`` (the stage-metric prefix of its
    steps) as class arguments and builds its steps in :meth:`_build`, which
    returns them with the route's outputs.
    """

    kind: pb.RouteKind
    label: str

    def __init_subclass__(cls, *, kind: pb.RouteKind, label: str) -> None:
        super().__init_subclass__()
        cls.kind = kind
        cls.label = label

    def __init__(
        self,
        config: AnyComposite,
        infos: Mapping[str, ModelInfo],
        backend: InferBackend,
        data_cache: Cache | None,
    ) -> None:
        super().__init__(config)
        self._where = f"routes[{config.name}]"
        self.config: AnyComposite = config
        first = config.step_list()[0]
        # By default the route takes the first model's inputs, under the names the first step reads them from.
        defaults = [s.renamed(first.inputs.get(s.name, s.name)) for s in infos[first.models()[0]].inputs]
        self.inputs = declared_inputs(config.inputs, defaults, self._where, has_pre=bool(config.pre))
        pre = build_ops(config.pre, f"{self._where}.pre")
        self.start_specs = chain_specs(pre, self.inputs, f"{self._where}.pre")
        self._pre = Preprocessor(config.name, pre, list(self.start_specs), data_cache if config.data_cache else None)
        self._route_post: list[Op] = build_ops(config.post, f"{self._where}.post")
        steps, outputs = self._build(config, infos, backend)
        self.description = self._describe(outputs, steps)
        self.versions = tuple(dict.fromkeys(ref for s in steps for ref in s.resolved))

    @abstractmethod
    def _build(
        self, config: AnyComposite, infos: Mapping[str, ModelInfo], backend: InferBackend
    ) -> tuple[list[ModelStep], list[TensorSpec]]:
        """The kind's steps, type-checked, and the route's outputs; sets ``self._available`` (tensors at the end)."""

    def _side_by_side(
        self, configs: Sequence[StepConfig], field: str, infos: Mapping[str, ModelInfo], backend: InferBackend
    ) -> list[ModelStep]:
        """Steps that each read the working set as the pre ops leave it (parallel branches, progressive stages)."""
        return [
            ModelStep(s, infos, backend, dict(self.start_specs), f"{self._where}.{field}[{i}]", self.label)
            for i, s in enumerate(configs)
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
        # Composite routes keep their pre-processed inputs on the host (Preprocessor without on_device).
        return {t.name: as_message(t) for t in await self._pre.run(request, ctx)}

    async def _finish(
        self, working: Tensors, available: Sequence[str], request: pb.InferRequest, ctx: CallContext
    ) -> list[pb.Tensor]:
        wanted = list(request.outputs) or [s.name for s in self.description.outputs]
        if self._route_post:
            with ctx.stage("post"):
                return await run_ops(self._route_post, list(working.values()), [w for w in wanted if w in available])
        return [working[name] for name in wanted if name in working]
