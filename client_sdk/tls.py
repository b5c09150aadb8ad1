"""TLS to the gateway as plain data: :class:`Tls` holds PEM bytes and makes the channel credentials.

``grpc.ChannelCredentials`` cannot be pickled, so a Spark job could not carry
them to its executors; a :class:`Tls` can (it is a frozen dataclass of bytes),
and each process makes its own credentials from it. ``Client``,
``AsyncClient``, ``switchyard batch``, ``score()`` and the Spark helper all
take one. Files are read once, when the value is made (``from_files``), with
errors naming the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import grpc


@dataclass(frozen=True)
class Tls:
    """TLS, or mutual TLS, to the gateway.

    ``root_certificates``: the CAs that sign the gateway's certificate (PEM;
    None: the system's roots). ``certificate_chain`` and ``private_key``: the
    client's certificate and its key (PEM), for a gateway that asks for one
    (mutual TLS); both or neither. The key is left out of ``repr``.
    """

    root_certificates: bytes | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.certificate_chain is None) != (self.private_key is None):
            raise ValueError("a client certificate needs its private key, and a private key its certificate")

    @classmethod
    def from_files(
        cls,
        ca_file: str | os.PathLike[str] | None = None,
        cert_file: str | os.PathLike[str] | None = None,
        key_file: str | os.PathLike[str] | None = None,
    ) -> Tls:
        """TLS from PEM files: the CA bundle (None: the system's roots), and the client's certificate and key."""
        return cls(_read(ca_file, "CA file"), _read(cert_file, "client certificate"), _read(key_file, "client key"))

    def credentials(self) -> grpc.ChannelCredentials:
        """The channel credentials (``grpc.secure_channel`` / ``grpc.aio.secure_channel``)."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )


def _read(path: str | os.PathLike[str] | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise ValueError(f"{what} {os.fspath(path)}: cannot read it ({exc.strerror})") from None
    if b"-----BEGIN " not in data:
        raise ValueError(f"{what} {os.fspath(path)}: not PEM (no -----BEGIN line)")
    return data


def credentials_of(credentials: grpc.ChannelCredentials | None, tls: Tls | None) -> grpc.ChannelCredentials | None:
    """The credentials a client was given, either way (None: plaintext); ValueError when given both."""
    if credentials is not None and tls is not None:
        raise ValueError("pass channel_credentials or tls, not both")
    return tls.credentials() if tls is not None else credentials
