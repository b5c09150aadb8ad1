"""API keys: the keys file, ``SWITCHYARD_API_KEYS``, the key store and which key a call presents.

Only SHA-256 digests of the keys are kept; a presented key is compared with
every stored digest in constant time. The file format is in the package
docstring (``proxy.grpc.security``).
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import os
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from switchyard.proxy.errors import ConfigError
from switchyard.proxy.settings import GatewaySettings

Metadata = Sequence[tuple[str, str | bytes]]
"""gRPC metadata as a call receives it."""

API_KEYS_ENV = "SWITCHYARD_API_KEYS"

_KEY_CHARS = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces: what fits in a metadata value
_NAME_CHARS = re.compile(r"^[A-Za-z0-9_.@-]+$")
_SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")


class SecurityConfigError(ConfigError):
    """A TLS or API key file (or ``SWITCHYARD_API_KEYS``) is missing or wrong; raised at start-up."""


def key_digest(key: str) -> bytes:
    """The SHA-256 digest under which a key is stored and compared."""
    return hashlib.sha256(key.encode("ascii")).digest()


@dataclass(frozen=True)
class ApiKey:
    """One client: its name (for logs and messages), its key's digest and the route patterns it may call."""

    name: str
    digest: bytes = field(repr=False)
    routes: tuple[str, ...] = ("*",)

    @property
    def all_routes(self) -> bool:
        return "*" in self.routes

    def allows(self, route: str) -> bool:
        return any(fnmatch.fnmatchcase(route, pattern) for pattern in self.routes)


class KeyStore:
    """The configured keys; :meth:`lookup` finds the one a presented key matches, in constant time."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self.keys: tuple[ApiKey, ...] = tuple(keys)
        names = [k.name for k in self.keys]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise SecurityConfigError(f"API keys: the name {duplicates[0]!r} is given more than once")
        digests = [k.digest for k in self.keys]
        if len(set(digests)) != len(digests):
            clash = next(k.name for k in self.keys if digests.count(k.digest) > 1)
            raise SecurityConfigError(f"API keys: the key of {clash!r} is also another name's key; keys must differ")

    def __len__(self) -> int:
        return len(self.keys)

    def lookup(self, presented: str) -> ApiKey | None:
        """The key matching ``presented``, or None. Compares with every stored digest, without early exit."""
        try:
            digest = key_digest(presented)
        except UnicodeEncodeError:
            return None
        found: ApiKey | None = None
        for key in self.keys:
            if hmac.compare_digest(digest, key.digest) and found is None:
                found = key
        return found


def _matching(pattern: re.Pattern[str], why: str) -> AfterValidator:
    """A field check: the value must match ``pattern``, else ``why``."""

    def check(value: str) -> str:
        if not pattern.match(value):
            raise ValueError(why)
        return value

    return AfterValidator(check)


_Key = Annotated[
    str,
    Field(min_length=1),
    _matching(_KEY_CHARS, "a key must be printable ASCII without spaces (it travels in gRPC metadata)"),
]
_KeySha256 = Annotated[str, _matching(_SHA256_HEX, "must be 64 hexadecimal digits (the SHA-256 of the key)")]


class _KeyEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: _Key | None = None
    key_sha256: _KeySha256 | None = None
    routes: list[str] = Field(default_factory=lambda: ["*"], min_length=1)

    @field_validator("routes")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if not pattern.strip():
                raise ValueError("route patterns must not be empty")
        return value

    @model_validator(mode="after")
    def _one_key(self) -> _KeyEntry:
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError("give exactly one of 'key' and 'key_sha256'")
        return self


class _KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: dict[str, _KeyEntry] = Field(min_length=1)

    @field_validator("keys")
    @classmethod
    def _names(cls, value: dict[str, _KeyEntry]) -> dict[str, _KeyEntry]:
        for name in value:
            if not _NAME_CHARS.match(name):
                raise ValueError(f"key name {name!r} may only use letters, digits and _ . @ -")
        return value


def _error_location(error: Mapping[str, Any]) -> str:
    return ".".join(str(part) for part in error["loc"]) or "file"


def load_keys_file(path: Path) -> list[ApiKey]:
    """Keys from a TOML keys file (format in the module docstring)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SecurityConfigError(f"api_keys_file {path}: cannot read it: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SecurityConfigError(f"api_keys_file {path}: not valid TOML: {exc}") from None
    try:
        parsed = _KeysFile.model_validate(data)
    except ValidationError as exc:
        # The messages name fields, never the values (which may be keys).
        problems = "; ".join(f"{_error_location(e)}: {e['msg']}" for e in exc.errors())
        raise SecurityConfigError(f"api_keys_file {path}: {problems}") from None
    keys = []
    for name, entry in parsed.keys.items():
        digest = key_digest(entry.key) if entry.key is not None else bytes.fromhex(entry.key_sha256 or "")
        keys.append(ApiKey(name, digest, tuple(entry.routes)))
    return keys


def parse_env_keys(value: str) -> list[ApiKey]:
    """Keys from ``SWITCHYARD_API_KEYS`` (``name:key`` pairs, comma or whitespace separated; every route)."""
    keys = []
    for index, item in enumerate(i for i in re.split(r"[,\s]+", value) if i):
        name, sep, key = item.partition(":")
        if not sep or not name or not key:
            raise SecurityConfigError(f"{API_KEYS_ENV}: item {index + 1} is not name:key")
        if not _NAME_CHARS.match(name):
            raise SecurityConfigError(f"{API_KEYS_ENV}: key name {name!r} may only use letters, digits and _ . @ -")
        if not _KEY_CHARS.match(key):
            raise SecurityConfigError(f"{API_KEYS_ENV}: the key of {name!r} must be printable ASCII")
        keys.append(ApiKey(name, key_digest(key)))
    return keys


def load_key_store(settings: GatewaySettings, environ: Mapping[str, str] | None = None) -> KeyStore | None:
    """The keys of the file and of ``SWITCHYARD_API_KEYS``; None when neither gives any (no authentication)."""
    environ = os.environ if environ is None else environ
    keys: list[ApiKey] = []
    keys_file = settings.api_keys_file
    if keys_file is not None:
        keys.extend(load_keys_file(Path(keys_file)))
    env_value = environ.get(API_KEYS_ENV, "")
    if env_value.strip():
        keys.extend(parse_env_keys(env_value))
    elif keys_file is None:
        return None
    if not keys:
        raise SecurityConfigError(f"{API_KEYS_ENV} is set but names no key")
    return KeyStore(keys)


def _credential(metadata: Metadata | None) -> str | None:
    """The presented key: ``authorization: Bearer <key>`` first, else ``x-api-key``."""
    bearer = api_key = None
    for name, value in metadata or ():
        if isinstance(value, bytes):
            continue
        if name == "authorization" and bearer is None:
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                bearer = token.strip()
        elif name == "x-api-key" and api_key is None and value.strip():
            api_key = value.strip()
    return bearer if bearer is not None else api_key


def caller(keys: KeyStore | None, metadata: Metadata | None) -> ApiKey | None:
    """The API key a call presents (None without keys, or without a valid key: the interceptor refused those)."""
    if keys is None:
        return None
    presented = _credential(metadata)
    return None if presented is None else keys.lookup(presented)
