"""`switchyard serve` as users run it: local Triton, health, an SDK call, clean SIGTERM; a killed Triton restarted."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from switchyard.client import Client
from switchyard.models.datasets import digits_split
from switchyard.server.local_triton import LocalTriton
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc
from switchyard.v1.tensors import from_numpy
from tests.integration.serve_process import running_serve


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and "tritonserver" in cmdline:
            found.append(int(entry.name))
    return found


def test_serve_answers_and_stops_cleanly(model_repository: Path, tmp_path: Path) -> None:
    # A copy of its own, so the Triton started by `serve` can be told apart.
    repo = tmp_path / "repo"
    subprocess.run(["cp", "-r", str(model_repository), str(repo)], check=True)
    args = ("--model-repository", str(repo), "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0")
    with running_serve(*args) as serve:
        port = serve.port
        assert _processes_mentioning(str(repo)), "no local tritonserver was started"

        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert status.status == health_pb2.HealthCheckResponse.SERVING

        _, x_test, _, y_test = digits_split()
        with Client(f"127.0.0.1:{port}") as client:
            result = client.infer("digits", {"image": x_test[:10]}, timeout=10)
        assert (np.asarray(result["label"]).reshape(-1) == y_test[:10]).mean() >= 0.8

        # With its own local Triton, serve sends large inputs through shared memory by default.
        image = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
        with Client(f"127.0.0.1:{port}") as client:
            probabilities = client.infer("image_cnn", {"image": image}, timeout=30)["probabilities"]
        assert np.asarray(probabilities).shape == (1, 10)
        metrics_port = serve.port_after("metrics")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as reply:
            exposition = reply.read().decode()
        assert re.search(r'switchyard_backend_shm_inputs_total\{[^}]*way="shm"[^}]*\} 1\.0', exposition), exposition

        assert serve.stop() == 0, serve.log
        assert "stopped" in serve.log
        deadline = time.monotonic() + 10
        while _processes_mentioning(str(repo)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _processes_mentioning(str(repo)), "tritonserver outlived switchyard serve"


def _triton_child(parent: int) -> int | None:
    """Pid of the tritonserver whose parent is ``parent``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
        except OSError:
            continue
        comm = stat[stat.index(b"(") + 1 : stat.rindex(b")")]
        fields = stat[stat.rindex(b")") + 2 :].split()
        if comm == b"tritonserver" and int(fields[1]) == parent and fields[0] != b"Z":
            return int(entry.name)
    return None


def test_serve_restarts_a_killed_triton(model_repository: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    subprocess.run(["cp", "-r", str(model_repository), str(repo)], check=True)
    args = ("--model-repository", str(repo), "--host", "127.0.0.1", "--port", "0", "--no-metrics")
    # The gateway logs every failed call: the helper reads its output all along, so the pipe never fills up.
    with running_serve(*args) as serve:
        proc, lines = serve.proc, serve.lines
        first = _triton_child(proc.pid)
        assert first, "no local tritonserver child"
        request = pb.InferRequest(route="digits", inputs=[from_numpy("image", np.zeros((1, 64), np.float32))])
        with grpc.insecure_channel(f"127.0.0.1:{serve.port}") as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            assert stub.Infer(request, timeout=10).outputs

            os.kill(first, signal.SIGKILL)
            killed = time.monotonic()
            codes: dict[str, int] = {}
            while True:
                assert time.monotonic() - killed < 90, "no successful call 90 s after the kill:\n" + "".join(lines)
                assert proc.poll() is None, "serve exited:\n" + "".join(lines)
                started = time.monotonic()
                try:
                    stub.Infer(request, timeout=2)
                except grpc.RpcError as exc:
                    assert time.monotonic() - started < 2.5, "a call hung past its deadline"
                    assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc.details()
                    codes[exc.code().name] = codes.get(exc.code().name, 0) + 1
                    time.sleep(0.05)
                    continue
                break
            recovery = time.monotonic() - killed
            print(
                f"\nserve recovered {recovery:.2f} s after tritonserver was SIGKILLed (failed calls meanwhile: {codes})"
            )
            second = _triton_child(proc.pid)
            assert second and second != first
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            deadline = time.monotonic() + 5
            while status.status != health_pb2.HealthCheckResponse.SERVING and time.monotonic() < deadline:
                time.sleep(0.1)
                status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert status.status == health_pb2.HealthCheckResponse.SERVING
        # The gateway's channel reconnects on its own; the supervisor's own readiness check may end a bit later.
        deadline = time.monotonic() + 10
        while not any("local Triton is back" in line for line in lines) and time.monotonic() < deadline:
            time.sleep(0.1)

        assert serve.stop() == 0, serve.log
        log = serve.log
        assert "local Triton (pid" in log and "died with status -9" in log
        assert "local Triton is back" in log and "stopped" in log, log
        deadline = time.monotonic() + 10
        while _processes_mentioning(str(repo)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _processes_mentioning(str(repo)), "tritonserver outlived switchyard serve"


def test_serve_uses_the_triton_named_in_the_environment(
    local_triton: LocalTriton, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As in a container: the Triton comes from SWITCHYARD_TRITON_URL, not a flag; serve must not start its own.
    monkeypatch.setenv("SWITCHYARD_TRITON_URL", local_triton.grpc_url)
    with running_serve("--host", "127.0.0.1", "--port", "0", "--no-metrics") as serve:
        assert _triton_child(serve.proc.pid) is None, "serve started a Triton of its own:\n" + serve.log
        _, x_test, _, y_test = digits_split()
        with Client(f"127.0.0.1:{serve.port}") as client:
            result = client.infer("digits", {"image": x_test[:10]}, timeout=10)
        assert (np.asarray(result["label"]).reshape(-1) == y_test[:10]).mean() >= 0.8
        assert serve.stop() == 0, serve.log
    assert "starting local Triton" not in serve.log
