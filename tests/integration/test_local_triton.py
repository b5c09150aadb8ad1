"""A real tritonserver run by LocalTriton: readiness, answers, dynamic batching, crash and restart, errors."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import socket
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as tritongrpc
import tritonclient.grpc.aio as tritonaio

from switchyard.models.datasets import digits_split, wine_split
from switchyard.server import local_triton as triton_module
from switchyard.server.local_triton import (
    NOT_INSTALLED_MESSAGE,
    LocalTriton,
    PortInUse,
    TritonInstallation,
    TritonNotInstalled,
    TritonStartupFailed,
    live_group_members,
)

from .triton_stats import model_counts

MAX_BATCH = 64
CLIENT_TIMEOUT_S = 30.0

# name -> ([inputs], [outputs]) as (name, datatype, shape) exactly as Triton's model metadata reports them
EXPECTED_METADATA = {
    "digits_logreg": (
        [("image", "FP32", [-1, 64])],
        [("label", "INT64", [-1, 1]), ("probabilities", "FP32", [-1, 10])],
    ),
    "wine_classifier": (
        [("features", "FP32", [-1, 12])],
        [("label", "INT64", [-1, 1]), ("probabilities", "FP32", [-1, 3])],
    ),
    "wine_alcohol_regressor": (
        [("features", "FP32", [-1, 12])],
        [("alcohol", "FP32", [-1, 1])],
    ),
    "digits_mlp": (
        [("image", "FP32", [-1, 64])],
        [("label", "INT64", [-1, 1]), ("probabilities", "FP32", [-1, 10])],
    ),
    **{
        f"wine_alcohol_c{cultivar}": ([("features", "FP32", [-1, 12])], [("alcohol", "FP32", [-1, 1])])
        for cultivar in range(3)
    },
    "image_cnn": ([("image", "FP32", [-1, 3, 224, 224])], [("probabilities", "FP32", [-1, 10])]),
}


def _infer(client: tritongrpc.InferenceServerClient, model: str, name: str, rows: np.ndarray[Any, Any]) -> Any:
    tensor = tritongrpc.InferInput(name, list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    return client.infer(model, [tensor], client_timeout=CLIENT_TIMEOUT_S)


def _onnx(repository: Path, model: str, name: str, rows: np.ndarray[Any, Any]) -> list[np.ndarray[Any, Any]]:
    session = ort.InferenceSession(str(repository / model / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    return list(session.run(None, {name: rows}))


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _group_exists(pgid: int) -> bool:
    return bool(live_group_members(pgid))


@pytest.fixture
def client(local_triton: LocalTriton) -> Any:
    with tritongrpc.InferenceServerClient(local_triton.grpc_url) as triton_client:
        yield triton_client


def test_every_model_is_ready_with_the_expected_metadata(client: tritongrpc.InferenceServerClient) -> None:
    assert client.is_server_ready()
    index = client.get_model_repository_index(as_json=True)["models"]
    assert sorted((m["name"], m["state"]) for m in index) == sorted((m, "READY") for m in EXPECTED_METADATA)
    for model, (inputs, outputs) in EXPECTED_METADATA.items():
        assert client.is_model_ready(model)
        metadata = client.get_model_metadata(model, as_json=True)
        assert [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in metadata["inputs"]] == inputs
        assert [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in metadata["outputs"]] == outputs


def test_held_out_digits_match_onnxruntime(
    client: tritongrpc.InferenceServerClient, model_repository: Path, local_triton: LocalTriton
) -> None:
    split = digits_split()
    labels, probabilities = [], []
    for start in range(0, len(split.X_test), MAX_BATCH):
        result = _infer(client, "digits_logreg", "image", split.X_test[start : start + MAX_BATCH])
        labels.append(result.as_numpy("label"))
        probabilities.append(result.as_numpy("probabilities"))
    label, probability = np.concatenate(labels), np.concatenate(probabilities)
    expected_label, expected_probability = _onnx(model_repository, "digits_logreg", "image", split.X_test)
    assert label.shape == (len(split.X_test), 1) and label.dtype == np.int64
    assert probability.shape == (len(split.X_test), 10) and probability.dtype == np.float32
    np.testing.assert_array_equal(label[:, 0], expected_label)
    np.testing.assert_allclose(probability, expected_probability, rtol=0, atol=1e-6)
    assert (label[:, 0] == split.y_test).mean() > 0.9


def test_wine_models_answer(client: tritongrpc.InferenceServerClient, model_repository: Path) -> None:
    split = wine_split()
    classified = _infer(client, "wine_classifier", "features", split.X_test)
    assert classified.as_numpy("probabilities").shape == (len(split.X_test), 3)
    assert (classified.as_numpy("label")[:, 0] == split.y_test).mean() > 0.9
    regressed = _infer(client, "wine_alcohol_regressor", "features", split.X_test).as_numpy("alcohol")
    (expected,) = _onnx(model_repository, "wine_alcohol_regressor", "features", split.X_test)
    assert regressed.shape == (len(split.X_test), 1) and regressed.dtype == np.float32
    np.testing.assert_allclose(regressed, expected, rtol=0, atol=1e-5)


def test_concurrent_requests_are_batched_dynamically(
    client: tritongrpc.InferenceServerClient, local_triton: LocalTriton, model_repository: Path
) -> None:
    rows = digits_split().X_test[:MAX_BATCH]
    expected_label, expected_probability = _onnx(model_repository, "digits_logreg", "image", rows)

    async def one_row_each() -> list[Any]:
        async with tritonaio.InferenceServerClient(local_triton.grpc_url) as aio_client:

            async def infer(row: np.ndarray[Any, Any]) -> Any:
                tensor = tritonaio.InferInput("image", [1, 64], "FP32")
                tensor.set_data_from_numpy(row[None, :])
                return await aio_client.infer("digits_logreg", [tensor], client_timeout=CLIENT_TIMEOUT_S)

            return list(await asyncio.gather(*(infer(row) for row in rows)))

    before = model_counts(local_triton.grpc_url, "digits_logreg")
    results = asyncio.run(one_row_each())
    after = model_counts(local_triton.grpc_url, "digits_logreg")

    inferences, executions = after.inferences - before.inferences, after.executions - before.executions
    assert inferences == len(rows)
    assert executions < inferences, f"{inferences} requests ran in {executions} executions: no dynamic batching"
    for i, result in enumerate(results):  # each request got its own row back
        assert result.as_numpy("label").tolist() == [[expected_label[i]]]
        np.testing.assert_allclose(result.as_numpy("probabilities")[0], expected_probability[i], atol=1e-6)


def test_killed_triton_restarts_on_the_same_ports_and_stop_leaves_no_process(
    model_repository: Path, tmp_path: Path
) -> None:
    triton = LocalTriton(model_repository, work_dir=tmp_path)
    grpc_url = triton.grpc_url
    rows = digits_split().X_test[:4]

    async def scenario() -> list[int]:
        pids = []
        await triton.start()
        await triton.wait_ready(120)
        async with tritonaio.InferenceServerClient(grpc_url) as aio_client:

            async def labels() -> list[int]:
                tensor = tritonaio.InferInput("image", [4, 64], "FP32")
                tensor.set_data_from_numpy(rows)
                result = await aio_client.infer("digits_logreg", [tensor], client_timeout=CLIENT_TIMEOUT_S)
                return [int(v) for v in result.as_numpy("label")[:, 0]]

            first = await labels()
            assert triton.pid is not None
            pids.append(triton.pid)

            triton.kill()
            assert triton.returncode == -9
            assert not _process_exists(pids[0]) and not _group_exists(pids[0])

            await triton.start()
            assert triton.grpc_url == grpc_url
            await triton.wait_ready(120)
            assert await labels() == first  # the same client reconnects to the new server
            assert triton.pid is not None and triton.pid != pids[0]
            pids.append(triton.pid)
        await triton.stop(grace_s=10)
        return pids

    try:
        pids = asyncio.run(scenario())
    finally:
        triton.stop_sync()
    assert triton.returncode == 0
    for pid in pids:
        assert not _process_exists(pid), f"tritonserver {pid} is still running"
        assert not _group_exists(pid), f"processes of tritonserver {pid}'s group are still running"
    triton.stop_sync()  # idempotent
    triton.kill()
    assert "Started GRPCInferenceService" in triton.log_path.read_text()


def test_taken_grpc_port_is_reported(model_repository: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        triton = LocalTriton(model_repository, grpc_port=port, work_dir=tmp_path)
        with pytest.raises(PortInUse) as info:
            triton.start_sync()
    assert str(info.value) == f"port {port} is already in use (Triton gRPC)"
    assert triton.pid is None


def test_port_taken_after_the_check_is_reported_from_the_log(
    model_repository: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        triton = LocalTriton(model_repository, http_port=port, work_dir=tmp_path)
        # Another process takes the port between start()'s check and Triton's bind.
        monkeypatch.setattr(triton_module, "port_in_use", lambda port, host: False)
        triton.start_sync()
        try:
            with pytest.raises(PortInUse) as info:
                triton.wait_ready_sync(120)
        finally:
            triton.stop_sync()
    assert str(info.value).startswith(f"port {port} is already in use (Triton HTTP); tritonserver exited with status")


def test_model_that_fails_to_load_is_reported_with_the_log_tail(model_repository: Path, tmp_path: Path) -> None:
    broken = tmp_path / "repository"
    shutil.copytree(model_repository / "wine_alcohol_regressor", broken / "wine_alcohol_regressor")
    (broken / "wine_alcohol_regressor" / "1" / "model.onnx").write_bytes(b"not an onnx model")
    triton = LocalTriton(broken, work_dir=tmp_path / "work")
    triton.start_sync()
    try:
        with pytest.raises(TritonStartupFailed) as info:
            triton.wait_ready_sync(120)
    finally:
        triton.stop_sync()
    message = str(info.value)
    assert message.startswith("tritonserver exited with status 1; last lines of ")
    assert "wine_alcohol_regressor" in message and "failed to load" in message


def test_missing_pytriton_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(TritonNotInstalled) as info:
        TritonInstallation.find()
    assert str(info.value) == NOT_INSTALLED_MESSAGE
    assert str(info.value) == (
        "tritonserver binary not found: install the triton extra (pip install 'switchyard[triton]') "
        "or pass --triton-url"
    )


def test_ports_are_validated(model_repository: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="gRPC port must be between 0 and 65535, got -1"):
        LocalTriton(model_repository, grpc_port=-1, work_dir=tmp_path)
    with pytest.raises(ValueError, match="HTTP port 9000 is also given for another endpoint"):
        LocalTriton(model_repository, grpc_port=9000, http_port=9000, work_dir=tmp_path)
    triton = LocalTriton(model_repository, work_dir=tmp_path)
    assert len({triton.grpc_port, triton.http_port, triton.metrics_port}) == 3
    assert triton.grpc_url == f"127.0.0.1:{triton.grpc_port}"
