"""`switchyard serve --workers 2`: two gateway processes on one port, summed metrics, a killed worker replaced."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import psutil
import pytest

from switchyard.models.datasets import digits_split
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc
from switchyard.v1.tensors import from_numpy, to_numpy
from tests.integration.serve_process import running_serve
from tests.integration.waiting import wait_for

CONNECTIONS = 16  # each to one of 2 workers by the kernel's hash: all on one worker has odds 2 / 2**16


def _workers(serve: psutil.Process) -> list[psutil.Process]:
    return [p for p in serve.children() if "switchyard.server.workers" in " ".join(p.cmdline())]


def _index_of(worker: psutil.Process) -> str:
    command = worker.cmdline()
    return command[command.index("--index") + 1]


def _established_on(process: psutil.Process, port: int) -> int:
    return sum(
        1 for c in process.net_connections(kind="tcp") if c.laddr and c.laddr.port == port and c.status == "ESTABLISHED"
    )


def _requests_ok(metrics_port: int, route: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    match = re.search(rf'^switchyard_requests_total\{{code="OK",route="{route}"\}} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def _process_metrics(metrics_port: int) -> dict[tuple[str, str], float]:
    """(metric, worker label) -> value of the process_* series on the supervisor's endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    found = re.findall(r'^(process_\w+)\{worker="(\w+)"\} (\S+)$', text, re.MULTILINE)
    return {(name, worker): float(value) for name, worker, value in found}


def _new_connection(target: str) -> grpc.Channel:
    # A subchannel of its own: otherwise grpc would reuse one connection for every channel.
    return grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])


def _shm_regions(triton_url: str) -> list[str]:
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(triton_url) as client:
        return sorted(client.get_system_shared_memory_status(as_json=True).get("regions", {}))


def _cnn_on_new_connections(target: str) -> None:
    """One image_cnn call (600 KB: through shared memory) on each of ``CONNECTIONS`` new connections."""
    image = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
    request = pb.InferRequest(route="image_cnn", inputs=[from_numpy("image", image)])
    for i in range(CONNECTIONS):
        with _new_connection(target) as channel:
            reply = gateway_pb2_grpc.GatewayStub(channel).Infer(request, timeout=30)
        assert [t.name for t in reply.outputs] == ["probabilities"], f"connection {i}"


def _call_on_new_connections(target: str, images: np.ndarray, expected: np.ndarray) -> list[grpc.Channel]:
    """One digits call on each of ``CONNECTIONS`` new connections, checked; returns the channels, still open."""
    channels = []
    for i in range(CONNECTIONS):
        channel = _new_connection(target)
        channels.append(channel)
        request = pb.InferRequest(route="digits", inputs=[from_numpy("image", images[i : i + 1])])
        reply = gateway_pb2_grpc.GatewayStub(channel).Infer(request, timeout=10)
        (label,) = [t for t in reply.outputs if t.name == "label"]
        assert to_numpy(label).reshape(-1).tolist() == [expected[i]], f"connection {i}"
    return channels


def test_workers_share_the_port_sum_their_metrics_and_are_replaced(model_repository: Path, tmp_path: Path) -> None:
    _, x_test, _, _ = digits_split()
    images = x_test[:CONNECTIONS].astype(np.float32)
    args = ("--workers", "2", "--model-repository", str(model_repository), "--host", "127.0.0.1", "--port", "0")
    with running_serve(*args, "--metrics-port", "0", "--data-dir", str(tmp_path / "data"), ready_s=180) as server:
        log = server.log
        port = server.port
        metrics_port = server.port_after("metrics")
        serve = psutil.Process(server.proc.pid)
        workers = _workers(serve)
        assert len(workers) == 2, log
        target = f"127.0.0.1:{port}"

        # Reference answers from one connection, then one call on each of 16 new connections.
        with grpc.insecure_channel(target) as channel:
            request = pb.InferRequest(route="digits", inputs=[from_numpy("image", images)])
            reply = gateway_pb2_grpc.GatewayStub(channel).Infer(request, timeout=10)
        expected = to_numpy([t for t in reply.outputs if t.name == "label"][0]).reshape(-1)
        channels = _call_on_new_connections(target, images, expected)
        try:
            per_worker = {w.pid: _established_on(w, port) for w in workers}
        finally:
            for channel in channels:
                channel.close()
        print(f"\n{CONNECTIONS + 1} connections over the workers: {per_worker}")
        assert all(count > 0 for count in per_worker.values()), f"a worker took no connection: {per_worker}"
        assert sum(per_worker.values()) >= CONNECTIONS
        # The supervisor's endpoint sums both workers' counters.
        wait_for(lambda: _requests_ok(metrics_port, "digits") == CONNECTIONS + 1, 5, "summed request count")
        # Process metrics: one series per worker (labelled by index) and one for the supervisor.
        process = _process_metrics(metrics_port)
        for label in ("supervisor", "0", "1"):
            assert process[("process_resident_memory_bytes", label)] > 10e6, process
            assert process[("process_cpu_seconds_total", label)] > 0, process
        for worker in workers:  # each series is its worker's: the start times match
            label = _index_of(worker)
            assert process[("process_start_time_seconds", label)] == pytest.approx(worker.create_time(), abs=1.0)

        # Each worker registers its shared memory with Triton on its first large input.
        triton_url = re.search(r"waiting for models in Triton at ([\d.]+:\d+)", log).group(1)  # type: ignore[union-attr]
        _cnn_on_new_connections(target)
        regions = _shm_regions(triton_url)
        assert {w.pid for w in workers} == {int(name.split("_")[1]) for name in regions}, regions

        # A worker killed outright: the other keeps serving, a new one takes its place.
        victim = workers[0]
        victim_index = _index_of(victim)
        victim.kill()
        victim.wait(10)
        _call_on_new_connections(target, images, expected)
        wait_for(lambda: len(_workers(serve)) == 2, 60, "a replacement worker")
        replacement = next(w for w in _workers(serve) if w.pid != workers[1].pid)
        assert replacement.pid != victim.pid
        wait_for(lambda: f"serving (pid {replacement.pid})" in server.log, 60, "the replacement ready")
        replaced = _process_metrics(metrics_port)[("process_start_time_seconds", victim_index)]
        assert replaced == pytest.approx(replacement.create_time(), abs=1.0)  # the new process under the old label
        # The killed worker could not unregister its shared memory: the supervisor did.
        assert not [name for name in _shm_regions(triton_url) if name.startswith(f"switchyard_{victim.pid}_")]
        channels = _call_on_new_connections(target, images, expected)
        for channel in channels:
            channel.close()
        # The dead worker's counts stay in the sum; every call so far is counted once.
        wait_for(lambda: _requests_ok(metrics_port, "digits") == 3 * CONNECTIONS + 1, 5, "count after a restart")

        assert server.stop() == 0, server.log
        assert f"(pid {victim.pid}) exited with status -9" in server.log, server.log
        for worker in (*workers, replacement):
            assert not psutil.pid_exists(worker.pid) or worker.status() == psutil.STATUS_ZOMBIE
