"""Batch scoring on Spark in local mode: the same predictions as the embedded run, computed on the executors."""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from switchyard.client.batch import BatchOptions, score

from .gateway_thread import GatewayThread
from .test_batch import FEATURES, PROBABILITIES, feature_table, wine_rows

pyspark = pytest.importorskip("pyspark")
pytest.importorskip("pandas")  # mapInArrow needs it installed
if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
    pytest.skip("Spark needs a JVM (java on PATH or JAVA_HOME)", allow_module_level=True)


@pytest.fixture(scope="module")
def spark() -> Iterator[object]:
    from pyspark.sql import SparkSession

    # Python workers run this interpreter, so they import the same switchyard and pyarrow.
    saved = os.environ.get("PYSPARK_PYTHON")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    session = (
        SparkSession.builder.master("local[2]")
        .appName("switchyard-batch-test")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()
        if saved is None:
            os.environ.pop("PYSPARK_PYTHON", None)
        else:
            os.environ["PYSPARK_PYTHON"] = saved


def test_spark_scores_like_the_embedded_run(spark: object, gateway_thread: GatewayThread, tmp_path: Path) -> None:
    from switchyard.client.batch.spark import score_dataframe

    n = 6000
    features = wine_rows(n, seed=7)
    features[11, 2] = np.nan  # a row the wine route scores (it accepts NaN) like any other
    ids = np.arange(n, dtype=np.int64) * 3
    source = tmp_path / "wines.parquet"
    pq.write_table(feature_table(features, ids), source, row_group_size=1000)
    options = BatchOptions(chunk_rows=64, concurrency=4)

    summary = score(source, route="wine", target=gateway_thread.target, id_column="id", options=options, progress=False)
    embedded = pq.read_table(tmp_path / "wines.scored.parquet")

    df = spark.read.parquet(str(source)).repartition(2)  # type: ignore[attr-defined]
    scored = score_dataframe(
        df, target=gateway_thread.target, route="wine", id_column="id", columns=FEATURES, options=options
    )
    started = time.monotonic()
    result: pa.Table = scored.toArrow().sort_by("id")
    spark_s = time.monotonic() - started

    assert result.column_names == embedded.column_names
    assert result.num_rows == n
    np.testing.assert_array_equal(result.column("id").to_numpy(), ids)
    np.testing.assert_array_equal(result.column("label").to_numpy(), embedded.column("label").to_numpy())
    for name in PROBABILITIES:
        np.testing.assert_allclose(result.column(name).to_numpy(), embedded.column(name).to_numpy(), rtol=1e-6)
    assert result.column("error_code").null_count == n
    print(
        f"\n{n} rows: embedded {summary.rows_per_s:.0f} rows/s ({summary.elapsed_s:.2f} s); "
        f"Spark local[2] {n / spark_s:.0f} rows/s ({spark_s:.2f} s, job start-up included)"
    )


def test_spark_keeps_failed_rows_with_their_error(spark: object, gateway_thread: GatewayThread) -> None:
    from switchyard.client.batch.spark import score_dataframe

    rows = [(i, [float(i % 5)] * (11 if i == 3 else 12)) for i in range(40)]
    df = spark.createDataFrame(rows, "id long, features array<float>")  # type: ignore[attr-defined]
    result = score_dataframe(df, target=gateway_thread.target, route="wine", id_column="id").toArrow().sort_by("id")
    codes = result.column("error_code").to_pylist()
    assert [i for i, code in enumerate(codes) if code] == [3]
    assert result.column("error_message")[3].as_py() == "row has 11 values, input 'features' needs 12 (shape [-1, 12])"
    assert result.column("label").null_count == 1
