"""The Node.js and Go example clients (examples/node, examples/go) against a live gateway in front of a real Triton.

Each lists the routes, classifies a held-out digit from scikit-learn's
``load_digits`` (checking the label), pipelines 100 requests on one
``InferStream``, checks that a bad input is ``INVALID_ARGUMENT`` and follows a
job from ``SubmitJob`` to ``SUCCEEDED`` with ``WatchJob``; it exits 1 when any
step fails. The toolchains come from Debian (nodejs, golang-go, the Go gRPC and
protobuf libraries, protoc) and npm; ``.ci/run`` installs them when missing,
and a test is skipped, naming what is missing, where they are absent.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from switchyard.models import BUNDLED_ROUTES
from switchyard.models.datasets import digits_split
from switchyard.proxy.routes.schema import load_routes
from switchyard.proxy.settings import GatewaySettings
from switchyard.server.local_triton import LocalTriton

from .gateway_thread import GatewayThread

ROOT = Path(__file__).resolve().parents[2]
NODE_EXAMPLE = ROOT / "examples" / "node"
GO_EXAMPLE = ROOT / "examples" / "go"
DIGIT_INDEX = 0
"""Which held-out digit the clients classify (the bundled classifier gets it right)."""


@pytest.fixture(scope="module")
def digit_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A held-out digit as the clients read it, and its label."""
    split = digits_split()
    label = int(split.y_test[DIGIT_INDEX])
    path = tmp_path_factory.mktemp("digit") / "digit.json"
    path.write_text(json.dumps({"pixels": split.X_test[DIGIT_INDEX].tolist(), "label": label}))
    return path, label


@pytest.fixture(scope="module")
def gateway(local_triton: LocalTriton, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayThread]:
    """The bundled routes, with the embedded job store in a folder of its own."""
    settings = GatewaySettings(
        triton_url=local_triton.grpc_url,
        host="127.0.0.1",
        port=0,
        metrics_port=None,
        data_dir=tmp_path_factory.mktemp("jobs"),
    )
    with GatewayThread(settings, load_routes(BUNDLED_ROUTES)) as thread:
        yield thread


def check_output(name: str, completed: subprocess.CompletedProcess[str], label: int) -> None:
    assert completed.returncode == 0, completed.stdout + completed.stderr
    lines = completed.stdout.splitlines()
    print("\n" + completed.stdout)
    (listed,) = [line for line in lines if line.startswith(f"{name}: ListRoutes: ")]
    assert "digits" in listed.rpartition(": ")[2].split(","), listed
    assert f"{name}: Infer: label {label} (expected {label})" in completed.stdout
    assert f"{name}: InferStream: 100/100 answered, every label {label}" in completed.stdout
    assert f"{name}: bad input: INVALID_ARGUMENT: inputs[image].shape[1]: expected 64, got 63" in completed.stdout
    (job,) = [line for line in lines if line.startswith(f"{name}: job ")]
    assert job.endswith(f"JOB_STATE_SUCCEEDED, label {label}"), job


def test_node_client(gateway: GatewayThread, digit_file: tuple[Path, int]) -> None:
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (Debian nodejs and npm; .ci/run installs them)")
    if not (NODE_EXAMPLE / "node_modules" / "@grpc" / "grpc-js").is_dir():
        installed = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_EXAMPLE, capture_output=True, text=True, timeout=240
        )
        assert installed.returncode == 0, installed.stderr[-3000:]
    path, label = digit_file
    completed = subprocess.run(
        ["node", "client.js", "--target", gateway.target, "--digit", str(path)],
        cwd=NODE_EXAMPLE,
        capture_output=True,
        text=True,
        timeout=120,
    )
    check_output("node client", completed, label)


def test_go_client(gateway: GatewayThread, digit_file: tuple[Path, int], tmp_path: Path) -> None:
    missing = [tool for tool in ("go", "protoc", "protoc-gen-go", "protoc-gen-go-grpc") if shutil.which(tool) is None]
    gocode = Path("/usr/share/gocode/src")
    for package, found in (
        ("golang-google-grpc-dev", gocode / "google.golang.org" / "grpc"),
        ("golang-google-protobuf-dev", gocode / "google.golang.org" / "protobuf"),
        ("golang-github-golang-protobuf-1-5-dev", gocode / "github.com/golang/protobuf/proto/registry.go"),
    ):
        if not found.exists():
            missing.append(package)
    if missing:
        pytest.skip(f"missing {', '.join(missing)} (Debian packages; .ci/run installs them)")
    built = subprocess.run([str(GO_EXAMPLE / "build.sh"), str(tmp_path)], capture_output=True, text=True, timeout=280)
    assert built.returncode == 0, built.stdout + built.stderr[-3000:]
    path, label = digit_file
    completed = subprocess.run(
        [str(tmp_path / "switchyard-example"), "-target", gateway.target, "-digit", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    check_output("go client", completed, label)
