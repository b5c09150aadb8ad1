"""The single-model route: validate, pre-process, infer, post-process.

With no pre-ops the client's tensors go to Triton as they arrived (raw
bytes, no decoding); with no post-ops Triton's outputs come back the same
way. Ops run only when the route declares them.

With ``batching`` configured, the model call goes through a
:class:`~switchyard.proxy.backend.batching.MicroBatcher`: concurrent requests (per
version, input shapes and requested outputs) share one Triton call.
"""

from __future__ import annotations

from collections.abc import Sequence

from switchyard.proxy.backend.batching import MicroBatcher
from switchyard.proxy.backend.triton import ModelInfo, TritonBackend
from switchyard.proxy.cache import Cache
from switchyard.proxy.errors import ConfigError
from switchyard.proxy.lifecycle.context import CallContext
from switchyard.proxy.ops import Op, build_op
from switchyard.proxy.routes.base import Preprocessor, Route, RouteDescription, chain_specs, fingerprint_of, run_ops
from switchyard.proxy.routes.schema import RouteConfig
from switchyard.proxy.tensor_spec import TensorSpec
from switchyard.v1 import gateway_pb2 as pb


class SingleModelRoute(Route):
    def __init__(
        self, config: RouteConfig, model: ModelInfo, backend: TritonBackend, data_cache: Cache | None = None
    ) -> None:
        where = f"routes[{config.name}]"
        self.cache_ttl_s = config.cache.ttl_s if config.cache is not None else None
        self.coalesce = config.coalesce
        self.fingerprint = fingerprint_of(config)
        if config.version and config.version not in model.versions:
            raise ConfigError(
                f"{where}.version: model {model.name!r} has no ready version {config.version!r} "
                f"(ready: {', '.join(model.versions) or 'none'})"
            )
        self._backend = backend
        self._model = model.name
        self._version = config.version
        self._pre: list[Op] = [build_op(o.op, o.params(), f"{where}.pre[{i}]") for i, o in enumerate(config.pre)]
        self._post: list[Op] = [build_op(o.op, o.params(), f"{where}.post[{i}]") for i, o in enumerate(config.post)]

        inputs = _declared_inputs(config, model, where)
        produced = chain_specs(self._pre, inputs, f"{where}.pre")
        for spec in model.inputs:
            got = produced.get(spec.name)
            if got is None:
                raise ConfigError(
                    f"{where}.pre: model {model.name!r} needs input {spec} which the route does not produce"
                )
            if not spec.accepts(got):
                raise ConfigError(f"{where}.pre: model {model.name!r} needs input {spec}, the route produces {got}")
        outputs = chain_specs(self._post, model.outputs, f"{where}.post")
        self._model_inputs = [s.name for s in model.inputs]
        self._batcher: MicroBatcher | None = None
        if config.batching is not None:
            if model.max_batch_size <= 0:
                raise ConfigError(
                    f"{where}.batching: model {model.name!r} does not batch (max_batch_size 0); remove batching"
                )
            self._batcher = MicroBatcher(
                backend,
                model.name,
                max_delay_s=config.batching.max_delay_ms / 1e3,
                max_batch=min(config.batching.max_batch, model.max_batch_size),
                eager=config.batching.eager,
                eager_calls=config.batching.eager_calls,
            )
        self._prepare = Preprocessor(
            config.name, self._pre, self._model_inputs, data_cache if config.data_cache else None, 60.0
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
        inputs: Sequence[pb.Tensor] = request.inputs
        if self._pre:
            inputs = await self._prepare.run(request, ctx)
        wanted = list(request.outputs) or [s.name for s in self.description.outputs]
        # Post-ops may need any model output; without them ask Triton for
        # exactly what the client wants.
        model_outputs: list[str] = [] if self._post else wanted
        version = request.model_versions.get(self._model, self._version)
        with ctx.stage("infer"):
            if self._batcher is None:
                result = await self._backend.infer(
                    self._model, version, inputs, model_outputs, timeout_s=ctx.remaining(), request_id=ctx.request_id
                )
            else:
                result = await self._batcher.infer(
                    version, inputs, model_outputs, deadline=ctx.deadline, request_id=ctx.request_id
                )
        outputs = result.outputs
        if self._post:
            with ctx.stage("post"):
                outputs = await run_ops(self._post, outputs, wanted)
        return pb.InferResponse(
            route=self.name,
            request_id=ctx.request_id,
            outputs=outputs,
            models=[pb.ModelRef(name=result.model, version=result.version)],
        )


def _declared_inputs(config: RouteConfig, model: ModelInfo, where: str) -> list[TensorSpec]:
    if config.inputs is None:
        if config.pre:
            raise ConfigError(f"{where}.inputs: a route with pre-processing ops must declare its inputs")
        return list(model.inputs)
    specs = [TensorSpec(i.name, i.datatype, tuple(i.shape)) for i in config.inputs]
    if model.max_batch_size > 0:
        for i, spec in enumerate(specs):
            if spec.shape[0] != -1:
                raise ConfigError(
                    f"{where}.inputs[{i}].shape: first dimension must be -1 (the batch); got {list(spec.shape)}"
                )
    return specs
