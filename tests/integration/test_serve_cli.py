"""`switchyard serve` as users run it: local Triton, health, an SDK call, clean SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from switchyard.client import Client
from switchyard.models.datasets import digits_split


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
    exe = os.path.join(sys.exec_prefix, "bin", "switchyard")
    proc = subprocess.Popen(
        [exe, "serve", "--model-repository", str(repo), "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        port = None
        lines = []
        started = time.monotonic()
        assert proc.stdout is not None
        while time.monotonic() - started < 120:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            match = re.search(r"serving on [\d.]+:(\d+)", line)
            if match:
                port = int(match.group(1))
                break
        assert port, "serve did not come up:\n" + "".join(lines)
        assert _processes_mentioning(str(repo)), "no local tritonserver was started"

        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert status.status == health_pb2.HealthCheckResponse.SERVING

        _, x_test, _, y_test = digits_split()
        with Client(f"127.0.0.1:{port}") as client:
            result = client.infer("digits", {"image": x_test[:10]}, timeout=10)
        assert (np.asarray(result["label"]).reshape(-1) == y_test[:10]).mean() >= 0.8

        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, "".join(lines) + out
        assert "stopped" in out
        deadline = time.monotonic() + 10
        while _processes_mentioning(str(repo)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _processes_mentioning(str(repo)), "tritonserver outlived switchyard serve"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
