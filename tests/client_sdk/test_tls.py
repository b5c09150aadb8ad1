"""Tls: PEM bytes read once with errors naming the file, picklable, the key kept out of repr."""

from __future__ import annotations

import pickle
from pathlib import Path

import grpc
import pytest
import trustme

from switchyard.client import AsyncClient, Client, Tls


@pytest.fixture(scope="module")
def pem_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    folder = tmp_path_factory.mktemp("pem")
    ca = trustme.CA()
    client = ca.issue_cert("client@switchyard.test")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    client.cert_chain_pems[0].write_to_path(str(folder / "client.pem"))
    client.private_key_pem.write_to_path(str(folder / "client.key"))
    return folder / "ca.pem", folder / "client.pem", folder / "client.key"


def test_from_files_reads_the_pem_once_and_survives_pickling(pem_files: tuple[Path, Path, Path]) -> None:
    ca, cert, key = pem_files
    tls = Tls.from_files(ca_file=ca, cert_file=cert, key_file=key)
    assert tls.root_certificates == ca.read_bytes() and tls.private_key == key.read_bytes()
    assert pickle.loads(pickle.dumps(tls)) == tls
    assert "private_key" not in repr(tls)
    assert isinstance(tls.credentials(), grpc.ChannelCredentials)
    assert Tls.from_files() == Tls()  # TLS with the system's roots


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (None, "CA file {path}: cannot read it (No such file or directory)"),
        (b"not a certificate", "CA file {path}: not PEM (no -----BEGIN line)"),
    ],
)
def test_bad_files_are_named(tmp_path: Path, write: bytes | None, message: str) -> None:
    path = tmp_path / "ca.pem"
    if write is not None:
        path.write_bytes(write)
    with pytest.raises(ValueError) as info:
        Tls.from_files(ca_file=path)
    assert str(info.value) == message.format(path=path)


def test_a_certificate_needs_its_key_and_credentials_come_one_way(pem_files: tuple[Path, Path, Path]) -> None:
    _, cert, _ = pem_files
    with pytest.raises(ValueError, match="a client certificate needs its private key"):
        Tls.from_files(cert_file=cert)
    with pytest.raises(ValueError, match="pass channel_credentials or tls, not both"):
        Client("localhost:1", tls=Tls(), channel_credentials=grpc.ssl_channel_credentials())
    with pytest.raises(ValueError, match="pass channel_credentials or tls, not both"):
        AsyncClient("localhost:1", tls=Tls(), channel_credentials=grpc.ssl_channel_credentials())
