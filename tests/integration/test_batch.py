"""Batch scoring against a real gateway and Triton: formats, failed rows, and a SIGKILLed run resumed."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from switchyard.client import Client
from switchyard.client.batch import BatchOptions, score
from switchyard.client.batch.journal import read_progress
from switchyard.models.datasets import wine_split
from switchyard.proxy.routes.schema import load_routes
from switchyard.proxy.settings import GatewaySettings
from switchyard.server.local_triton import LocalTriton

from .gateway_thread import GatewayThread
from .triton_stats import model_counts

FEATURES = [f"f{i}" for i in range(12)]
PROBABILITIES = [f"probabilities_{i}" for i in range(3)]
QUIET: dict[str, Any] = {"options": BatchOptions(chunk_rows=64, concurrency=4), "progress": False}


def wine_rows(n: int, seed: int) -> np.ndarray:
    """``n`` wine-like rows: the data set's rows, repeated, with a little noise."""
    split = wine_split()
    base = np.concatenate([split.X_train, split.X_test])
    rng = np.random.default_rng(seed)
    rows = base[rng.integers(0, len(base), n)]
    return (rows * rng.normal(1.0, 0.02, rows.shape)).astype(np.float32)


def direct(target: str, features: np.ndarray, route: str = "wine") -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities from plain ``Infer`` calls."""
    labels, probabilities = [], []
    with Client(target) as client:
        for start in range(0, len(features), 64):
            result = client.infer(route, {"features": features[start : start + 64]}, timeout=30)
            labels.append(np.asarray(result["label"]).reshape(-1))
            probabilities.append(np.asarray(result["probabilities"]))
    return np.concatenate(labels), np.concatenate(probabilities)


def inference_count(triton: LocalTriton, model: str) -> int:
    """Rows Triton has inferred for ``model`` (batch items, all versions)."""
    return model_counts(triton.grpc_url, model).inferences


def settled_inference_count(triton: LocalTriton, model: str) -> int:
    """The count once it stops moving (requests still running in Triton finish first)."""
    last = inference_count(triton, model)
    while True:
        time.sleep(0.3)
        now = inference_count(triton, model)
        if now == last:
            return now
        last = now


def feature_table(features: np.ndarray, ids: np.ndarray | None = None) -> pa.Table:
    columns = {} if ids is None else {"id": pa.array(ids)}
    columns.update({name: pa.array(features[:, i]) for i, name in enumerate(FEATURES[: features.shape[1]])})
    return pa.table(columns)


def check_predictions(table: pa.Table, labels: np.ndarray, probabilities: np.ndarray) -> None:
    assert table.column("error_code").null_count == table.num_rows, table.column("error_message").to_pylist()[:5]
    np.testing.assert_array_equal(table.column("label").to_numpy(), labels)
    got = np.stack([table.column(name).to_numpy() for name in PROBABILITIES], axis=1)
    np.testing.assert_allclose(got, probabilities, rtol=1e-6, atol=1e-6)


def test_formats_round_trip_with_the_predictions_of_infer(gateway_thread: GatewayThread, tmp_path: Path) -> None:
    features = wine_rows(700, seed=1)
    ids = np.arange(5000, 5700)[::-1].copy()  # ids that are not positions, in an order that is not sorted
    labels, probabilities = direct(gateway_thread.target, features)
    target = gateway_thread.target

    pq.write_table(feature_table(features, ids), tmp_path / "rows.parquet", row_group_size=100)
    summary = score(tmp_path / "rows.parquet", route="wine", target=target, id_column="id", **QUIET)
    assert (summary.rows, summary.rows_ok, summary.rows_failed, summary.rows_resumed) == (700, 700, 0, 0)
    assert summary.rows_per_s > 0
    out = pq.read_table(tmp_path / "rows.scored.parquet")
    assert out.column_names == ["id", "label", *PROBABILITIES, "error_code", "error_message"]
    np.testing.assert_array_equal(out.column("id").to_numpy(), ids)
    check_predictions(out, labels, probabilities)
    assert not (tmp_path / "rows.scored.parquet.journal").exists()

    pa_csv.write_csv(feature_table(features, ids), tmp_path / "rows.csv")
    score(tmp_path / "rows.csv", route="wine", target=target, id_column="id", **QUIET)
    out = pa_csv.read_csv(tmp_path / "rows.scored.csv")
    np.testing.assert_array_equal(out.column("id").to_numpy(), ids)
    check_predictions(out, labels, probabilities)

    np.save(tmp_path / "rows.npy", features)
    score(tmp_path / "rows.npy", route="wine", target=target, **QUIET)
    with np.load(tmp_path / "rows.scored.npz") as npz:
        np.testing.assert_array_equal(npz["row_id"], np.arange(700))
        np.testing.assert_array_equal(npz["label"].reshape(-1), labels)
        np.testing.assert_allclose(npz["probabilities"], probabilities, rtol=1e-6, atol=1e-6)
        assert npz["ok"].all() and not any(npz["error_code"])

    np.savez(tmp_path / "pair.npz", ids=ids, features=features.reshape(700, 3, 4))  # rows of any shape are flattened
    score(tmp_path / "pair.npz", route="wine", target=target, id_column="ids", **QUIET)
    with np.load(tmp_path / "pair.scored.npz") as npz:
        np.testing.assert_array_equal(npz["ids"], ids)
        np.testing.assert_array_equal(npz["label"].reshape(-1), labels)

    db = tmp_path / "rows.db"
    with sqlite3.connect(db) as conn:
        conn.execute(f"CREATE TABLE wines (id INTEGER, note TEXT, {', '.join(f'{f} REAL' for f in FEATURES)})")
        conn.executemany(
            f"INSERT INTO wines VALUES ({', '.join('?' * 14)})",
            [(int(i), f"wine {i}", *map(float, row)) for i, row in zip(ids, features, strict=True)],
        )
    summary = score(db, table="wines", route="wine", target=target, id_column="id", columns=FEATURES, **QUIET)
    assert summary.output == "table wines_scored"
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT id, label, error_code FROM wines_scored ORDER BY rowid").fetchall()
    # A table is read in the order of its id column (the ids above run backwards).
    assert [r[0] for r in rows] == ids[::-1].tolist()
    assert [r[1] for r in rows] == labels[::-1].tolist()
    assert {r[2] for r in rows} == {None}


STRICT_ROUTES = """
[[routes]]
name = "wine_strict"
model = "wine_classifier"
description = "The wine classifier, refusing NaN and infinite features."
allow_non_finite = false
"""


@pytest.fixture(scope="module")
def strict_gateway(local_triton: LocalTriton, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayThread]:
    routes = tmp_path_factory.mktemp("routes") / "strict.toml"
    routes.write_text(STRICT_ROUTES)
    settings = GatewaySettings(triton_url=local_triton.grpc_url, host="127.0.0.1", port=0, metrics_port=None)
    with GatewayThread(settings, load_routes(routes)) as gateway:
        yield gateway


def test_failed_rows_are_written_with_their_error(strict_gateway: GatewayThread, tmp_path: Path) -> None:
    features = wine_rows(300, seed=2)
    rows: list[list[float] | None] = [list(map(float, row)) for row in features]
    rows[5][3] = float("nan")  # type: ignore[index]
    rows[77][0] = float("inf")  # type: ignore[index]
    rows[150] = rows[150][:11]  # type: ignore[index]
    rows[200] = None
    bad = {5: "INVALID_ARGUMENT", 77: "INVALID_ARGUMENT", 150: "INVALID_ARGUMENT", 200: "INVALID_ARGUMENT"}
    pq.write_table(pa.table({"features": pa.array(rows, pa.list_(pa.float32()))}), tmp_path / "mixed.parquet")

    summary = score(
        tmp_path / "mixed.parquet",
        route="wine_strict",
        target=strict_gateway.target,
        options=BatchOptions(chunk_rows=32, concurrency=4),
        progress=False,
    )
    assert (summary.rows, summary.rows_ok, summary.rows_failed) == (300, 296, 4)
    out = pq.read_table(tmp_path / "mixed.scored.parquet")
    np.testing.assert_array_equal(out.column("row_id").to_numpy(), np.arange(300))
    codes = out.column("error_code").to_pylist()
    messages = out.column("error_message").to_pylist()
    assert {i: c for i, c in enumerate(codes) if c is not None} == bad
    # The gateway's own messages, for requests narrowed down to the one row at fault.
    assert messages[5] == "inputs[features]: element 3 is nan; this route accepts finite numbers only"
    assert messages[77] == "inputs[features]: element 0 is inf; this route accepts finite numbers only"
    assert messages[150] == "row has 11 values, input 'features' needs 12 (shape [-1, 12])"
    assert messages[200] == "row has no value for input 'features'"
    # Every other row has its prediction, the same as a direct call: bad rows did not take their chunk down.
    good = np.array([i for i in range(300) if i not in bad])
    labels, _ = direct(strict_gateway.target, features[good], route="wine_strict")
    np.testing.assert_array_equal(out.column("label").to_numpy(zero_copy_only=False)[good], labels)
    assert out.column("label").null_count == 4


def test_bad_arguments_fail_before_any_row_is_sent(gateway_thread: GatewayThread, tmp_path: Path) -> None:
    pq.write_table(feature_table(wine_rows(10, seed=3)[:, :11]), tmp_path / "narrow.parquet")
    with pytest.raises(ValueError, match=r"input 'features' of route 'wine' needs 12 values per row .* got 11 columns"):
        score(tmp_path / "narrow.parquet", route="wine", target=gateway_thread.target, progress=False)
    assert not (tmp_path / "narrow.scored.parquet").exists()


def _batch_command(target: str, source: Path) -> list[str]:
    exe = os.path.join(sys.exec_prefix, "bin", "switchyard")
    return [exe, "batch", str(source), "--route", "wine", "--gateway", target]


def test_killed_batch_resumes_without_scoring_a_finished_row_again(
    gateway_thread: GatewayThread, local_triton: LocalTriton, tmp_path: Path
) -> None:
    n, chunk_rows, concurrency = 4000, 25, 4
    features = wine_rows(n, seed=4)
    source = tmp_path / "big.parquet"
    pq.write_table(feature_table(features), source)
    journal = tmp_path / "big.scored.parquet.journal"
    # Throttled so the kill lands part way; rows/s is not what this test measures.
    command = _batch_command(gateway_thread.target, source) + [
        "--chunk-rows",
        str(chunk_rows),
        "--concurrency",
        str(concurrency),
        "--max-rows-per-s",
        "2000",
    ]
    before = settled_inference_count(local_triton, "wine_classifier")

    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            progress = {"done_rows": 0}
            while progress["done_rows"] < n // 4:
                assert first.poll() is None, (tmp_path / "first.log").read_text()
                assert time.monotonic() < deadline, "no progress in the checkpoint"
                time.sleep(0.02)
                try:
                    progress = read_progress(journal)
                except sqlite3.Error:
                    pass  # not created yet
            first.send_signal(signal.SIGKILL)
        finally:
            if first.poll() is None:
                first.kill()
            first.wait()
    assert first.returncode == -signal.SIGKILL
    at_kill = read_progress(journal)
    assert 0 < at_kill["done_rows"] < n, at_kill
    # At most `concurrency` requests of one chunk each are in flight, each journaled "sent" before it goes.
    assert at_kill["sent_chunks"] <= concurrency
    assert not (tmp_path / "big.scored.parquet").exists()
    after_kill = settled_inference_count(local_triton, "wine_classifier")
    assert at_kill["done_rows"] <= after_kill - before <= at_kill["done_rows"] + at_kill["sent_rows"]

    second = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"{n} rows ({n} ok, 0 failed)" in second.stdout, second.stdout
    assert f"{at_kill['done_rows']} rows resumed from the checkpoint" in second.stdout, second.stdout
    assert "rows/s" in second.stderr  # the progress bar, with its rate
    after = settled_inference_count(local_triton, "wine_classifier")
    # Exactly the rows not finished at the kill were scored again: no finished row twice.
    assert after - after_kill == n - at_kill["done_rows"]
    assert n <= after - before <= n + at_kill["sent_rows"]
    print(
        f"\nkilled with {at_kill['done_rows']}/{n} rows done and {at_kill['sent_rows']} in flight; "
        f"backend rows in all: {after - before}; rerun: {second.stdout.strip()}"
    )

    out = pq.read_table(tmp_path / "big.scored.parquet")
    np.testing.assert_array_equal(out.column("row_id").to_numpy(), np.arange(n))  # every row once, in order
    labels, probabilities = direct(gateway_thread.target, features)
    check_predictions(out, labels, probabilities)
    assert not journal.exists()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server of its own on a loopback port, in a temporary folder."""
    import shutil
    import tempfile

    # On PATH, or where Debian's postgresql package puts them (newest major first).
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True)
    search = os.pathsep.join([os.environ.get("PATH", ""), *map(str, debian)])
    initdb_bin, pg_ctl = shutil.which("initdb", path=search), shutil.which("pg_ctl", path=search)
    if not (initdb_bin and pg_ctl):
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) are not installed")
    pytest.importorskip("psycopg")
    # PostgreSQL refuses to run as root: run it as the postgres account when we are root.
    as_user: list[str] = []
    if os.geteuid() == 0:
        if not shutil.which("runuser"):
            pytest.skip("running as root without runuser to start PostgreSQL as another user")
        as_user = ["runuser", "-u", "postgres", "--"]
    folder = Path(tempfile.mkdtemp(prefix="switchyard-pg-"))
    folder.chmod(0o777)
    data, port = folder / "data", _free_port()
    try:
        initdb = [*as_user, initdb_bin, "-D", str(data), "-A", "trust", "-U", "postgres"]
        subprocess.run(initdb, check=True, capture_output=True)
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
        subprocess.run(
            [*as_user, pg_ctl, "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start"],
            check=True,
            capture_output=True,
        )
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_postgres_table_in_and_out(postgres_url: str, gateway_thread: GatewayThread, tmp_path: Path) -> None:
    import psycopg

    features = wine_rows(300, seed=5)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE wines (id bigint, {', '.join(f'{f} real' for f in FEATURES)})")
        with conn.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO wines VALUES ({', '.join(['%s'] * 13)})",
                [(300 - i, *map(float, row)) for i, row in enumerate(features)],
            )
    summary = score(
        postgres_url,
        table="wines",
        route="wine",
        target=gateway_thread.target,
        id_column="id",
        journal=tmp_path / "pg.journal",
        **QUIET,
    )
    assert (summary.rows, summary.rows_ok, summary.output) == (300, 300, "table wines_scored")
    labels, _ = direct(gateway_thread.target, features)
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute("SELECT id, label, error_code FROM wines_scored ORDER BY id").fetchall()
    # ids run 300..1: the table is read in id order, so the output's first row is the last one inserted.
    assert [r[0] for r in rows] == list(range(1, 301))
    assert [r[1] for r in rows] == labels[::-1].tolist()
    assert {r[2] for r in rows} == {None}
