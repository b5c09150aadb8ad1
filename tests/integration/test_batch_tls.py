"""Batch scoring over TLS and mutual TLS with API keys: ``score()``, ``switchyard batch`` and the Spark executors' path.

Before, all three opened a plaintext channel, so an API key travelled in clear
text and a gateway serving TLS only could not be scored against at all.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import trustme

from switchyard.client import Client, Tls, Unavailable
from switchyard.client.batch import BatchOptions, RowMapping, score
from switchyard.client.batch.spark import score_tables
from switchyard.client.cli import main as cli_main
from switchyard.models import BUNDLED_ROUTES
from switchyard.proxy.routes.schema import load_routes
from switchyard.proxy.settings import GatewaySettings
from switchyard.server.local_triton import LocalTriton

from .gateway_thread import GatewayThread
from .test_batch import FEATURES, feature_table, wine_rows

KEY = "batch-7d1c9e2f4a6b8c0d1e3f5a7b9c2d4e6f"
QUIET = {"options": BatchOptions(chunk_rows=32, concurrency=2), "progress": False}


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("batch-pki")
    ca = trustme.CA(organization_name="Switchyard batch test CA")
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("batch@switchyard.test")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    server.cert_chain_pems[0].write_to_path(str(folder / "server.pem"))
    server.private_key_pem.write_to_path(str(folder / "server.key"))
    (folder / "client.pem").write_bytes(b"".join(blob.bytes() for blob in client.cert_chain_pems))
    client.private_key_pem.write_to_path(str(folder / "client.key"))
    names = ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")
    return Pki(*(folder / name for name in names))


def gateway(triton: LocalTriton, keys: Path | None = None, **tls: Path) -> GatewayThread:
    settings = GatewaySettings(
        triton_url=triton.grpc_url, host="127.0.0.1", port=0, metrics_port=None, api_keys_file=keys, **tls
    )
    return GatewayThread(settings, load_routes(BUNDLED_ROUTES))


@pytest.fixture(scope="module")
def tls_gateway(
    local_triton: LocalTriton, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayThread]:
    """TLS only, and an API key for every call."""
    keys = tmp_path_factory.mktemp("batch-keys") / "keys.toml"
    keys.write_text(f'[keys.batch]\nkey = "{KEY}"\nroutes = ["wine"]\n')
    keys.chmod(0o600)
    thread = gateway(local_triton, keys, tls_cert_file=pki.server_cert, tls_key_file=pki.server_key)
    try:
        yield thread
    finally:
        thread.stop()


@pytest.fixture(scope="module")
def mtls_gateway(local_triton: LocalTriton, pki: Pki) -> Iterator[GatewayThread]:
    """Mutual TLS: a client certificate from the test CA is the credential."""
    thread = gateway(
        local_triton, tls_cert_file=pki.server_cert, tls_key_file=pki.server_key, tls_client_ca_file=pki.ca
    )
    try:
        yield thread
    finally:
        thread.stop()


@pytest.fixture(scope="module")
def wines(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("batch-tls") / "wines.parquet"
    pq.write_table(feature_table(wine_rows(100, seed=3)), path)
    return path


def test_score_over_tls_with_an_api_key(tls_gateway: GatewayThread, pki: Pki, wines: Path, tmp_path: Path) -> None:
    out = tmp_path / "scored.parquet"
    tls = Tls.from_files(ca_file=pki.ca)
    summary = score(wines, route="wine", target=tls_gateway.target, output=out, tls=tls, api_key=KEY, **QUIET)
    assert (summary.rows, summary.rows_ok) == (100, 100)
    assert pq.read_table(out).column("error_code").null_count == 100
    # Plaintext, as every batch run was before, cannot reach a gateway that serves TLS only.
    with pytest.raises(Unavailable):
        score(wines, route="wine", target=tls_gateway.target, output=tmp_path / "x.parquet", api_key=KEY, **QUIET)


def test_switchyard_batch_over_mutual_tls(mtls_gateway: GatewayThread, pki: Pki, wines: Path, tmp_path: Path) -> None:
    out = tmp_path / "scored.csv"
    common = ["batch", str(wines), "--route", "wine", "--gateway", mtls_gateway.target, "--no-progress"]
    mutual = ["--tls-ca", str(pki.ca), "--tls-cert", str(pki.client_cert), "--tls-key", str(pki.client_key)]
    assert cli_main([*common, "--output", str(out), *mutual]) == 0
    assert out.read_text().count("\n") == 101  # the header and every row
    # Without the client certificate the gateway refuses the handshake: the job cannot run.
    assert cli_main([*common, "--output", str(tmp_path / "refused.csv"), "--tls-ca", str(pki.ca)]) == 1


def test_unreadable_tls_files_are_a_usage_error_naming_the_file(
    wines: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.pem"
    assert cli_main(["batch", str(wines), "--route", "wine", "--tls-ca", str(missing)]) == 2
    assert f"switchyard batch: error: CA file {missing}: cannot read it" in capsys.readouterr().err
    with pytest.raises(ValueError, match="a client certificate needs its private key"):
        Tls(certificate_chain=b"-----BEGIN CERTIFICATE-----")


def test_the_spark_executors_path_carries_tls_as_data(mtls_gateway: GatewayThread, pki: Pki) -> None:
    """What each Spark task runs: ``score_tables`` with the Tls the driver pickled (PEM bytes, no files needed)."""
    tls = pickle.loads(pickle.dumps(Tls.from_files(ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key)))
    features = wine_rows(40, seed=5)
    with Client(mtls_gateway.target, tls=tls) as client:
        info = client.route("wine")
    table = feature_table(features, np.arange(40))
    mapping = RowMapping(info, table.schema, columns=FEATURES, id_column="id")
    chunks = score_tables(iter([table]), mtls_gateway.target, mapping, BatchOptions(chunk_rows=16), tls=tls)
    scored = pa.concat_tables(chunks)  # one table per chunk of 16 rows
    assert len(chunks) == 3 and scored.num_rows == 40
    assert scored.column("error_code").null_count == 40
    assert "private_key" not in repr(tls)  # the key stays out of logs
