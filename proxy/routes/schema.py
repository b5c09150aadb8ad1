"""The routes file: its schema and loader.

A route is what a client calls; it is declared here, not in code. The file is
TOML with one ``[[routes]]`` table per route::

    [[routes]]
    name = "digits"                 # what clients put in InferRequest.route
    kind = "single"                 # single | serial | parallel | progressive
    model = "digits_logreg"         # Triton model name
    version = ""                    # pinned version; "" = latest ready
    description = "8x8 digit classifier"
    timeout_s = 5.0                 # route deadline cap (optional)
    max_request_bytes = 16777216    # larger requests: INVALID_ARGUMENT
    max_inflight = 64               # this route's requests in flight at once; past it
                                    # RESOURCE_EXHAUSTED at once (optional; unset: only
                                    # the process's bound, settings' max_inflight)
    allow_non_finite = true         # false: FP16/FP32/FP64 inputs holding NaN or
                                    # +-Inf are INVALID_ARGUMENT (default true)

    # Optional: what clients send when pre-processing changes the model's
    # inputs. Omitted, the route takes exactly the model's inputs.
    [[routes.inputs]]
    name = "image"
    datatype = "UINT8"
    shape = [-1, 8, 8]

    [[routes.pre]]                  # ops run in order before the model
    op = "cast"
    tensor = "image"
    datatype = "FP32"

    [[routes.post]]                 # ops run in order after the model
    op = "topk"
    tensor = "probabilities"
    k = 3

Every kind also takes ``cache = { ttl_s = 60 }`` (prediction cache),
``coalesce = true`` (identical requests in flight share one backend call)
and ``data_cache = true`` (pre-processed inputs are reused). Single-model
routes whose model batches micro-batch by default, adapted to the model and
the load: a request goes at once while fewer calls are in flight than Triton
runs instances of the model, or while at most two rows per instance are in
flight and waiting, and waits to share a call only past that (``batching =
false`` turns it off). ``batching = { max_delay_ms = 2.0,
max_batch = 64, eager = false }`` sets it by hand: concurrent requests wait up
to the delay to share one Triton call; with ``eager`` a request is sent at
once when no merged call is in flight, or fewer than ``eager_calls``; see
``proxy.backend.batching``. Composite kinds
replace ``model`` with a list of model calls, each a *step*::

    [[routes]]
    name = "wine_alcohol_by_cultivar"
    kind = "serial"                 # steps run in order
    outputs = ["cultivar", "alcohol"]   # optional; default: all step outputs
    [[routes.steps]]
    name = "classify"
    model = "wine_classifier"
    inputs = { features = "features" }  # model input -> tensor (default: same name)
    outputs = { label = "cultivar" }    # model output -> new name (default: same)
    [[routes.steps]]
    name = "regress"                # the model is picked per row by an earlier result:
    select = { tensor = "cultivar", models = { "0" = "wine_alcohol_c0", "1" = "wine_alcohol_c1" } }
    # or: select = { tensor = "score", threshold = 0.5, below = "m_low", above = "m_high" }
    [[routes.steps.post]]           # ops on the working set after this step
    op = "clip"
    tensor = "alcohol"
    min = 0.0

    [[routes]]
    name = "wine_profile"
    kind = "parallel"               # branches run at once; outputs are "<branch>.<output>"
    policy = "partial"              # "all": a failed or late branch fails the call
    [[routes.branches]]             # (same fields as a step, without select)
    name = "cultivar"
    model = "wine_classifier"
    timeout_s = 0.5                 # this branch's own timeout

    [[routes]]
    name = "digits_progressive"
    kind = "progressive"            # stages run at once; InferProgressive streams each answer
    [[routes.stages]]
    name = "fast"
    model = "digits_logreg"
    [[routes.stages]]
    name = "accurate"
    model = "digits_mlp"

A file may declare no routes at all (a new project's ``routes.toml`` before
its first model): the gateway then serves none until a reload brings some.

This module checks the file's shape (types, unknown keys, duplicate names);
checks that need Triton's model metadata (does the model exist, do the ops
type-check) happen when routes are built (``proxy.routes``). Both fail at
start-up with the route and field named.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator

from switchyard.proxy.errors import ConfigError


class TensorSpecConfig(BaseModel):
    """One declared route input."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    datatype: str
    shape: list[int] = Field(min_length=1)

    @field_validator("shape")
    @classmethod
    def _dims(cls, value: list[int]) -> list[int]:
        if any(d < -1 or d == 0 for d in value):
            raise ValueError("dimensions must be positive or -1 (variable)")
        return value


class OpConfig(BaseModel):
    """One pre- or post-processing step: the op's name plus its parameters."""

    model_config = ConfigDict(extra="allow")

    op: str = Field(min_length=1)

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


_NAME = r"^[A-Za-z0-9_.\-]+$"
_VERSION = r"^[0-9]*$"


class CacheConfig(BaseModel):
    """A route's prediction cache: answers stored by (route, versions, op parameters, input bytes)."""

    model_config = ConfigDict(extra="forbid")

    ttl_s: float = Field(60.0, gt=0)


class BatchingConfig(BaseModel):
    """Gateway-side micro-batching of a single-model route (see ``proxy.backend.batching``)."""

    model_config = ConfigDict(extra="forbid")

    max_delay_ms: float = Field(2.0, ge=0, le=1000)
    """The longest a request waits for others to share its backend call."""
    max_batch: int = Field(64, ge=1)
    """Rows per merged call (capped at the model's max_batch_size)."""
    eager: bool = False
    """Send a request at once when no merged call of its queue is in flight (no delay at low load)."""
    eager_calls: int = Field(1, ge=1)
    """With ``eager``: send at once while fewer than this many merged calls of the queue are in flight."""


class SelectConfig(BaseModel):
    """How a serial step picks its model, row by row, from an earlier result.

    Either ``models`` maps a class value (the tensor's integer value, as a
    string) to a model, or ``threshold`` sends rows whose value is below it to
    ``below`` and the others to ``above``.
    """

    model_config = ConfigDict(extra="forbid")

    tensor: str = Field(min_length=1)
    models: dict[str, str] | None = None
    threshold: float | None = None
    below: str | None = None
    above: str | None = None

    @model_validator(mode="after")
    def _one_form(self) -> SelectConfig:
        by_class = self.models is not None
        by_threshold = self.threshold is not None or self.below is not None or self.above is not None
        if by_class == by_threshold:
            raise ValueError("give either models (by class) or threshold with below and above")
        if by_threshold and (self.threshold is None or not self.below or not self.above):
            raise ValueError("a threshold selection needs threshold, below and above")
        if by_class and not self.models:
            raise ValueError("models must map at least one class to a model")
        if by_class:
            for key in self.models or {}:
                if not key.lstrip("-").isdigit():
                    raise ValueError(f"class {key!r} is not an integer")
        return self

    def choices(self) -> list[str]:
        if self.models is not None:
            return list(dict.fromkeys(self.models.values()))
        return list(dict.fromkeys([self.below or "", self.above or ""]))


class StepConfig(BaseModel):
    """One model call of a composite route: a serial step, a parallel branch or a progressive stage.

    ``inputs`` maps the model's input names to tensors of the route's working
    set (default: the same name); ``outputs`` renames the model's outputs as
    they enter the working set (default: keep every output under its own
    name); ``post`` ops run on the working set after the call.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=_NAME)
    model: str | None = Field(None, min_length=1)
    version: str = Field("", pattern=_VERSION)
    select: SelectConfig | None = None
    inputs: dict[str, str] = Field(default_factory=dict)
    outputs: dict[str, str] = Field(default_factory=dict)
    post: list[OpConfig] = Field(default_factory=list)
    timeout_s: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _model_or_select(self) -> StepConfig:
        if (self.model is None) == (self.select is None):
            raise ValueError("give exactly one of model or select")
        if self.select is not None and self.version:
            raise ValueError("version cannot be pinned on a step that selects its model")
        return self

    def models(self) -> list[str]:
        return [self.model] if self.model is not None else (self.select.choices() if self.select else [])


class RouteConfigBase(BaseModel):
    """What every route kind takes."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=_NAME)
    description: str = ""
    timeout_s: float | None = Field(None, gt=0)
    max_request_bytes: int = Field(16 * 1024 * 1024, ge=1)
    max_inflight: int | None = Field(None, ge=1)
    inputs: list[TensorSpecConfig] | None = None
    pre: list[OpConfig] = Field(default_factory=list)
    post: list[OpConfig] = Field(default_factory=list)
    cache: CacheConfig | None = None
    coalesce: bool = False
    data_cache: bool = False
    allow_non_finite: bool = True

    def models(self) -> list[str]:
        raise NotImplementedError


class RouteConfig(RouteConfigBase):
    """A single-model route."""

    kind: Literal["single"] = "single"
    model: str = Field(min_length=1)
    version: str = Field("", pattern=_VERSION)
    batching: (
        Annotated[
            Annotated[BatchingConfig, Tag("table")] | Annotated[bool, Tag("switch")],
            Discriminator(
                lambda value: "switch" if isinstance(value, bool) else "table",
                custom_error_type="batching",
                custom_error_message="batching takes true, false or a table of settings",
            ),
        ]
        | None
    ) = None
    """Micro-batching: unset or ``true``, on when the model batches, adapted to it (see ``proxy.backend.batching``);
    ``false``, off; a table, as given."""

    def models(self) -> list[str]:
        return [self.model]


class _CompositeBase(RouteConfigBase):
    steps_field: ClassVar[str]
    """The field that lists the route's steps."""
    selects: ClassVar[bool] = False
    """Whether a step may choose its model per request (``select``)."""

    def step_list(self) -> list[StepConfig]:
        steps: list[StepConfig] = getattr(self, self.steps_field)
        return steps

    def models(self) -> list[str]:
        return list(dict.fromkeys(m for step in self.step_list() for m in step.models()))

    @model_validator(mode="after")
    def _unique_steps(self) -> _CompositeBase:
        names = [s.name for s in self.step_list()]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"step {name!r} is declared twice")
        return self

    @model_validator(mode="after")
    def _plain_steps(self) -> _CompositeBase:
        for step in self.step_list():
            if step.select is not None and not self.selects:
                raise ValueError(
                    f"{self.steps_field}: {step.name!r} uses select, which only a serial route's steps may"
                )
        return self


class SerialRouteConfig(_CompositeBase):
    """Steps run in order; each one's outputs join the working set the next one reads."""

    steps_field = "steps"
    selects = True
    kind: Literal["serial"]
    steps: list[StepConfig] = Field(min_length=1)
    outputs: list[str] | None = None


class ParallelRouteConfig(_CompositeBase):
    """Branches run at once on the same inputs; outputs are named ``<branch>.<output>``."""

    steps_field = "branches"
    kind: Literal["parallel"]
    branches: list[StepConfig] = Field(min_length=2)
    policy: Literal["all", "partial"] = "all"

    @model_validator(mode="after")
    def _post_needs_all(self) -> ParallelRouteConfig:
        if self.policy == "partial" and self.post:
            raise ValueError("route-level post ops need every branch; with policy 'partial' put them on the branches")
        return self


class ProgressiveRouteConfig(_CompositeBase):
    """Stages (fast first) run at once; each answer is streamed as it improves on the last."""

    steps_field = "stages"
    kind: Literal["progressive"]
    stages: list[StepConfig] = Field(min_length=2)

    @model_validator(mode="after")
    def _uncached(self) -> ProgressiveRouteConfig:
        if self.cache is not None or self.coalesce:
            raise ValueError("progressive routes are neither cached nor coalesced")
        return self


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("kind", "single"))
    return str(getattr(value, "kind", "single"))


AnyRouteConfig = Annotated[
    Annotated[RouteConfig, Tag("single")]
    | Annotated[SerialRouteConfig, Tag("serial")]
    | Annotated[ParallelRouteConfig, Tag("parallel")]
    | Annotated[ProgressiveRouteConfig, Tag("progressive")],
    Discriminator(
        _kind,
        custom_error_type="route_kind",
        custom_error_message="kind must be one of single, serial, parallel, progressive",
    ),
]


class RoutesFile(BaseModel):
    """The whole routes file."""

    model_config = ConfigDict(extra="forbid")

    routes: list[AnyRouteConfig] = Field(default_factory=list)

    @field_validator("routes")
    @classmethod
    def _unique(cls, routes: list[AnyRouteConfig]) -> list[AnyRouteConfig]:
        seen: set[str] = set()
        for route in routes:
            if route.name in seen:
                raise ValueError(f"route {route.name!r} is declared twice")
            seen.add(route.name)
        return routes


_UNION_TAGS = ("table", "switch")
"""Tags of the unions inside a route (``batching``), left out of the field a message names."""


def _describe(error: ValidationError, data: dict[str, Any]) -> str:
    lines = []
    for item in error.errors():
        loc = list(item["loc"])
        where = ".".join(str(p) for p in loc)
        # Name the route rather than its index: "routes[digits].model".
        if len(loc) >= 3 and loc[0] == "routes" and loc[2] in ("single", "serial", "parallel", "progressive"):
            loc = loc[:2] + loc[3:]  # the kind's union tag
        loc = [part for part in loc if part not in _UNION_TAGS]
        where = ".".join(str(p) for p in loc)
        if len(loc) >= 2 and loc[0] == "routes" and isinstance(loc[1], int):
            try:
                name = data["routes"][loc[1]].get("name", loc[1])
            except (KeyError, IndexError, AttributeError):
                name = loc[1]
            where = f"routes[{name}]" + "".join(f".{p}" for p in loc[2:])
        if item["type"] == "route_kind":
            where += ".kind"
        lines.append(f"{where}: {item['msg']}")
    return "; ".join(lines)


def parse_routes(text: str, source: str = "<routes>") -> RoutesFile:
    """Parses routes TOML text; raises ConfigError naming the route and field."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    try:
        return RoutesFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc, data)}") from None


def load_routes(path: Path) -> RoutesFile:
    """Loads the routes file at ``path``; raises ConfigError naming the route and field."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read routes file {path}: {exc.strerror}") from None
    return parse_routes(text, str(path))
