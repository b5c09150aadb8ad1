"""compose.yaml brought up with podman-compose on the local images: calls through the gateway, a Redis cache shared by
its two workers, calls going on when the Triton replica in use is stopped, and `down` leaving nothing behind.

The gateway runs ``--workers 2`` on one port (SO_REUSEPORT): the kernel gives
each new connection to one worker, so the test opens connections until both
workers have answered, and tells them apart by the connections each worker
process holds (read from /proc: the containers' processes are this host's).
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sklearn.datasets import load_digits

from switchyard.client import Client
from switchyard.server.processes import free_port
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc
from switchyard.v1.tensors import from_numpy

from .podman import ROOT, Podman, child_pids, command_line, established_connections, peers

# The first test of a session also makes the images (debootstrap and a cold build: several minutes).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

GATEWAY_CONTAINER_PORT = 8500
TRITON_GRPC_PORT = 8001
READY_TIMEOUT_S = 420.0
MAX_CONNECTIONS = 32  # all on one of 2 workers has odds 2 / 2**32
FAILOVER_CALLS_S = 10.0


class Project:
    """One compose project: ``podman-compose -p NAME -f compose.yaml ...`` with the test's images and ports."""

    def __init__(self, podman: Podman, switchyard_image: str, redis_image: str) -> None:
        self.podman = podman
        self.name = f"switchyard-test-{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.metrics_port = free_port()
        self.env = {
            "SWITCHYARD_IMAGE": switchyard_image,
            "REDIS_IMAGE": redis_image,
            "GATEWAY_PORT": str(self.port),
            "GATEWAY_METRICS_PORT": str(self.metrics_port),
        }
        self.program = (os.path.join(sys.exec_prefix, "bin", "podman-compose"), "-p", self.name, "-f", "compose.yaml")

    def compose(self, *args: str, timeout_s: float = 300) -> str:
        result = self.podman.run(*args, program=self.program, env=self.env, timeout_s=timeout_s)
        return result.stdout + result.stderr

    def containers(self) -> list[str]:
        """Names of this project's containers, running or not."""
        label = f"label=io.podman.compose.project={self.name}"
        listed = self.podman.run("ps", "--all", "--filter", label, "--format", "{{.Names}}").stdout
        return listed.split()

    def container(self, service: str) -> str:
        (name,) = [c for c in self.containers() if c.startswith(f"{self.name}_{service}_")]
        return name

    def logs(self) -> str:
        return "\n".join(f"--- {c}\n{self.podman.logs(c, tail=30)}" for c in self.containers())

    def address(self, container: str) -> str:
        template = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
        return self.podman.run("inspect", "--format", template, container).stdout.split()[0]

    def gateway_pid(self) -> int:
        return int(self.podman.run("inspect", "--format", "{{.State.Pid}}", self.container("gateway")).stdout)

    def worker_pids(self) -> list[int]:
        """Host pids of the gateway's worker processes (tini -> switchyard serve -> workers)."""
        workers = []
        for child in child_pids(self.gateway_pid()):
            workers += [p for p in child_pids(child) if "switchyard.server.workers" in command_line(p)]
        return sorted(workers)


@pytest.fixture
def project(podman: Podman, switchyard_image: str, redis_image: str) -> Iterator[Project]:
    project = Project(podman, switchyard_image, redis_image)
    try:
        yield project
    finally:
        if project.containers():
            project.compose("down", "--volumes", "--timeout", "30", timeout_s=300)


def _serving(target: str) -> bool:
    try:
        with grpc.insecure_channel(target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False


def _new_connection(target: str) -> grpc.Channel:
    # A subchannel of its own: otherwise grpc would reuse one connection for every channel.
    return grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])


def test_compose_up_serves_shares_the_cache_and_comes_down(project: Project) -> None:
    assert Path(ROOT / "compose.yaml").is_file()
    started = time.monotonic()
    project.compose("up", "--detach", "--no-build")
    up_s = time.monotonic() - started
    target = f"127.0.0.1:{project.port}"
    while not _serving(target):
        assert time.monotonic() - started < READY_TIMEOUT_S, f"gateway not serving:\n{project.logs()}"
        gateway_state = project.podman.run("inspect", "--format", "{{.State.Status}}", project.container("gateway"))
        assert gateway_state.stdout.strip() == "running", f"gateway exited:\n{project.logs()}"
        time.sleep(1)
    ready_s = time.monotonic() - started

    digits = load_digits()
    with Client(target) as client:
        answer = client.infer("digits", {"image": digits.data[:20].astype(np.float32)}, timeout=10)
    predicted = np.asarray(answer["label"]).reshape(-1)
    assert (predicted == digits.target[:20]).mean() >= 0.9, predicted

    # A request no earlier run has cached: the first call computes it, every later one is a Redis hit,
    # on whichever worker its connection lands.
    image = np.random.default_rng(time.time_ns()).integers(0, 17, size=(1, 64)).astype(np.float32)
    request = pb.InferRequest(route="digits_cached", inputs=[from_numpy("image", image)])
    workers = project.worker_pids()
    assert len(workers) == 2, workers
    answered_by: list[tuple[int, bool]] = []  # (worker pid, cached) per call, each on a new connection
    channels: list[grpc.Channel] = []
    try:
        while len({pid for pid, _ in answered_by}) < 2:
            assert len(channels) < MAX_CONNECTIONS, f"every connection went to one worker: {answered_by}"
            before = {pid: established_connections(pid, GATEWAY_CONTAINER_PORT) for pid in workers}
            channel = _new_connection(target)
            channels.append(channel)
            reply = gateway_pb2_grpc.GatewayStub(channel).Infer(request, timeout=10)
            after = {pid: established_connections(pid, GATEWAY_CONTAINER_PORT) for pid in workers}
            (worker,) = [pid for pid in workers if after[pid] > before[pid]]
            answered_by.append((worker, reply.cached))
        first_worker, first_cached = answered_by[0]
        assert not first_cached, "the first call of a new request was answered from the cache"
        assert all(cached for _, cached in answered_by[1:]), answered_by
        other = [cached for pid, cached in answered_by if pid != first_worker]
        assert other and all(other), f"the second worker did not see the first worker's cached answer: {answered_by}"

        # The Triton replica the gateway uses goes away: calls on every connection (both workers) go on.
        tritons = {project.address(c): c for c in project.containers() if c.startswith(f"{project.name}_triton-")}
        in_use = peers(project.gateway_pid(), TRITON_GRPC_PORT)
        victim_address = max(set(in_use), key=in_use.count)
        victim = tritons[victim_address]
        project.podman.run("stop", "--time", "0", victim)
        stopped = time.monotonic()
        codes: dict[str, int] = {}
        last_failure_s: float | None = None
        plain = pb.InferRequest(route="digits", inputs=[from_numpy("image", image)])
        while time.monotonic() - stopped < FAILOVER_CALLS_S:
            for channel in channels:
                try:
                    gateway_pb2_grpc.GatewayStub(channel).Infer(plain, timeout=5)
                    code = "OK"
                except grpc.RpcError as exc:
                    code = exc.code().name
                    last_failure_s = time.monotonic() - stopped
                codes[code] = codes.get(code, 0) + 1
        now_in_use = sorted(set(peers(project.gateway_pid(), TRITON_GRPC_PORT)))
    finally:
        for channel in channels:
            channel.close()
    failures = "none failed" if last_failure_s is None else f"the last failed {last_failure_s:.2f} s after"
    print(f"\ncompose: {victim} stopped: calls {codes} ({failures}); Triton in use now {now_in_use}")
    assert victim_address not in now_in_use and now_in_use, now_in_use
    # Failures, if any, only while the gateway moves to the other replica.
    assert codes.get("OK", 0) > 0 and (last_failure_s or 0.0) < FAILOVER_CALLS_S / 2, codes

    stopping = time.monotonic()
    project.compose("down", "--volumes", "--timeout", "30", timeout_s=300)
    down_s = time.monotonic() - stopping
    print(
        f"\ncompose: up {up_s:.1f} s, gateway serving {ready_s:.1f} s after up; "
        f"{len(answered_by)} connections until both workers answered ({answered_by}); down {down_s:.1f} s"
    )
    assert project.containers() == [], "containers left after down"
    pods = project.podman.run("pod", "ps", "--filter", f"name={project.name}", "--format", "{{.Name}}").stdout
    assert pods.strip() == "", f"pods left after down: {pods}"
    volumes = project.podman.run("volume", "ls", "--format", "{{.Name}}").stdout.split()
    assert not [v for v in volumes if v.startswith(project.name)], volumes
