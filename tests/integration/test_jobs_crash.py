"""No accepted job is lost, and each completes exactly once, when `switchyard serve` is SIGKILLed mid-job.

For each store (embedded SQLite, real Redis): a gateway process takes 30 jobs
on ``digits_slow`` (each runs about 1 s, eight at a time), is killed with
SIGKILL while jobs are running, and a new process is started on the same
store. Every job must end SUCCEEDED with the right prediction, with its
outcome written exactly once (the store's completion count), and the jobs the
dead process held must have been run again after the visibility timeout.
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import time
import uuid
from pathlib import Path

import numpy as np
import psutil
import pytest
import redis

from switchyard.client import Client
from switchyard.models.datasets import digits_split
from switchyard.server.local_triton import LocalTriton
from tests.redis_server import (
    RedisServer,
    redis_server,  # noqa: F401  (fixture)
)

from .jobs_fixtures import write_routes
from .serve_process import Serve, running_serve

JOBS = 30
VISIBILITY_S = 2.0


def _crash(serve: Serve) -> int:
    """SIGKILL to the gateway processes (the workers) and to serve itself, as a crash of the machine would."""
    for worker in psutil.Process(serve.proc.pid).children():
        with contextlib.suppress(psutil.ZombieProcess, psutil.NoSuchProcess):  # one that already ended
            if "switchyard.server.workers" in worker.cmdline():
                worker.kill()
    serve.proc.kill()
    return serve.proc.wait(30)


def _completions(store: str, where: str | RedisServer) -> dict[str, tuple[int, int, str]]:
    """job id -> (completions, attempts, state), read straight from the store."""
    if isinstance(where, RedisServer):
        client = redis.Redis.from_url(where.url)
        try:
            found = {}
            for key in client.scan_iter(match="sy:jobs:job:*"):
                completions, attempts, state = client.hmget(key, ["completions", "attempts", "state"])
                found[key.decode().rsplit(":", 1)[1]] = (int(completions), int(attempts), state.decode())
            return found
        finally:
            client.close()
    with sqlite3.connect(f"file:{where}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT job_id, completions, attempts, state FROM jobs").fetchall()
    conn.close()
    return {job_id: (completions, attempts, state) for job_id, completions, attempts, state in rows}


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_sigkill_mid_job_loses_nothing_and_completes_once(
    store: str, local_triton: LocalTriton, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    where: str | RedisServer
    if store == "redis":
        where = request.getfixturevalue("redis_server")
        store_args = ["--jobs-redis-url", where.url]
    else:
        where = str(tmp_path / "jobs.db")
        store_args = ["--jobs-db", where]
    args = [
        "--triton-url", local_triton.grpc_url, "--config", str(write_routes(tmp_path)),
        "--host", "127.0.0.1", "--port", "0", "--no-metrics", "--grace-s", "1",
        "--jobs-visibility-timeout-s", str(VISIBILITY_S), "--jobs-concurrency", "8", *store_args,
    ]  # fmt: skip
    images = digits_split()[1][:JOBS]
    owner = f"crash-{uuid.uuid4().hex[:8]}"

    with running_serve(*args, ready_s=60.0) as first:
        try:
            with Client(f"127.0.0.1:{first.port}", default_timeout=10.0) as client:
                expected = np.asarray(client.infer("digits", {"image": images})["label"]).reshape(-1)
                ids = [
                    client.submit_job("digits_slow", {"image": images[i : i + 1]}, client_id=owner) for i in range(JOBS)
                ]
                deadline = time.monotonic() + 20
                while True:
                    states = [j.state for j in client.list_jobs(client_id=owner, page_size=JOBS).jobs]
                    if "running" in states and "succeeded" in states:
                        break
                    assert time.monotonic() < deadline, f"no job ran: {states}\n{first.log}"
                    time.sleep(0.05)
        finally:
            assert _crash(first) == -signal.SIGKILL
    at_kill = {state: states.count(state) for state in set(states)}
    killed = time.monotonic()

    with running_serve(*args, ready_s=60.0) as second:
        with Client(f"127.0.0.1:{second.port}", default_timeout=30.0) as client:
            finals = [client.wait(job_id, timeout=30) for job_id in ids]
        recovered = time.monotonic() - killed
        assert second.stop(30) == 0, second.log

    assert [job.state for job in finals] == ["succeeded"] * JOBS, [(j.job_id, j.state, j.error) for j in finals]
    labels = np.array([np.asarray(job.result["label"]).item() for job in finals if job.result is not None])
    np.testing.assert_array_equal(labels, expected)
    stored = _completions(store, where)
    assert {job_id: stored[job_id][0] for job_id in ids} == dict.fromkeys(ids, 1), "an outcome was written twice"
    redelivered = sum(1 for job_id in ids if stored[job_id][1] >= 2)
    assert redelivered >= 1, "no job was taken over from the killed process"
    print(
        f"\n{store}: at SIGKILL {at_kill}; {JOBS} jobs succeeded once each, {redelivered} run again after the "
        f"{VISIBILITY_S:g} s visibility timeout; all done {recovered:.1f} s after the kill (restart included)"
    )
