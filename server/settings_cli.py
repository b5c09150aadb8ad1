"""Every gateway setting as a command-line flag and as a key of a settings file.

The flags of ``switchyard serve`` are generated from
:class:`~switchyard.proxy.settings.GatewaySettings`: one ``--field-name`` per
field, its help the field's description, its type, choices and default taken
from the annotation, and the environment variable that sets it named. A
settings file (``--settings FILE``, TOML, one ``field_name = value`` per line)
holds the same keys. Where one setting is given in several places the most
specific wins: flag, then environment variable, then settings file, then the
default.

This module owns that mapping (and the one-line description of a bad value);
which settings exist, their defaults and their checks live in
``proxy/settings.py``.
"""

from __future__ import annotations

import argparse
import difflib
import os
import tomllib
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from switchyard.proxy.errors import ConfigError
from switchyard.proxy.settings import GatewaySettings

ENV_PREFIX = "SWITCHYARD_"
UNSET = "none"
"""What a flag of an optional setting takes to unset it (``--metrics-port none``)."""

PRECEDENCE = "flag > environment variable > settings file > default"


def flag_of(name: str) -> str:
    """``--routes-file`` for ``routes_file``."""
    return "--" + name.replace("_", "-")


def env_of(name: str) -> str:
    """``SWITCHYARD_ROUTES_FILE`` for ``routes_file``."""
    return ENV_PREFIX + name.upper()


def fields() -> Iterator[tuple[str, FieldInfo]]:
    """Every setting, in the order ``proxy/settings.py`` declares them."""
    yield from GatewaySettings.model_fields.items()


def _split_optional(annotation: Any) -> tuple[Any, bool]:
    """(the annotation without ``None``, whether ``None`` is allowed)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], len(args) < len(typing.get_args(annotation))
    return annotation, False


def type_name(info: FieldInfo) -> str:
    """The value a setting takes, as the help and the docs show it (``int``, ``off|system``, ``path or none``)."""
    base, optional = _split_optional(info.annotation)
    if typing.get_origin(base) is Literal:
        text = "|".join(str(c) for c in typing.get_args(base))
    elif typing.get_origin(base) is tuple:
        text = "list (comma-separated)"
    elif base is Path:
        text = "path"
    else:
        text = getattr(base, "__name__", str(base))
    return f"{text} or {UNSET}" if optional else text


def default_text(info: FieldInfo) -> str:
    """The default as the help and the docs show it; empty for a default computed at start (see the description)."""
    if info.default_factory is not None:
        return ""
    value = info.default
    if value is None:
        return "unset"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _parser_of(info: FieldInfo) -> tuple[Callable[[str], Any] | None, Sequence[str] | None]:
    """(argparse ``type``, ``choices``) of a setting's flag."""
    base, optional = _split_optional(info.annotation)
    choices: Sequence[str] | None = None
    convert: Callable[[str], Any]
    if typing.get_origin(base) is Literal:
        choices = [str(c) for c in typing.get_args(base)]
        convert = str
    elif typing.get_origin(base) is tuple:

        def convert(text: str) -> tuple[str, ...]:
            return tuple(item.strip() for item in text.split(",") if item.strip())

    elif base in (int, float, str, Path):
        convert = base
    else:  # pragma: no cover - a new kind of setting needs a line here
        raise TypeError(f"no flag for a setting of type {info.annotation!r}")
    if not optional:
        return convert, choices

    def convert_or_unset(text: str) -> Any:
        return None if text.lower() == UNSET else convert(text)

    if choices is not None:
        choices = [*choices, UNSET]
    return convert_or_unset, choices


def _typed(convert: Callable[[str], Any], label: str) -> Callable[[str], Any]:
    """``convert`` with argparse's usage error (``invalid int value``) named after the setting's type."""

    def parse(text: str) -> Any:
        try:
            return convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {label} value: {text!r}") from None

    return parse


def _help(name: str, info: FieldInfo, note: str | None) -> str:
    parts = [(info.description or "").rstrip(".") + "."]
    if note:
        parts.append(note.rstrip(".") + ".")
    default = default_text(info)
    tail = f"[{env_of(name)}" + (f"; default: {default}" if default else "") + "]"
    parts.append(tail)
    return " ".join(parts).replace("%", "%%")


def add_settings_arguments(
    parser: argparse.ArgumentParser,
    *,
    aliases: Mapping[str, Sequence[str]] | None = None,
    notes: Mapping[str, str] | None = None,
) -> None:
    """Adds one flag per setting to ``parser`` (``dest`` the field's name; absent unless given on the line).

    ``aliases`` adds older spellings of a flag (``routes_file``: ``--config``);
    ``notes`` adds a sentence to a setting's help where the command changes
    its meaning (what ``serve`` does when ``triton_url`` is unset).
    """
    aliases = aliases or {}
    notes = notes or {}
    general = parser.add_argument_group(
        "gateway settings",
        f"Each also from its environment variable or a --settings file; {PRECEDENCE}. "
        f"A setting that may be unset takes '{UNSET}'.",
    )
    jobs = parser.add_argument_group("asynchronous jobs (switchyard.v1.Jobs)")
    for name, info in fields():
        group = jobs if name.startswith("jobs_") or name == "data_dir" else general
        base, _ = _split_optional(info.annotation)
        names = [flag_of(name), *aliases.get(name, ())]
        if base is bool:
            group.add_argument(
                *names,
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=_help(name, info, notes.get(name)),
            )
            continue
        convert, choices = _parser_of(info)
        assert convert is not None
        group.add_argument(
            *names,
            dest=name,
            type=_typed(convert, type_name(info)) if choices is None else convert,
            choices=choices,
            default=argparse.SUPPRESS,
            metavar=None if choices else _METAVARS.get(base, "VALUE"),
            help=_help(name, info, notes.get(name)),
        )


_METAVARS: dict[Any, str] = {int: "N", float: "NUM", str: "TEXT", Path: "PATH"}


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given as flags on the command line."""
    return {name: getattr(args, name) for name, _ in fields() if hasattr(args, name)}


def read_settings_file(path: Path) -> dict[str, Any]:
    """The settings in a TOML file; ConfigError naming the file and the key for a bad file or an unknown key.

    A relative path in it (``routes_file = "routes.toml"``) is relative to the file's folder.
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read settings file {path} (--settings): {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    known = GatewaySettings.model_fields
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else "; `switchyard serve --help` lists every setting"
            raise ConfigError(f"{path}: unknown setting '{key}'{hint}")
        base, _ = _split_optional(known[key].annotation)
        if base is Path and isinstance(data[key], str) and not Path(data[key]).expanduser().is_absolute():
            data[key] = str(path.parent / data[key])
    return data


def load_settings(
    flags: Mapping[str, Any], settings_file: Path | None = None, environ: Mapping[str, str] | None = None
) -> GatewaySettings:
    """The settings from ``flags``, the environment and ``settings_file``, in that order of precedence.

    Raises ConfigError with one line naming the setting, its flag and its
    environment variable when a value is wrong.
    """
    environ = os.environ if environ is None else environ
    from_file = read_settings_file(settings_file) if settings_file is not None else {}
    in_env = {key.upper() for key in environ}
    values = {key: value for key, value in from_file.items() if env_of(key) not in in_env}
    values.update(flags)
    try:
        return GatewaySettings(**values)
    except ValidationError as exc:
        raise ConfigError(describe(exc, settings_file)) from None


def describe(error: ValidationError, settings_file: Path | None = None) -> str:
    """One line per problem: the setting, where it can be set, and pydantic's reason."""
    problems = []
    for item in error.errors():
        reason = item["msg"].removeprefix("Value error, ")
        if item["loc"]:
            name = str(item["loc"][0])
            where = f"{flag_of(name)}, {env_of(name)}" + (f" or {settings_file}" if settings_file else "")
            problems.append(f"setting {name} ({where}): {reason}, got {item['input']!r}")
        else:
            problems.append(f"settings: {reason}")
    return "; ".join(problems)


def markdown_table() -> str:
    """Every setting as a Markdown table: name, flag and variable, type, default, description."""
    rows = ["| Setting | Flag / variable | Type | Default | What it does |", "|---|---|---|---|---|"]
    for name, info in fields():
        description = (info.description or "").replace("|", "\\|")
        default = default_text(info).replace("|", "\\|") or "see description"
        kind = type_name(info).replace("|", "\\|")
        rows.append(f"| `{name}` | `{flag_of(name)}` `{env_of(name)}` | {kind} | `{default}` | {description} |")
    return "\n".join(rows)
