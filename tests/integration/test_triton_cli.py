"""`switchyard triton` as a Triton replica runs it: every address, answers, restarted when killed, clean SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as tritongrpc

from switchyard.models.datasets import digits_split
from switchyard.server.processes import free_port
from tests.integration.serve_process import Serve
from tests.integration.waiting import wait_for

GRACE_S = 5.0
SWITCHYARD = os.path.join(sys.exec_prefix, "bin", "switchyard")


def _tritonserver_children(parent: int) -> list[int]:
    """Pids of the live tritonserver processes whose parent is ``parent``."""
    found = []
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
            found.append(int(entry.name))
    return found


def _digits_labels(url: str, images: np.ndarray) -> np.ndarray:
    with tritongrpc.InferenceServerClient(url) as client:
        request = tritongrpc.InferInput("image", list(images.shape), "FP32")
        request.set_data_from_numpy(images)
        result = client.infer("digits_logreg", [request], client_timeout=30)
    labels = result.as_numpy("label")
    assert labels is not None
    return labels.reshape(-1)


def test_triton_command_serves_restarts_and_drains(model_repository: Path) -> None:
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    # No --host: the default, every address, as in a container; this host reaches it on loopback.
    command = [
        SWITCHYARD,
        "triton",
        "--model-repository",
        str(model_repository),
        "--grpc-port",
        str(grpc_port),
        "--http-port",
        str(http_port),
        "--metrics-port",
        str(metrics_port),
        "--grace-s",
        str(GRACE_S),
    ]
    started = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    triton = Serve(proc)
    try:
        triton.wait_serving(120)
        ready_s = time.monotonic() - started
        assert f"triton serving on 0.0.0.0:{grpc_port} (HTTP {http_port}, metrics {metrics_port})" in triton.log
        url = f"127.0.0.1:{grpc_port}"
        _, x_test, _, y_test = digits_split()
        labels = _digits_labels(url, x_test[:20])
        assert (labels == y_test[:20]).mean() >= 0.8, labels

        # Killed, it is restarted on the same ports.
        (first,) = _tritonserver_children(proc.pid)
        os.kill(first, signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: _tritonserver_children(proc.pid) not in ([], [first]), 30, "a new tritonserver")
        # The supervisor says so once every model is ready again.
        wait_for(lambda: "local Triton is back" in triton.log, 120, "the restarted Triton ready")
        back_s = time.monotonic() - killed
        assert proc.poll() is None, triton.log
        assert (_digits_labels(url, x_test[:20]) == labels).all()

        stopping = time.monotonic()
        status = triton.stop(timeout_s=GRACE_S + 10)
        stop_s = time.monotonic() - stopping
        print(f"\nswitchyard triton: ready {ready_s:.1f} s, back {back_s:.1f} s after a kill, stopped {stop_s:.1f} s")
        assert status == 0, triton.log
        assert "stopped" in triton.log
        assert not _tritonserver_children(proc.pid)
    finally:
        triton.close()


def test_triton_command_says_why_it_cannot_start(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-repository"
    result = subprocess.run(
        [SWITCHYARD, "triton", "--model-repository", str(missing), "--grpc-port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert f"switchyard: error: model repository {missing} is not a directory" in result.stderr
