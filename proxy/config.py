"""The routes file: its schema and loader.

A route is what a client calls; it is declared here, not in code. The file is
TOML with one ``[[routes]]`` table per route::

    [[routes]]
    name = "digits"                 # what clients put in InferRequest.route
    kind = "single"                 # serving pattern (only "single" so far)
    model = "digits_logreg"         # Triton model name
    version = ""                    # pinned version; "" = latest ready
    description = "8x8 digit classifier"
    timeout_s = 5.0                 # route deadline cap (optional)
    max_request_bytes = 16777216    # larger requests: INVALID_ARGUMENT

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

This module checks the file's shape (types, unknown keys, duplicate names);
checks that need Triton's model metadata (does the model exist, do the ops
type-check) happen when routes are built (``proxy.routes``). Both fail at
start-up with the route and field named.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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


class RouteConfig(BaseModel):
    """One ``[[routes]]`` table."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    kind: Literal["single"] = "single"
    model: str = Field(min_length=1)
    version: str = Field("", pattern=r"^[0-9]*$")
    description: str = ""
    timeout_s: float | None = Field(None, gt=0)
    max_request_bytes: int = Field(16 * 1024 * 1024, ge=1)
    inputs: list[TensorSpecConfig] | None = None
    pre: list[OpConfig] = Field(default_factory=list)
    post: list[OpConfig] = Field(default_factory=list)


class RoutesFile(BaseModel):
    """The whole routes file."""

    model_config = ConfigDict(extra="forbid")

    routes: list[RouteConfig] = Field(min_length=1)

    @field_validator("routes")
    @classmethod
    def _unique(cls, routes: list[RouteConfig]) -> list[RouteConfig]:
        seen: set[str] = set()
        for route in routes:
            if route.name in seen:
                raise ValueError(f"route {route.name!r} is declared twice")
            seen.add(route.name)
        return routes


def _describe(error: ValidationError, data: dict[str, Any]) -> str:
    lines = []
    for item in error.errors():
        loc = list(item["loc"])
        where = ".".join(str(p) for p in loc)
        # Name the route rather than its index: "routes[digits].model".
        if len(loc) >= 2 and loc[0] == "routes" and isinstance(loc[1], int):
            try:
                name = data["routes"][loc[1]].get("name", loc[1])
            except (KeyError, IndexError, AttributeError):
                name = loc[1]
            where = f"routes[{name}]" + "".join(f".{p}" for p in loc[2:])
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


def load_routes(path: Path | None) -> RoutesFile:
    """Loads the routes file at ``path``, or the bundled default routes when None."""
    if path is None:
        text = resources.files("switchyard.server").joinpath("default_routes.toml").read_text()
        return parse_routes(text, "default_routes.toml")
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read routes file {path}: {exc.strerror}") from None
    return parse_routes(text, str(path))
