"""The Jobs service against a real Triton: submit, get, watch, cancel, list, errors naming fields; Redis faults."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from prometheus_client import REGISTRY

from switchyard.client import Client, NotFound, Unavailable
from switchyard.models.datasets import digits_split
from switchyard.proxy.routes.schema import load_routes
from switchyard.proxy.settings import GatewaySettings
from switchyard.server.local_triton import LocalTriton
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import jobs_pb2 as jpb
from switchyard.v1 import jobs_pb2_grpc
from switchyard.v1.tensors import from_numpy
from tests.redis_server import (
    RedisServer,
    redis_server,  # noqa: F401  (fixture)
)

from .gateway_thread import GatewayThread
from .jobs_fixtures import write_routes


def _settings(triton: LocalTriton, **jobs: object) -> GatewaySettings:
    return GatewaySettings(
        triton_url=triton.grpc_url,
        host="127.0.0.1",
        port=0,
        metrics_port=None,
        jobs_poll_interval_s=0.05,
        **jobs,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def jobs_gateway(local_triton: LocalTriton, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayThread]:
    folder = tmp_path_factory.mktemp("jobs")
    settings = _settings(local_triton, jobs_db=folder / "jobs.db", jobs_concurrency=2, jobs_visibility_timeout_s=5.0)
    with GatewayThread(settings, load_routes(write_routes(folder))) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def client(jobs_gateway: GatewayThread) -> Iterator[Client]:
    with Client(jobs_gateway.target, default_timeout=20.0) as c:
        yield c


@pytest.fixture(scope="module")
def stub(jobs_gateway: GatewayThread) -> Iterator[jobs_pb2_grpc.JobsStub]:
    with grpc.insecure_channel(jobs_gateway.target) as channel:
        yield jobs_pb2_grpc.JobsStub(channel)


IMAGES = digits_split()[1][:8]


def test_job_result_matches_infer(client: Client) -> None:
    job_id = client.submit_job("digits", {"image": IMAGES}, result_ttl=120)
    job = client.wait(job_id, timeout=20)
    assert job.state == "succeeded" and job.error is None and job.result is not None
    direct = client.infer("digits", {"image": IMAGES})
    np.testing.assert_array_equal(job.result["label"], direct["label"])
    np.testing.assert_allclose(job.result["probabilities"], direct["probabilities"], rtol=1e-6)
    assert job.attempts == 1 and job.max_attempts == 3
    assert job.create_time and job.start_time and job.end_time and job.expire_time
    assert job.create_time <= job.start_time <= job.end_time
    assert abs((job.expire_time - job.end_time).total_seconds() - 120) < 0.01
    fetched = client.get_job(job_id)
    assert fetched.state == "succeeded" and fetched.result is not None
    np.testing.assert_array_equal(fetched.result["label"], direct["label"])


def test_watch_sees_running_then_succeeded(client: Client) -> None:
    job_id = client.submit_job("digits_slow", {"image": IMAGES[:1]})
    states = [job.state for job in client.watch_job(job_id, timeout=20)]
    assert states[0] in ("queued", "running")
    assert states[-2:] == ["running", "succeeded"], states


def _requests(route: str, code: str) -> float:
    return REGISTRY.get_sample_value("switchyard_requests_total", {"route": route, "code": code}) or 0.0


def test_cancel_running_job_cancels_its_inference(client: Client) -> None:
    before = _requests("digits_slow", "CANCELLED")
    job_id = client.submit_job("digits_slow", {"image": IMAGES[:1]})
    for job in client.watch_job(job_id, timeout=20):
        if job.state == "running":
            break
    cancelled = client.cancel_job(job_id)
    assert cancelled.state == "cancelled"
    assert cancelled.error is not None and cancelled.error.code == grpc.StatusCode.CANCELLED
    deadline = time.monotonic() + 2
    while _requests("digits_slow", "CANCELLED") == before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _requests("digits_slow", "CANCELLED") == before + 1  # the in-flight inference itself was cancelled
    time.sleep(1.2)  # past the batching window: nothing may overwrite the cancellation
    after = client.get_job(job_id)
    assert (after.state, after.result, after.attempts) == ("cancelled", None, 1)


def test_cancel_queued_job_never_runs(client: Client) -> None:
    busy = [client.submit_job("digits_slow", {"image": IMAGES[:1]}) for _ in range(2)]  # both workers
    queued = client.submit_job("digits_slow", {"image": IMAGES[:1]})
    cancelled = client.cancel_job(queued)
    assert cancelled.state == "cancelled"
    for job_id in busy:
        assert client.wait(job_id, timeout=20).state == "succeeded"
    time.sleep(0.3)
    after = client.get_job(queued)
    assert (after.state, after.attempts, after.start_time) == ("cancelled", 0, None)
    assert client.cancel_job(busy[0]).state == "succeeded"  # cancelling an ended job changes nothing


def test_list_jobs_newest_first_in_pages(client: Client) -> None:
    owner = f"lister-{uuid.uuid4().hex[:8]}"
    ids = [client.submit_job("digits", {"image": IMAGES[:1]}, client_id=owner) for _ in range(3)]
    first = client.list_jobs(client_id=owner, page_size=2)
    assert [j.job_id for j in first.jobs] == ids[::-1][:2] and first.next_page_token
    assert all(j.client_id == owner and j.result is None for j in first.jobs)
    second = client.list_jobs(client_id=owner, page_size=2, page_token=first.next_page_token)
    assert [j.job_id for j in second.jobs] == ids[:1] and not second.next_page_token
    assert client.list_jobs(client_id=f"nobody-{uuid.uuid4().hex}").jobs == []


def test_idempotency_key_gives_the_same_job(client: Client, stub: jobs_pb2_grpc.JobsStub) -> None:
    key = uuid.uuid4().hex
    first = client.submit_job("digits", {"image": IMAGES[:2]}, idempotency_key=key)
    request = jpb.SubmitJobRequest(
        request=pb.InferRequest(route="digits", inputs=[from_numpy("image", IMAGES[:2])]), idempotency_key=key
    )
    again = stub.SubmitJob(request, timeout=5)
    assert (again.job_id, again.duplicate) == (first, True)


def test_job_failing_at_run_time_says_why(client: Client) -> None:
    job_id = client.submit_job("digits", {"image": IMAGES[:1]}, model_versions={"digits_logreg": "42"})
    job = client.wait(job_id, timeout=20)
    assert job.state == "failed" and job.result is None and job.error is not None
    assert job.error.code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT), job.error
    assert "digits_logreg" in job.error.message


def _error(call: object, *args: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, timeout=5)  # type: ignore[operator]
    return caught.value


def test_bad_calls_name_the_field(stub: jobs_pb2_grpc.JobsStub) -> None:
    image = from_numpy("image", IMAGES[:1])
    cases = [
        (stub.SubmitJob, jpb.SubmitJobRequest(), grpc.StatusCode.INVALID_ARGUMENT, "request: missing"),
        (
            stub.SubmitJob,
            jpb.SubmitJobRequest(request=pb.InferRequest(route="nope", inputs=[image])),
            grpc.StatusCode.NOT_FOUND,
            "request.route: no route named 'nope'",
        ),
        (
            stub.SubmitJob,
            jpb.SubmitJobRequest(
                request=pb.InferRequest(route="digits", inputs=[from_numpy("image", np.zeros((1, 63), np.float32))])
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "request.inputs[image]",
        ),
        (
            stub.SubmitJob,
            jpb.SubmitJobRequest(request=pb.InferRequest(route="digits", inputs=[image]), max_attempts=99),
            grpc.StatusCode.INVALID_ARGUMENT,
            "max_attempts: must be 1 to 10",
        ),
        (stub.GetJob, jpb.GetJobRequest(), grpc.StatusCode.INVALID_ARGUMENT, "job_id: missing"),
        (stub.GetJob, jpb.GetJobRequest(job_id="xyz"), grpc.StatusCode.INVALID_ARGUMENT, "job_id: 'xyz' is not a"),
        (stub.GetJob, jpb.GetJobRequest(job_id=uuid.uuid4().hex), grpc.StatusCode.NOT_FOUND, "job_id: no job"),
        (stub.CancelJob, jpb.CancelJobRequest(job_id=uuid.uuid4().hex), grpc.StatusCode.NOT_FOUND, "job_id: no job"),
        (stub.ListJobs, jpb.ListJobsRequest(page_size=-1), grpc.StatusCode.INVALID_ARGUMENT, "page_size: must be"),
        (stub.ListJobs, jpb.ListJobsRequest(page_token="x!"), grpc.StatusCode.INVALID_ARGUMENT, "page_token: not a"),
    ]
    ttl = jpb.SubmitJobRequest(request=pb.InferRequest(route="digits", inputs=[image]))
    ttl.result_ttl.FromSeconds(30 * 86_400)
    cases.append((stub.SubmitJob, ttl, grpc.StatusCode.INVALID_ARGUMENT, "result_ttl: 2.592e+06 s is over"))
    for call, request, code, text in cases:
        error = _error(call, request)
        assert (error.code(), text in (error.details() or "")) == (code, True), (request, error.details())
    watch = _error(lambda r, timeout: list(stub.WatchJob(r, timeout=timeout)), jpb.WatchJobRequest(job_id="0" * 32))
    assert watch.code() == grpc.StatusCode.NOT_FOUND


def test_health_and_reflection_name_the_service(jobs_gateway: GatewayThread) -> None:
    with grpc.insecure_channel(jobs_gateway.target) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        deadline = time.monotonic() + 5
        while (status := check(health_pb2.HealthCheckRequest(service="switchyard.v1.Jobs"), timeout=5).status) != (
            health_pb2.HealthCheckResponse.SERVING
        ) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert status == health_pb2.HealthCheckResponse.SERVING
        assert "switchyard.v1.Jobs" in ProtoReflectionDescriptorDatabase(channel).get_services()


def test_redis_store_bound_and_outage(local_triton: LocalTriton, redis_server: RedisServer, tmp_path: Path) -> None:  # noqa: F811
    settings = _settings(
        local_triton,
        jobs_redis_url=redis_server.url,
        jobs_concurrency=1,
        jobs_max_queued=1,
        jobs_store_timeout_s=0.5,
    )
    gateway = GatewayThread(settings, load_routes(write_routes(tmp_path)))
    try:
        with Client(gateway.target, default_timeout=10.0, retries=None) as c:
            running = c.submit_job("digits_slow", {"image": IMAGES[:1]})
            for job in c.watch_job(running, timeout=10):
                if job.state == "running":
                    break
            c.submit_job("digits_slow", {"image": IMAGES[:1]})  # queued: the bound is reached
            with pytest.raises(Exception) as full:
                c.submit_job("digits_slow", {"image": IMAGES[:1]})
            assert getattr(full.value, "code", None) == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "1 jobs are queued (bound 1)" in str(full.value)
            assert c.wait(running, timeout=10).state == "succeeded"

            redis_server.stop()
            started = time.monotonic()
            with pytest.raises(Unavailable) as down:
                c.submit_job("digits", {"image": IMAGES[:1]}, timeout=5)
            assert time.monotonic() - started < 2.0, "SubmitJob hung on a dead Redis"
            assert f"job store unavailable: Redis at 127.0.0.1:{redis_server.port}" in down.value.message
            started = time.monotonic()
            with pytest.raises(Exception) as late:
                c.get_job(running, timeout=0.2)
            assert time.monotonic() - started < 1.0
            assert getattr(late.value, "code", None) in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
            with pytest.raises(NotFound):
                redis_server.start()
                c.get_job(uuid.uuid4().hex)
    finally:
        gateway.stop()
