"""The SDK on its own: the wheel installed without extras into a fresh virtual environment calls a live gateway.

Nothing of the server stack (tritonclient, uvloop, redis, pydantic, ...) is
installed there; ``switchyard`` runs with ``batch`` and says what to install
for ``serve``; ``switchyard batch`` says what to install until the ``batch``
extra is there, then scores a file. pip takes the versions of this
environment (a constraints file), so its cache serves the packages.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import venv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from switchyard.models.datasets import wine_split

from ..wheels import build_wheel
from .gateway_thread import GatewayThread

ABSENT = ("tritonclient", "uvloop", "redis", "pydantic", "pydantic_settings", "prometheus_client", "PIL", "xxhash")
PINNED = ("grpcio", "protobuf", "numpy", "pyarrow", "tqdm")


def run(*command: str | Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def sdk_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Path]]:
    """(the fresh environment's bin folder, the wheel, the constraints file), the wheel installed without extras."""
    work = tmp_path_factory.mktemp("sdk")
    wheel = build_wheel(work / "build")
    venv.EnvBuilder(with_pip=True).create(work / "venv")
    bin_dir = work / "venv" / "bin"
    constraints = work / "constraints.txt"
    constraints.write_text("".join(f"{name}=={importlib.metadata.version(name)}\n" for name in PINNED))
    installed = run(bin_dir / "python", "-m", "pip", "install", "--quiet", "-c", constraints, wheel, timeout=600)
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    yield bin_dir, wheel, constraints


def test_the_sdk_alone_calls_a_live_gateway(sdk_env: tuple[Path, Path, Path], gateway_thread: GatewayThread) -> None:
    bin_dir, _, _ = sdk_env
    script = f"""
import importlib.util, json
import numpy as np
from switchyard.client import Client, InvalidArgument
with Client({gateway_thread.target!r}) as client:
    routes = [r.name for r in client.routes()]
    result = client.infer("digits", {{"image": np.zeros((2, 64), np.float32)}}, timeout=10)
    try:
        client.infer("digits", {{"image": np.zeros((2, 63), np.float32)}}, timeout=10)
        code = "OK"
    except InvalidArgument as error:
        code = error.code.name
absent = [m for m in {ABSENT!r} if importlib.util.find_spec(m) is None]
print(json.dumps({{"routes": routes, "labels": np.asarray(result["label"]).ravel().tolist(), "bad": code,
                  "absent": absent}}))
"""
    done = run(bin_dir / "python", "-c", script)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert "digits" in report["routes"] and len(report["labels"]) == 2
    assert report["bad"] == "INVALID_ARGUMENT"
    assert report["absent"] == list(ABSENT)  # none of the server stack is installed
    listed = run(bin_dir / "python", "-m", "pip", "list", "--format", "json")
    names = {package["name"].lower() for package in json.loads(listed.stdout)}
    assert not names & {"tritonclient", "uvloop", "redis", "pydantic", "pyarrow"}, names


def test_the_command_works_without_the_server_and_says_what_to_install(
    sdk_env: tuple[Path, Path, Path], tmp_path: Path, gateway_thread: GatewayThread
) -> None:
    bin_dir, _, _ = sdk_env
    usage = run(bin_dir / "switchyard", "--help")
    assert usage.returncode == 0 and "batch" in usage.stdout, usage.stderr
    serve = run(bin_dir / "switchyard", "serve")
    assert serve.returncode == 1
    assert "the serve command needs the server: pip install 'switchyard[server]'" in serve.stderr
    rows = tmp_path / "wines.npy"
    np.save(rows, wine_split().X_test[:10])
    batch = run(bin_dir / "switchyard", "batch", rows, "--route", "wine", "--gateway", gateway_thread.target)
    assert batch.returncode == 1
    assert "switchyard batch needs the batch extra: pip install 'switchyard[batch]'" in batch.stderr


def test_with_the_batch_extra_switchyard_batch_scores_a_file(
    sdk_env: tuple[Path, Path, Path], tmp_path: Path, gateway_thread: GatewayThread
) -> None:
    bin_dir, wheel, constraints = sdk_env
    extra = run(bin_dir / "python", "-m", "pip", "install", "--quiet", "-c", constraints, f"{wheel}[batch]")
    assert extra.returncode == 0, extra.stderr[-3000:]
    rows = tmp_path / "wines.npy"
    features = wine_split().X_test
    np.save(rows, features)
    command = ["batch", rows, "--route", "wine", "--gateway", gateway_thread.target, "--no-progress"]
    done = run(bin_dir / "switchyard", *command)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{len(features)} rows ({len(features)} ok, 0 failed)" in done.stdout
    assert (tmp_path / "wines.scored.npz").is_file()
    assert run(bin_dir / "python", "-c", "import tritonclient").returncode == 1  # still only the SDK
