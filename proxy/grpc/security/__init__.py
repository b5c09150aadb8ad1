"""TLS, mutual TLS, API keys and per-route authorisation of the gateway port.

**Transport.** With ``tls_cert_file`` and ``tls_key_file`` (PEM; the key
unencrypted) the gRPC port serves TLS only; with ``tls_client_ca_file`` too,
every client must present a certificate signed by one of that file's CAs
(mutual TLS), or the handshake fails. The files are checked at start-up with
the ``ssl`` module (readable, PEM, key matches certificate), so a bad file
stops the server with a clear message rather than failing connections later.
Mutual TLS covers the whole port, health and reflection included: load
balancers then need a client certificate too.

**API keys.** When keys are configured, every call of an authenticated service
(everything except ``auth_public_services``: by default health and server
reflection, so that load balancers and ``grpcurl list`` work without a key)
must carry one, as ``authorization: Bearer <key>`` or ``x-api-key: <key>``
metadata. A missing or unknown key is ``UNAUTHENTICATED`` (the message says
how to send a key, never which keys exist). Keys come from two places, merged:

* ``api_keys_file`` (``--api-keys-file``), TOML, one table per client::

      [keys.alice]
      key = "a-long-random-string"     # or key_sha256 = "<hex SHA-256 of the key>"
      routes = ["digits", "wine*"]      # glob patterns (fnmatch); default ["*"]: every route

      [keys.dashboard]
      key_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
      routes = ["*"]

* the environment variable ``SWITCHYARD_API_KEYS``: ``name:key`` pairs
  separated by commas or whitespace (``alice:k1,bob:k2``); each may call
  every route. A key may contain ``:`` but no comma or whitespace.

Names must be unique across both, and so must keys. Only SHA-256 digests of
the keys are kept in memory; a presented key is hashed and compared with
every stored digest in constant time (``hmac.compare_digest``, no early exit).
Keys are never logged; refusals and (at DEBUG) accepted calls are logged with
the key's *name* only. Start-up warns when keys travel without TLS, when
the keys file can be read by other users, and for a route pattern that
matches no route served (a likely typo).

**Authorisation.** A key may call the routes its patterns match. The route is
inside the request message, so the interceptor wraps the method handlers and
checks each request message as it arrives: ``Infer`` and ``InferProgressive``
check ``route``, ``GetRoute`` checks ``name``, ``Jobs.SubmitJob`` checks
``request.route``, and ``InferStream`` checks
every request of the stream; a refused route is ``PERMISSION_DENIED`` naming
the route. On ``InferStream`` a refused request aborts the whole stream with
``PERMISSION_DENIED`` (answers not yet sent are lost): a client only sends a
route it may not use by mistake, so failing loudly is preferred to a per-request
error. ``ListRoutes`` needs a valid key and lists only the routes the key may
use. Any other method whose request has a ``route`` field is checked on it;
a method with no route in its request is open to every key only if it is
``ListRoutes``, otherwise only to keys allowed every route (``["*"]``), so a
method added later is closed to restricted keys until it is listed here.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import hmac
import inspect
import logging
import os
import re
import ssl
import stat
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import tomllib
from google.protobuf.message import Message
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from switchyard.proxy.errors import ConfigError
from switchyard.proxy.settings import GatewaySettings

log = logging.getLogger(__name__)

API_KEYS_ENV = "SWITCHYARD_API_KEYS"
DEFAULT_PUBLIC_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)
GATEWAY_SERVICE = "switchyard.v1.Gateway"
JOBS_SERVICE = "switchyard.v1.Jobs"

# Method -> the request field that names the route the call uses.
ROUTE_FIELDS: dict[str, str] = {
    f"/{GATEWAY_SERVICE}/Infer": "route",
    f"/{GATEWAY_SERVICE}/InferStream": "route",
    f"/{GATEWAY_SERVICE}/InferProgressive": "route",
    f"/{GATEWAY_SERVICE}/GetRoute": "name",
    f"/{JOBS_SERVICE}/SubmitJob": "request.route",
}
# Methods that use no route and are open to every valid key (the Jobs service
# lets a key reach only its own jobs).
LIST_ROUTES = f"/{GATEWAY_SERVICE}/ListRoutes"
ROUTELESS_METHODS = frozenset(
    {LIST_ROUTES, *(f"/{JOBS_SERVICE}/{m}" for m in ("GetJob", "WatchJob", "CancelJob", "ListJobs"))}
)

AUTH_REFUSED = Counter(
    "switchyard_auth_refused",
    "Calls refused by authentication or authorisation, by gRPC status code.",
    ["code"],
)

_KEY_CHARS = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces: what fits in a metadata value
_NAME_CHARS = re.compile(r"^[A-Za-z0-9_.@-]+$")
_SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")

MISSING_CREDENTIALS = (
    "missing credentials: send an API key as 'authorization: Bearer <key>' or 'x-api-key: <key>' metadata"
)
INVALID_CREDENTIALS = "invalid API key"


class SecurityConfigError(ConfigError):
    """A TLS or API key file (or ``SWITCHYARD_API_KEYS``) is missing or wrong; raised at start-up."""


# -- API keys -----------------------------------------------------------------


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


class _KeyEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str | None = Field(None, min_length=1)
    key_sha256: str | None = None
    routes: list[str] = Field(default_factory=lambda: ["*"], min_length=1)

    @field_validator("key")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        if value is not None and not _KEY_CHARS.match(value):
            raise ValueError("a key must be printable ASCII without spaces (it travels in gRPC metadata)")
        return value

    @field_validator("key_sha256")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        if value is not None and not _SHA256_HEX.match(value):
            raise ValueError("must be 64 hexadecimal digits (the SHA-256 of the key)")
        return value

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


# -- TLS ------------------------------------------------------------------------


class _Encrypted(Exception):
    pass


def _refuse_password() -> bytes:
    raise _Encrypted


def _read_pem(label: str, path: Path, marker: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SecurityConfigError(f"{label} {path}: cannot read it: {exc.strerror or exc}") from None
    if f"-----BEGIN {marker}".encode() not in data and not (
        marker == "PRIVATE KEY" and re.search(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----", data)
    ):
        raise SecurityConfigError(f"{label} {path}: no PEM {marker.lower()} in it")
    return data


def server_credentials(
    cert_file: Path | None, key_file: Path | None, client_ca_file: Path | None
) -> grpc.ServerCredentials | None:
    """TLS credentials for the gRPC port (mutual TLS with ``client_ca_file``); None when TLS is off."""
    if cert_file is None and key_file is None:
        if client_ca_file is not None:
            raise SecurityConfigError("tls_client_ca_file needs tls_cert_file and tls_key_file (mutual TLS is TLS)")
        return None
    if cert_file is None or key_file is None:
        missing = "tls_cert_file" if cert_file is None else "tls_key_file"
        raise SecurityConfigError(f"TLS needs both tls_cert_file and tls_key_file; {missing} is not set")
    cert = _read_pem("tls_cert_file", cert_file, "CERTIFICATE")
    key = _read_pem("tls_key_file", key_file, "PRIVATE KEY")
    check = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        check.load_cert_chain(cert_file, key_file, password=_refuse_password)
    except _Encrypted:
        raise SecurityConfigError(f"tls_key_file {key_file}: the key is encrypted; give an unencrypted key") from None
    except ssl.SSLError as exc:
        raise SecurityConfigError(
            f"tls_cert_file {cert_file} / tls_key_file {key_file}: not a usable certificate and key "
            f"(does the key belong to the certificate?): {exc.reason or exc}"
        ) from None
    client_ca = None
    if client_ca_file is not None:
        client_ca = _read_pem("tls_client_ca_file", client_ca_file, "CERTIFICATE")
        try:
            check.load_verify_locations(cafile=client_ca_file)
        except ssl.SSLError as exc:
            raise SecurityConfigError(
                f"tls_client_ca_file {client_ca_file}: not a usable CA: {exc.reason or exc}"
            ) from None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


# -- the interceptor ------------------------------------------------------------


def _credential(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
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


def caller(keys: KeyStore | None, metadata: Sequence[tuple[str, str | bytes]] | None) -> ApiKey | None:
    """The API key a call presents (None without keys, or without a valid key: the interceptor refused those)."""
    if keys is None:
        return None
    presented = _credential(metadata)
    return None if presented is None else keys.lookup(presented)


def _service(method: str) -> str:
    return method.lstrip("/").partition("/")[0]


Behaviour = Callable[..., Any]


async def _finish(result: Any) -> AsyncIterator[Any]:
    """Yields a handler's messages, whether it is an async generator or a coroutine using ``context.write``."""
    if inspect.isasyncgen(result):
        async with contextlib.aclosing(result):
            async for message in result:
                yield message
    elif inspect.isawaitable(result):
        await result
    elif result is not None:
        for message in result:
            yield message


async def _call(behaviour: Behaviour, *args: Any) -> Any:
    result = behaviour(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates every call of a non-public service by API key and checks each request's route."""

    def __init__(self, keys: KeyStore, public_services: Iterable[str] = DEFAULT_PUBLIC_SERVICES) -> None:
        self._keys = keys
        self._public = frozenset(public_services)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method: str = handler_call_details.method
        handler = await continuation(handler_call_details)
        if handler is None or _service(method) in self._public:
            return handler
        presented = _credential(handler_call_details.invocation_metadata)
        if presented is None:
            log.info("refused %s: no API key", method)
            return _refusal(handler, grpc.StatusCode.UNAUTHENTICATED, MISSING_CREDENTIALS)
        key = self._keys.lookup(presented)
        if key is None:
            log.info("refused %s: unknown API key", method)
            return _refusal(handler, grpc.StatusCode.UNAUTHENTICATED, INVALID_CREDENTIALS)
        log.debug("call %s with API key %r", method, key.name)
        if key.all_routes and method != LIST_ROUTES:
            return handler
        return _authorised(handler, method, key)


def _refusal(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind that fails at once, without reading the request."""
    AUTH_REFUSED.labels(code.name).inc()

    async def refuse(_request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message)

    return _handler_like(handler, refuse, request_deserializer=None)


def _handler_like(
    handler: grpc.RpcMethodHandler, behaviour: Behaviour, *, request_deserializer: Any
) -> grpc.RpcMethodHandler:
    serializer = handler.response_serializer
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(behaviour, request_deserializer, serializer)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(behaviour, request_deserializer, serializer)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(behaviour, request_deserializer, serializer)
    return grpc.unary_unary_rpc_method_handler(behaviour, request_deserializer, serializer)


def _route_of(method: str, request: Message) -> str | None:
    """The route a request uses (None: the message names none)."""
    name = ROUTE_FIELDS.get(method)
    if name is None and "route" in request.DESCRIPTOR.fields_by_name:
        name = "route"
    if name is None:
        return None
    value: Any = request
    for part in name.split("."):  # "request.route": the route of a nested InferRequest
        value = getattr(value, part)
    return str(value)


async def _check(method: str, key: ApiKey, request: Any, context: grpc.aio.ServicerContext) -> None:
    if not isinstance(request, Message):
        return  # bytes that did not parse: the handler refuses them (INVALID_ARGUMENT); they reach no route
    route = _route_of(method, request)
    if route is None:
        if method in ROUTELESS_METHODS or key.all_routes:
            return
        AUTH_REFUSED.labels(grpc.StatusCode.PERMISSION_DENIED.name).inc()
        log.info("refused %s for API key %r: the method needs a key allowed every route", method, key.name)
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"API key {key.name!r} may not call {method}")
        return
    if not key.allows(route):
        AUTH_REFUSED.labels(grpc.StatusCode.PERMISSION_DENIED.name).inc()
        log.info("refused %s for API key %r on route %r", method, key.name, route)
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"API key {key.name!r} may not use route {route!r}")


def _authorised(handler: grpc.RpcMethodHandler, method: str, key: ApiKey) -> grpc.RpcMethodHandler:
    """The handler with the route check before each request message (and ListRoutes filtered)."""
    deserializer = handler.request_deserializer
    if handler.request_streaming:
        inner: Behaviour = handler.stream_stream if handler.response_streaming else handler.stream_unary

        def checked(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async def gen() -> AsyncIterator[Any]:
                async for request in requests:
                    await _check(method, key, request, context)
                    yield request

            return gen()

        if handler.response_streaming:

            async def stream_stream(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
                async for message in _finish(inner(checked(requests, context), context)):
                    yield message

            return _handler_like(handler, stream_stream, request_deserializer=deserializer)

        async def stream_unary(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
            return await _call(inner, checked(requests, context), context)

        return _handler_like(handler, stream_unary, request_deserializer=deserializer)

    if handler.response_streaming:
        unary_stream_inner: Behaviour = handler.unary_stream

        async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await _check(method, key, request, context)
            async for message in _finish(unary_stream_inner(request, context)):
                yield message

        return _handler_like(handler, unary_stream, request_deserializer=deserializer)

    unary_inner: Behaviour = handler.unary_unary

    async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await _check(method, key, request, context)
        response = await _call(unary_inner, request, context)
        if method == LIST_ROUTES and response is not None and not key.all_routes:
            kept = [route for route in response.routes if key.allows(route.name)]
            del response.routes[:]
            response.routes.extend(kept)
        return response

    return _handler_like(handler, unary_unary, request_deserializer=deserializer)


# -- assembly -------------------------------------------------------------------


@dataclass(frozen=True)
class Security:
    """What the gateway port needs: TLS credentials (or None: plaintext) and the API keys (or None: open)."""

    credentials: grpc.ServerCredentials | None = None
    keys: KeyStore | None = None
    public_services: tuple[str, ...] = DEFAULT_PUBLIC_SERVICES
    mutual_tls: bool = False
    keys_file: Path | None = None

    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        return [] if self.keys is None else [AuthInterceptor(self.keys, self.public_services)]

    def add_port(self, server: grpc.aio.Server, address: str) -> int:
        """Binds ``address``: TLS only when credentials are set, plaintext otherwise. Returns the port (0: failed)."""
        if self.credentials is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, self.credentials)

    def describe(self) -> str:
        transport = "mutual TLS" if self.mutual_tls else "TLS" if self.credentials is not None else "plaintext"
        auth = f"{len(self.keys)} API keys" if self.keys is not None else "no authentication"
        return f"{transport}, {auth}"

    def log_warnings(self, routes: Iterable[str]) -> None:
        """Logs what looks wrong: keys over plaintext, a keys file others can read, patterns matching no route."""
        if self.keys is not None and self.credentials is None:
            log.warning("API keys are configured but TLS is not: keys travel in plaintext")
        try:
            if self.keys_file is not None and self.keys_file.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
                log.warning("api_keys_file %s can be read by other users; consider chmod 600", self.keys_file)
        except OSError:
            pass
        names = list(routes)
        for key in self.keys.keys if self.keys is not None else ():
            for pattern in key.routes:
                if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
                    log.warning("API key %r: route pattern %r matches no route served", key.name, pattern)


def load_security(settings: GatewaySettings, environ: Mapping[str, str] | None = None) -> Security:
    """Reads and checks the TLS files and the API keys of ``settings`` (and ``SWITCHYARD_API_KEYS``).

    Raises :class:`SecurityConfigError` with the file and the problem named.
    """
    credentials = server_credentials(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)
    keys = load_key_store(settings, environ)
    public = tuple(settings.auth_public_services)
    return Security(
        credentials=credentials,
        keys=keys,
        public_services=public,
        mutual_tls=settings.tls_client_ca_file is not None,
        keys_file=settings.api_keys_file,
    )
