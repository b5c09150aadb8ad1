"""The op interface and registry.

An op is one named, parameterised pre- or post-processing step. It declares
its parameters as pydantic fields (so bad parameters fail at start-up with
the field named), computes the tensor specs it produces from the specs it is
given (so a route's op chain is type-checked before any request), and
transforms a dict of arrays written against the array module ``xp``.

Users add ops by subclassing :class:`Op` and naming the class by import path
in the routes file (``op = "mypackage.ops:Denoise"``), or by calling
:func:`register_op` before the server starts.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from switchyard.proxy.errors import ConfigError
from switchyard.proxy.tensor_spec import TensorSpec

Arrays = dict[str, Any]
Specs = dict[str, TensorSpec]


class OpTypeError(ValueError):
    """An op cannot apply to the specs it is given (raised while building routes)."""


class Op(BaseModel):
    """Base of every op: ``tensor`` is the input it reads, ``output`` the name it writes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ClassVar[str]
    tensor: str
    output: str | None = None

    @property
    def target(self) -> str:
        return self.output or self.tensor

    def input_spec(self, specs: Specs) -> TensorSpec:
        try:
            return specs[self.tensor]
        except KeyError:
            raise OpTypeError(
                f"tensor {self.tensor!r} does not exist here (have: {', '.join(sorted(specs))})"
            ) from None

    def output_specs(self, specs: Specs) -> Specs:
        """Specs after this op; raises OpTypeError when it cannot apply."""
        out = dict(specs)
        out[self.target] = self.transform_spec(self.input_spec(specs)).renamed(self.target)
        return out

    def transform_spec(self, spec: TensorSpec) -> TensorSpec:
        raise NotImplementedError

    def apply(self, arrays: Arrays, xp: ModuleType) -> Arrays:
        out = dict(arrays)
        out[self.target] = self.compute(arrays[self.tensor], xp)
        return out

    def compute(self, array: Any, xp: ModuleType) -> Any:
        raise NotImplementedError


_REGISTRY: dict[str, type[Op]] = {}


def register_op(cls: type[Op]) -> type[Op]:
    """Class decorator: makes ``cls`` available under ``cls.name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"op {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def op_names() -> list[str]:
    return sorted(_REGISTRY)


def _resolve(name: str) -> type[Op]:
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"op {name!r} cannot be imported: {exc}") from None
        if not (isinstance(cls, type) and issubclass(cls, Op)):
            raise ConfigError(f"op {name!r} is not a subclass of switchyard.proxy.ops.Op")
        return cls
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown op {name!r} (known: {', '.join(op_names())})") from None


def build_op(name: str, params: dict[str, Any], where: str) -> Op:
    """Instantiates op ``name``; ``where`` (e.g. ``routes[digits].pre[0]``) prefixes every error."""
    try:
        cls = _resolve(name)
    except ConfigError as exc:
        raise ConfigError(f"{where}.op: {exc}") from None
    try:
        return cls(**params)
    except ValidationError as exc:
        reasons = "; ".join(f"{where}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(reasons) from None
