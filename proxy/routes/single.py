"""The single-model route: validate, pre-process, one model call, post-process.

The model call is a :class:`~switchyard.proxy.routes.step.ModelStep`, with a
:class:`~switchyard.proxy.backend.batching.MicroBatcher` when the route has
``batching``: concurrent requests (per version, input shapes and requested
outputs) then share one Triton call.

With no pre-ops the client's tensors go to Triton as they arrived (raw
bytes, no decoding); with no post-ops Triton's outputs come back the same
way, and Triton is asked for exactly the outputs the client wants. Ops run
only when the route declares them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from switchyard.proxy.backend.batching import MicroBatcher
from switchyard.proxy.backend.triton import InferBackend, ModelInfo
from switchyard.proxy.cache import Cache
from switchyard.proxy.errors import ConfigError
from switchyard.proxy.lifecycle.context import CallContext
from switchyard.proxy.routes.base import (
    Preprocessor,
    Route,
    RouteDescription,
    build_ops,
    chain_specs,
    declared_inputs,
    run_ops,
)
from switchyard.proxy.routes.schema import BatchingConfig, RouteConfig, StepConfig
from switchyard.proxy.routes.step import ModelStep
from switchyard.proxy.tensor_spec import TensorLike, TensorSpec
from switchyard.v1 import gateway_pb2 as pb


class SingleModelRoute(Route):
    def __init__(
        self,
        config: RouteConfig,
        infos: Mapping[str, ModelInfo],
        backend: InferBackend,
        data_cache: Cache | None = None,
    ) -> None:
        super().__init__(config)
        # Nothing but the backend call can wait here, and that call ends at the deadline by itself.
        self.bounded_by_backend = not config.pre and not config.post and not config.data_cache
        where = f"routes[{config.name}]"
        model = infos[config.model]
        self._model = model.name
        pre = build_ops(config.pre, f"{where}.pre")
        self._post = build_ops(config.post, f"{where}.post")
        inputs = declared_inputs(
            config.inputs, model.inputs, where, has_pre=bool(config.pre), batch_dim=model.max_batch_size > 0
        )
        produced = chain_specs(pre, inputs, f"{where}.pre")
        _check_produces(model, produced, f"{where}.pre")
        outputs = chain_specs(self._post, model.outputs, f"{where}.post")
        self._output_names = list(outputs)
        self.step = ModelStep(
            StepConfig(name=config.name, model=model.name, version=config.version, timeout_s=None),
            infos,
            backend,
            produced,
            where,
            "model",
            batcher=_batcher(config, model, backend, where),
        )
        self.versions = self.step.resolved
        self._prepare = (
            Preprocessor(
                config.name,
                pre,
                [s.name for s in model.inputs],
                data_cache if config.data_cache else None,
                on_device=True,  # a GPU's pre-processed inputs go to Triton through CUDA shared memory when it can
            )
            if pre
            else None
        )
        self.description = RouteDescription(
            name=config.name,
            kind=pb.ROUTE_KIND_SINGLE,
            description=config.description,
            inputs=tuple(inputs),
            outputs=tuple(outputs.values()),
            models=((model.name, config.version),),
            max_batch_size=model.max_batch_size,
            max_request_bytes=config.max_request_bytes,
            timeout_s=config.timeout_s,
            cached=self.cache_ttl_s is not None,
            max_inflight=config.max_inflight,
        )

    async def infer(self, request: pb.InferRequest, ctx: CallContext) -> pb.InferResponse:
        inputs: Sequence[TensorLike] = request.inputs
        if self._prepare is not None:
            inputs = await self._prepare.run(request, ctx)
        # Post-ops may need any model output; without them ask Triton for exactly what the client wants
        # (nothing named: every output, in the model's order, as the route describes them).
        named = request.outputs
        asked = list(named) if named and not self._post else []
        with ctx.stage("infer"):
            result = await self.step.infer(self._model, inputs, asked, request, ctx)
        response = pb.InferResponse(route=self.name, request_id=ctx.request_id)
        if self._post:
            with ctx.stage("post"):
                wanted = list(named) or self._output_names
                response.outputs.extend(await run_ops(self._post, result.outputs, wanted))
        else:
            result.add_outputs_to(response.outputs)  # Triton's bytes, copied once
        response.models.add(name=result.model, version=result.version)
        return response


def _check_produces(model: ModelInfo, produced: Mapping[str, TensorSpec], where: str) -> None:
    """The route's inputs after its pre ops must be what the model takes."""
    for spec in model.inputs:
        got = produced.get(spec.name)
        if got is None:
            raise ConfigError(f"{where}: model {model.name!r} needs input {spec} which the route does not produce")
        if not spec.accepts(got):
            raise ConfigError(f"{where}: model {model.name!r} needs input {spec}, the route produces {got}")


DEFAULT_MAX_DELAY_MS = 2.0
"""Under the default batching, the longest a request waits while every instance of the model is busy."""
LIGHT_ROWS_PER_INSTANCE = 2
"""Under the default batching, rows per model instance in flight and waiting below which nothing waits."""


def _batcher(config: RouteConfig, model: ModelInfo, backend: InferBackend, where: str) -> MicroBatcher | None:
    """The route's micro-batcher: by default (``batching`` unset or true) one adapted to the model, when it batches.

    Adapted: a request is sent at once while fewer merged calls are in flight
    than Triton runs instances of the model (an instance is free), or while
    the rows in flight and waiting are at most two per instance (Triton's
    queue stays short, and waiting could not fill a batch but would leave an
    instance idle for a round trip); otherwise it is queued, to go as soon as
    a merged call returns: under light load nothing waits, under heavy load
    calls fill up.
    """
    if config.batching is False or (config.batching is None and model.max_batch_size <= 0):
        return None
    if model.max_batch_size <= 0:
        raise ConfigError(f"{where}.batching: model {model.name!r} does not batch (max_batch_size 0); remove batching")
    if isinstance(config.batching, BatchingConfig):
        batching = config.batching
        eager, eager_calls = batching.eager, batching.eager_calls
    else:
        batching = BatchingConfig(max_delay_ms=DEFAULT_MAX_DELAY_MS)
        eager, eager_calls = True, model.instances
    return MicroBatcher(
        backend,
        model.name,
        max_delay_s=batching.max_delay_ms / 1e3,
        max_batch=min(batching.max_batch, model.max_batch_size),
        eager=eager,
        eager_calls=eager_calls,
        light_rows=0 if isinstance(config.batching, BatchingConfig) else LIGHT_ROWS_PER_INSTANCE * model.instances,
    )
