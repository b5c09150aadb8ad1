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

import fnmatch
import logging
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio

from switchyard.proxy.grpc.security.auth import (
    AUTH_REFUSED,
    DEFAULT_PUBLIC_SERVICES,
    INVALID_CREDENTIALS,
    MISSING_CREDENTIALS,
    AuthInterceptor,
)
from switchyard.proxy.grpc.security.keys import (
    API_KEYS_ENV,
    ApiKey,
    KeyStore,
    SecurityConfigError,
    caller,
    key_digest,
    load_key_store,
    load_keys_file,
    parse_env_keys,
)
from switchyard.proxy.grpc.security.tls import server_credentials
from switchyard.proxy.settings import GatewaySettings

__all__ = [
    "API_KEYS_ENV",
    "AUTH_REFUSED",
    "DEFAULT_PUBLIC_SERVICES",
    "INVALID_CREDENTIALS",
    "MISSING_CREDENTIALS",
    "ApiKey",
    "AuthInterceptor",
    "KeyStore",
    "Security",
    "SecurityConfigError",
    "caller",
    "key_digest",
    "load_key_store",
    "load_keys_file",
    "load_security",
    "parse_env_keys",
    "server_credentials",
]

log = logging.getLogger(__name__)


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
