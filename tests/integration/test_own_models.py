"""Users' own ONNX models through ``switchyard serve``: added, reloaded without a restart, versioned, refused.

One ``serve`` (its own local Triton on a user model repository) runs through
the module; the tests run in order, each changing the repository and the
routes file and reloading (SIGHUP, or ``switchyard reload`` over the Admin
service), as a user would.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from switchyard.v1 import admin_pb2, admin_pb2_grpc, gateway_pb2_grpc
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1.tensors import from_numpy, to_numpy
from tests.integration.serve_process import Serve, running_serve
from tests.models.onnx_graphs import iris_pipeline, iris_rows, run_locally, two_inputs

A = np.arange(6, dtype=np.float32).reshape(2, 3)
B = np.full((2, 3), 0.5, dtype=np.float32)

CACHED_ROUTE = """
[[routes]]
name = "pair_cached"
model = "pair"
cache = { ttl_s = 300 }
"""
DOOMED_ROUTE = """
[[routes]]
name = "pair_doomed"
model = "pair"
"""


def switchyard(*args: str) -> subprocess.CompletedProcess[str]:
    exe = os.path.join(sys.exec_prefix, "bin", "switchyard")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=300, check=False)


@dataclass
class Project:
    folder: Path
    repository: Path
    routes: Path
    serve: Serve
    channel: grpc.Channel

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.serve.port}"

    def add(self, onnx_file: Path, *args: str) -> str:
        done = switchyard("models", "add", str(onnx_file), "--repository", str(self.repository), *args)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def infer(self, route: str, feeds: dict[str, np.ndarray], **fields: object) -> pb.InferResponse:
        request = pb.InferRequest(route=route, inputs=[from_numpy(k, v) for k, v in feeds.items()], **fields)
        reply: pb.InferResponse = gateway_pb2_grpc.GatewayStub(self.channel).Infer(request, timeout=10)
        return reply

    def reload(self) -> admin_pb2.ReloadResponse:
        reply: admin_pb2.ReloadResponse = admin_pb2_grpc.AdminStub(self.channel).Reload(
            admin_pb2.ReloadRequest(), timeout=300
        )
        return reply

    def health(self, route: str) -> int:
        stub = health_pb2_grpc.HealthStub(self.channel)
        status: int = stub.Check(health_pb2.HealthCheckRequest(service=f"route/{route}"), timeout=5).status
        return status


def outputs(reply: pb.InferResponse) -> dict[str, np.ndarray]:
    return {t.name: np.asarray(to_numpy(t)) for t in reply.outputs}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    folder = tmp_path_factory.mktemp("project")
    repository, routes = folder / "models", folder / "routes.toml"
    routes.write_text("# my routes\n")
    done = switchyard(
        "models", "add", str(two_inputs(folder / "pair.onnx")), "--name", "pair",
        "--repository", str(repository), "--route-file", str(routes), "--max-batch", "8",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with routes.open("a") as out:
        out.write(CACHED_ROUTE + DOOMED_ROUTE)
    args = ("--config", str(routes), "--model-repository", str(repository), "--host", "127.0.0.1", "--port", "0")
    with running_serve(*args, "--metrics-host", "127.0.0.1", "--metrics-port", "0", "--no-jobs") as serve:
        channel = grpc.insecure_channel(f"127.0.0.1:{serve.port}")
        try:
            yield Project(folder, repository, routes, serve, channel)
        finally:
            channel.close()


def test_an_added_model_answers_as_onnxruntime_does(project: Project) -> None:
    reply = project.infer("pair", {"a": A, "b": B})
    local = run_locally(project.repository / "pair" / "1" / "model.onnx", {"a": A, "b": B})
    got = outputs(reply)
    np.testing.assert_array_equal(got["total"], local["total"])
    np.testing.assert_array_equal(got["product"], local["product"])
    assert [(m.name, m.version) for m in reply.models] == [("pair", "1")]


class Load:
    """Steady calls on one route from a thread; counts answers and failures by status."""

    def __init__(self, project: Project, route: str) -> None:
        self.project, self.route = project, route
        self.ok = 0
        self.failed: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.project.infer(self.route, {"a": A, "b": B}, bypass_cache=True)
                self.ok += 1
            except grpc.RpcError as exc:
                self.failed[exc.code().name] = self.failed.get(exc.code().name, 0) + 1

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)


def test_sighup_serves_a_new_model_and_route_and_drops_a_removed_one_losing_no_call(project: Project) -> None:
    # Cached before any reload: the cached route must never answer these version-1 bytes for "latest" later.
    assert project.infer("pair_cached", {"a": A, "b": B}).models[0].version == "1"
    assert project.infer("pair_cached", {"a": A, "b": B}).cached
    iris = iris_pipeline(project.folder / "iris.onnx")
    printed = project.add(iris, "--name", "iris", "--route-file", str(project.routes))
    assert "route iris appended" in printed
    project.routes.write_text(project.routes.read_text().replace(DOOMED_ROUTE, ""))
    with Load(project, "pair") as load:
        time.sleep(0.5)
        started = time.monotonic()
        project.serve.proc.send_signal(signal.SIGHUP)
        while "reloaded:" not in project.serve.log:
            assert "reload refused" not in project.serve.log, project.serve.log
            assert time.monotonic() < started + 120, project.serve.log
            time.sleep(0.05)
        took = time.monotonic() - started
        time.sleep(0.5)
    print(f"\nSIGHUP reload loading model iris: {took:.1f} s to serve it")
    print(f"steady load on route pair across the SIGHUP reload: {load.ok} answered, failed {load.failed}")
    assert load.ok > 0 and load.failed == {}
    assert project.serve.proc.poll() is None  # no restart

    rows = iris_rows()
    got = outputs(project.infer("iris", {"features": rows}))
    local = run_locally(iris, {"features": rows})
    np.testing.assert_array_equal(got["label"].reshape(-1), local["label"])
    np.testing.assert_allclose(got["probabilities"], local["probabilities"], rtol=1e-6)

    with pytest.raises(grpc.RpcError) as info:
        project.infer("pair_doomed", {"a": A, "b": B})
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert project.health("pair_doomed") == health_pb2.HealthCheckResponse.NOT_SERVING
    assert project.health("iris") == health_pb2.HealthCheckResponse.SERVING


def test_version_2_serves_latest_calls_while_pinned_ones_keep_version_1(project: Project) -> None:
    printed = project.add(two_inputs(project.folder / "pair2.onnx", scale=2.0), "--name", "pair", "--version", "next")
    assert "added version pair version 2" in printed
    with project.routes.open("a") as out:
        out.write('\n[[routes]]\nname = "pair_v1"\nmodel = "pair"\nversion = "1"\n')
    with Load(project, "pair") as load:
        started = time.monotonic()
        reply = project.reload()
        took = time.monotonic() - started
    print(f"\nAdmin/Reload loading version 2 of pair: {took:.1f} s")
    print(f"steady load on route pair across the version-2 reload: {load.ok} answered, failed {load.failed}")
    assert load.failed == {}
    assert "pair" in reply.loaded_models and reply.model_versions["pair"] == "2"
    assert "pair_v1" in reply.added

    latest = project.infer("pair", {"a": A, "b": B})
    assert [(m.name, m.version) for m in latest.models] == [("pair", "2")]
    np.testing.assert_array_equal(outputs(latest)["total"], (A + B) * 2)
    pinned = project.infer("pair_v1", {"a": A, "b": B})
    assert [(m.name, m.version) for m in pinned.models] == [("pair", "1")]
    np.testing.assert_array_equal(outputs(pinned)["total"], A + B)
    asked_for_1 = project.infer("pair", {"a": A, "b": B}, model_versions={"pair": "1"})
    assert asked_for_1.models[0].version == "1"

    cached = project.infer("pair_cached", {"a": A, "b": B})
    assert cached.models[0].version == "2" and not cached.cached
    np.testing.assert_array_equal(outputs(cached)["total"], (A + B) * 2)
    again = project.infer("pair_cached", {"a": A, "b": B})
    assert again.cached and again.models[0].version == "2"


def test_a_broken_routes_file_is_refused_with_the_field_and_the_old_routes_stay(project: Project) -> None:
    good = project.routes.read_text()
    project.routes.write_text(good + '\n[[routes]]\nname = "bad"\nmodel = "pair"\ntimeout_s = -1\n')
    try:
        with pytest.raises(grpc.RpcError) as info:
            project.reload()
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "routes[bad].timeout_s" in (info.value.details() or "")
        done = switchyard("reload", "--address", project.address)
        assert done.returncode == 1 and "routes[bad].timeout_s" in done.stderr
        project.routes.write_text(good + '\n[[routes]]\nname = "bad"\nmodel = "absent_model"\n')
        with pytest.raises(grpc.RpcError) as info:
            project.reload()
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "routes[bad].model" in (info.value.details() or "")
    finally:
        project.routes.write_text(good)
    assert project.infer("pair", {"a": A, "b": B}).models[0].version == "2"
    assert project.infer("iris", {"features": iris_rows()}).outputs
    metrics_port = project.serve.port_after("metrics")
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as reply:
        exposition = reply.read().decode()
    # Every worker reloads: the counts are per worker process, summed.
    ok = re.search(r'switchyard_reloads_total\{outcome="ok"\} (\d+)', exposition)
    refused = re.search(r'switchyard_reloads_total\{outcome="refused"\} (\d+)', exposition)
    assert ok and refused, exposition
    assert float(ok.group(1)) >= 2 and float(refused.group(1)) >= 3


def test_models_list_shows_the_versions_and_what_triton_has_ready(project: Project) -> None:
    done = switchyard("models", "list", "--repository", str(project.repository))
    assert done.returncode == 0, done.stderr
    assert "pair  versions 1, 2" in done.stdout and "iris  versions 1" in done.stdout
    triton = re.search(r"local Triton\(s\) ready at (\S+)", project.serve.log)
    assert triton, project.serve.log
    done = switchyard("models", "list", "--repository", str(project.repository), "--triton-url", triton.group(1))
    assert done.returncode == 0, done.stderr
    assert "pair  versions 1, 2  ready in Triton: 1, 2" in done.stdout, done.stdout


def test_a_model_no_route_uses_is_removed_and_unloaded(project: Project) -> None:
    text = project.routes.read_text()
    start = text.index('[[routes]]\nname = "iris"')
    end = text.find("[[routes]]", start + 1)
    project.routes.write_text(text[:start] + (text[end:] if end != -1 else ""))
    assert list(project.reload().removed) == ["iris"]
    triton = re.search(r"local Triton\(s\) ready at (\S+)", project.serve.log)
    assert triton, project.serve.log
    repo = ("--repository", str(project.repository), "--triton-url", triton.group(1))
    done = switchyard("models", "remove", "iris", *repo)
    assert done.returncode == 0 and "removed model iris" in done.stdout, done.stdout + done.stderr
    done = switchyard("models", "list", *repo)
    assert "iris" not in done.stdout and "pair  versions 1, 2  ready in Triton: 1, 2" in done.stdout, done.stdout
    assert project.infer("pair", {"a": A, "b": B}).models[0].version == "2"


def test_an_init_project_is_served_end_to_end(tmp_path: Path) -> None:
    folder = tmp_path / "shop"
    done = switchyard("init", str(folder))
    assert done.returncode == 0, done.stderr
    model = iris_pipeline(tmp_path / "iris.onnx")
    done = switchyard(
        "models", "add", str(model), "--name", "iris", "--repository", str(folder / "models"),
        "--route-file", str(folder / "routes.toml"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    args = ("--config", str(folder / "routes.toml"), "--model-repository", str(folder / "models"))
    with running_serve(*args, "--host", "127.0.0.1", "--port", "0", "--no-metrics", "--no-jobs") as serve:
        rows = iris_rows()
        with grpc.insecure_channel(f"127.0.0.1:{serve.port}") as channel:
            request = pb.InferRequest(route="iris", inputs=[from_numpy("features", rows)])
            reply = gateway_pb2_grpc.GatewayStub(channel).Infer(request, timeout=10)
        got = outputs(reply)
        np.testing.assert_array_equal(got["label"].reshape(-1), run_locally(model, {"features": rows})["label"])
        assert serve.stop() == 0, serve.log


def test_every_worker_serves_what_a_reload_brings(tmp_path: Path) -> None:
    """Under --workers 2, Admin/Reload reaches one worker; the supervisor loads the model and every worker reloads."""
    repository, routes = tmp_path / "models", tmp_path / "routes.toml"
    routes.write_text("")
    done = switchyard(
        "models", "add", str(two_inputs(tmp_path / "pair.onnx")), "--name", "pair", "--repository", str(repository),
        "--route-file", str(routes),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    args = ("--config", str(routes), "--model-repository", str(repository), "--host", "127.0.0.1", "--port", "0")
    with running_serve(*args, "--workers", "2", "--no-metrics", "--no-jobs") as serve:
        iris = iris_pipeline(tmp_path / "iris.onnx")
        done = switchyard(
            "models", "add", str(iris), "--name", "iris", "--repository", str(repository), "--route-file", str(routes)
        )
        assert done.returncode == 0, done.stderr
        done = switchyard("reload", "--address", f"127.0.0.1:{serve.port}")
        assert done.returncode == 0, done.stderr
        assert "added: iris" in done.stdout and "models loaded: iris" in done.stdout, done.stdout
        rows = iris_rows()
        expected = run_locally(iris, {"features": rows})["label"]
        deadline = time.monotonic() + 30
        answered = 0
        while answered < 12:  # new connections spread over both workers (SO_REUSEPORT)
            with grpc.insecure_channel(f"127.0.0.1:{serve.port}", options=[("grpc.use_local_subchannel_pool", 1)]) as c:
                try:
                    request = pb.InferRequest(route="iris", inputs=[from_numpy("features", rows)])
                    reply = gateway_pb2_grpc.GatewayStub(c).Infer(request, timeout=10)
                except grpc.RpcError as exc:
                    # The other worker may still be reloading for a moment after the answer; never longer.
                    assert exc.code() == grpc.StatusCode.NOT_FOUND and time.monotonic() < deadline, exc
                    time.sleep(0.1)
                    continue
            np.testing.assert_array_equal(outputs(reply)["label"].reshape(-1), expected)
            answered += 1
        assert serve.log.count("reloaded:") >= 2, serve.log


def test_a_single_process_serve_reloads_on_sighup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One gateway process without a supervisor (no workers, no RSS limit): SIGHUP reloads it in place."""
    monkeypatch.setenv("SWITCHYARD_WORKER_MAX_RSS_MB", "0")
    repository, routes = tmp_path / "models", tmp_path / "routes.toml"
    routes.write_text("")
    args = ("--config", str(routes), "--model-repository", str(repository), "--host", "127.0.0.1", "--port", "0")
    repository.mkdir()
    with running_serve(*args, "--no-metrics", "--no-jobs") as serve:
        assert "gateway workers" not in serve.log, serve.log
        pair = two_inputs(tmp_path / "pair.onnx")
        done = switchyard(
            "models", "add", str(pair), "--name", "pair", "--repository", str(repository), "--route-file", str(routes)
        )
        assert done.returncode == 0, done.stderr
        serve.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 120
        while "reloaded:" not in serve.log:
            assert "reload refused" not in serve.log and time.monotonic() < deadline, serve.log
            time.sleep(0.05)
        with grpc.insecure_channel(f"127.0.0.1:{serve.port}") as channel:
            request = pb.InferRequest(route="pair", inputs=[from_numpy("a", A), from_numpy("b", B)])
            reply = gateway_pb2_grpc.GatewayStub(channel).Infer(request, timeout=10)
        np.testing.assert_array_equal(outputs(reply)["total"], run_locally(pair, {"a": A, "b": B})["total"])
        assert serve.stop() == 0, serve.log
