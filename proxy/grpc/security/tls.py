"""TLS and mutual TLS credentials of the gateway port, checked at start-up with the ``ssl`` module."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import grpc

from switchyard.proxy.grpc.security.keys import SecurityConfigError


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
