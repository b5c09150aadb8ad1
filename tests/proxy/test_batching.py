"""The micro-batcher's logic against a recording stand-in for the Triton backend."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import numpy as np
import pytest

from switchyard.proxy import errors
from switchyard.proxy.backend.batching import MicroBatcher
from switchyard.proxy.backend.triton import InferResult
from switchyard.proxy.errors import ConfigError
from switchyard.proxy.routes.base import fingerprint_of
from switchyard.proxy.routes.schema import RouteConfig, parse_routes
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1.tensors import from_numpy, to_numpy


class RecordingBackend:
    """Answers ``y = 2 * x`` and ``label = [f"r{row sum}"]`` (BYTES); records every call."""

    def __init__(self, delay_s: float = 0.0, fail: Exception | None = None) -> None:
        self.calls: list[tuple[str, list[pb.Tensor], list[str], float]] = []
        self.delay_s = delay_s
        self.fail = fail
        self.cancelled = 0
        self.called = asyncio.Event()

    async def infer(
        self,
        model: str,
        version: str,
        inputs: Sequence[pb.Tensor],
        outputs: Sequence[str],
        *,
        timeout_s: float,
        request_id: str = "",
        idempotent: bool = True,
    ) -> InferResult:
        self.calls.append((version, list(inputs), list(outputs), timeout_s))
        self.called.set()
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.fail is not None:
            raise self.fail
        x = to_numpy(inputs[0])
        labels = np.array([f"r{int(v)}".encode() * (int(v) % 3 + 1) for v in x.sum(axis=1)], dtype=object)
        outs = [from_numpy("y", (2 * x).astype(np.float32)), from_numpy("label", labels.reshape(-1, 1))]
        return InferResult(model=model, version=version or "1", outputs=outs)


def _request(rows: int, start: float = 0.0) -> list[pb.Tensor]:
    x = (np.arange(rows * 4, dtype=np.float32).reshape(rows, 4) + start).astype(np.float32)
    return [from_numpy("x", x)]


def _deadline(s: float = 5.0) -> float:
    return time.monotonic() + s


async def test_concurrent_requests_merge_into_one_call_and_split_back() -> None:
    backend = RecordingBackend()
    batcher = MicroBatcher(backend, "m", max_delay_s=0.01, max_batch=64)
    sizes = [1, 3, 2, 1]
    requests = [_request(n, start=10 * i) for i, n in enumerate(sizes)]
    results = await asyncio.gather(*(batcher.infer("", r, [], deadline=_deadline()) for r in requests))
    assert len(backend.calls) == 1
    merged = backend.calls[0][1][0]
    assert list(merged.shape) == [sum(sizes), 4]
    for request, result in zip(requests, results, strict=True):
        x = to_numpy(request[0])
        y, label = (to_numpy(t) for t in result.outputs)
        np.testing.assert_array_equal(y, 2 * x)
        assert label.shape == (len(x), 1)
        assert [v for v in label[:, 0]] == [f"r{int(s)}".encode() * (int(s) % 3 + 1) for s in x.sum(axis=1)]
    assert batcher.queued_rows == 0


async def test_different_versions_outputs_and_shapes_do_not_mix() -> None:
    backend = RecordingBackend()
    batcher = MicroBatcher(backend, "m", max_delay_s=0.01, max_batch=64)
    wide = [from_numpy("x", np.ones((1, 5), dtype=np.float32))]
    await asyncio.gather(
        batcher.infer("", _request(1), [], deadline=_deadline()),
        batcher.infer("", _request(1), [], deadline=_deadline()),
        batcher.infer("2", _request(1), [], deadline=_deadline()),
        batcher.infer("", _request(1), ["y"], deadline=_deadline()),
        batcher.infer("", wide, [], deadline=_deadline()),
    )
    assert sorted((v, tuple(o), list(i[0].shape)[0]) for v, i, o, _ in backend.calls) == [
        ("", (), 1),
        ("", (), 2),
        ("", ("y",), 1),
        ("2", (), 1),
    ]


async def test_max_batch_flushes_without_waiting() -> None:
    backend = RecordingBackend()
    batcher = MicroBatcher(backend, "m", max_delay_s=10.0, max_batch=4)
    started = time.monotonic()
    await asyncio.wait_for(
        asyncio.gather(*(batcher.infer("", _request(1), [], deadline=_deadline()) for _ in range(8))), 2.0
    )
    assert time.monotonic() - started < 1.0
    assert [list(c[1][0].shape)[0] for c in backend.calls] == [4, 4]


async def test_request_that_does_not_fit_flushes_the_queue_first() -> None:
    backend = RecordingBackend()
    batcher = MicroBatcher(backend, "m", max_delay_s=0.01, max_batch=4)
    await asyncio.gather(
        batcher.infer("", _request(3), [], deadline=_deadline()),
        batcher.infer("", _request(2), [], deadline=_deadline()),
        batcher.infer("", _request(5), [], deadline=_deadline()),  # >= max_batch: alone, at once
    )
    assert sorted(list(c[1][0].shape)[0] for c in backend.calls) == [2, 3, 5]


async def test_delay_flushes_a_lone_request() -> None:
    backend = RecordingBackend()
    batcher = MicroBatcher(backend, "m", max_delay_s=0.02, max_batch=64)
    started = time.monotonic()
    await batcher.infer("", _request(1), [], deadline=_deadline())
    waited = time.monotonic() - started
    assert 0.015 <= waited < 0.5
    assert len(backend.calls) == 1


async def test_queued_rows_bound_sends_immediately() -> None:
    backend = RecordingBackend()
    batcher = MicroBatcher(backend, "m", max_delay_s=10.0, max_batch=64, max_queued_rows=3)
    tasks = [asyncio.create_task(batcher.infer("", _request(1), [], deadline=_deadline())) for _ in range(3)]
    await asyncio.sleep(0)
    assert batcher.queued_rows == 3 and not backend.calls
    await asyncio.wait_for(batcher.infer("", _request(1), [], deadline=_deadline()), 1.0)
    assert len(backend.calls) == 1  # the fourth went alone
    for t in tasks:
        t.cancel()
    await batcher.close()


async def test_backend_error_reaches_every_member() -> None:
    backend = RecordingBackend(fail=errors.BackendUnavailable("triton down"))
    batcher = MicroBatcher(backend, "m", max_delay_s=0.005, max_batch=64)
    results = await asyncio.gather(
        *(batcher.infer("", _request(1), [], deadline=_deadline()) for _ in range(5)), return_exceptions=True
    )
    assert len(backend.calls) == 1
    assert all(isinstance(r, errors.BackendUnavailable) for r in results)


async def test_cancelled_member_is_dropped_before_sending() -> None:
    backend = RecordingBackend()
    batcher = MicroBatcher(backend, "m", max_delay_s=0.02, max_batch=64)
    keep = asyncio.create_task(batcher.infer("", _request(1, start=1), [], deadline=_deadline()))
    gone = asyncio.create_task(batcher.infer("", _request(2, start=100), [], deadline=_deadline()))
    await asyncio.sleep(0)
    gone.cancel()
    result = await keep
    assert len(backend.calls) == 1 and list(backend.calls[0][1][0].shape) == [1, 4]
    np.testing.assert_array_equal(to_numpy(result.outputs[0]), 2 * to_numpy(_request(1, start=1)[0]))
    assert gone.cancelled()


async def test_cancelling_one_member_in_flight_does_not_cancel_the_call() -> None:
    backend = RecordingBackend(delay_s=0.05)
    batcher = MicroBatcher(backend, "m", max_delay_s=0.001, max_batch=64)
    keep = asyncio.create_task(batcher.infer("", _request(1), [], deadline=_deadline()))
    gone = asyncio.create_task(batcher.infer("", _request(1, start=7), [], deadline=_deadline()))
    await asyncio.wait_for(backend.called.wait(), 1.0)
    gone.cancel()
    result = await keep
    assert backend.cancelled == 0 and len(backend.calls) == 1
    assert list(result.outputs[0].shape) == [1, 4]
    with pytest.raises(asyncio.CancelledError):
        await gone


async def test_merged_call_carries_the_earliest_deadline() -> None:
    backend = RecordingBackend()
    batcher = MicroBatcher(backend, "m", max_delay_s=0.01, max_batch=64)
    await asyncio.gather(
        batcher.infer("", _request(1), [], deadline=_deadline(5.0)),
        batcher.infer("", _request(1), [], deadline=_deadline(1.0)),
    )
    (_, _, _, timeout_s) = backend.calls[0]
    assert 0.9 < timeout_s <= 1.0


async def test_queue_flushes_by_a_members_deadline_and_drops_expired_members() -> None:
    backend = RecordingBackend()
    batcher = MicroBatcher(backend, "m", max_delay_s=10.0, max_batch=64)
    started = time.monotonic()
    late = asyncio.create_task(batcher.infer("", _request(1), [], deadline=_deadline(5.0)))
    expired = asyncio.create_task(batcher.infer("", _request(1), [], deadline=time.monotonic() - 0.001))
    await asyncio.sleep(0)
    # The expired member brought the flush forward (not 10 s): it fails, the other is sent alone.
    with pytest.raises(errors.DeadlineExceeded):
        await asyncio.wait_for(expired, 1.0)
    result = await asyncio.wait_for(late, 1.0)
    assert time.monotonic() - started < 1.0
    assert len(backend.calls) == 1 and list(backend.calls[0][1][0].shape) == [1, 4]
    assert list(result.outputs[0].shape) == [1, 4]


async def test_unbatchable_requests_go_straight_through() -> None:
    backend = RecordingBackend()
    batcher = MicroBatcher(backend, "m", max_delay_s=10.0, max_batch=64)
    mismatched = [from_numpy("x", np.ones((2, 4), np.float32)), from_numpy("z", np.ones((3, 4), np.float32))]
    await asyncio.wait_for(batcher.infer("", mismatched, [], deadline=_deadline()), 1.0)
    assert len(backend.calls) == 1 and batcher.queued_rows == 0


async def test_eager_sends_a_lone_request_at_once_and_batches_behind_a_call_in_flight() -> None:
    backend = RecordingBackend(delay_s=0.03)
    batcher = MicroBatcher(backend, "m", max_delay_s=10.0, max_batch=64, eager=True)
    started = time.monotonic()
    await batcher.infer("", _request(1), [], deadline=_deadline())
    assert time.monotonic() - started < 1.0  # not the 10 s delay
    backend.called.clear()
    first = asyncio.create_task(batcher.infer("", _request(1), [], deadline=_deadline()))
    await asyncio.wait_for(backend.called.wait(), 1.0)
    # While that call is in flight the next ones queue, and go together when it returns.
    behind = [batcher.infer("", _request(n), [], deadline=_deadline()) for n in (1, 2, 3)]
    results = await asyncio.wait_for(asyncio.gather(first, *behind), 2.0)
    assert [list(c[1][0].shape)[0] for c in backend.calls] == [1, 1, 6]
    assert [list(r.outputs[0].shape)[0] for r in results] == [1, 1, 2, 3]
    assert time.monotonic() - started < 1.0


class GatedBackend(RecordingBackend):
    """Each call waits until the test opens its gate; records ``start``/``end`` events with the call's rows."""

    def __init__(self) -> None:
        super().__init__()
        self.gates: list[asyncio.Event] = []
        self.events: list[tuple[str, int]] = []
        self.started = asyncio.Condition()

    async def infer(self, model: str, version: str, inputs: Sequence[pb.Tensor], *args, **kwargs) -> InferResult:  # type: ignore[no-untyped-def, override]
        rows = int(inputs[0].shape[0])
        gate = asyncio.Event()
        self.gates.append(gate)
        self.events.append(("start", rows))
        async with self.started:
            self.started.notify_all()
        await gate.wait()
        self.events.append(("end", rows))
        return await super().infer(model, version, inputs, *args, **kwargs)

    async def wait_started(self, calls: int) -> None:
        async with self.started:
            await self.started.wait_for(lambda: len(self.gates) >= calls)


async def test_eager_calls_sends_at_once_while_fewer_merged_calls_are_in_flight() -> None:
    backend = GatedBackend()
    batcher = MicroBatcher(backend, "m", max_delay_s=10.0, max_batch=64, eager=True, eager_calls=2)
    first = asyncio.create_task(batcher.infer("", _request(1), [], deadline=_deadline()))
    await asyncio.wait_for(backend.wait_started(1), 5.0)
    second = asyncio.create_task(batcher.infer("", _request(2), [], deadline=_deadline()))
    # Sent while the first is still in flight (its gate is closed): two calls at once, neither waited.
    await asyncio.wait_for(backend.wait_started(2), 5.0)
    # With two in flight the next ones queue (not sent, though the 10 s delay is far off) ...
    behind = [asyncio.create_task(batcher.infer("", _request(n), [], deadline=_deadline())) for n in (3, 4)]
    await asyncio.sleep(0)
    assert batcher.queued_rows == 7 and len(backend.gates) == 2
    # ... and go together as soon as one of the two returns, while the other is still in flight.
    backend.gates[0].set()
    await asyncio.wait_for(backend.wait_started(3), 5.0)
    backend.gates[1].set()
    backend.gates[2].set()
    results = await asyncio.wait_for(asyncio.gather(first, second, *behind), 5.0)
    assert backend.events == [("start", 1), ("start", 2), ("end", 1), ("start", 7), ("end", 2), ("end", 7)]
    assert [list(r.outputs[0].shape)[0] for r in results] == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="eager_calls"):
        MicroBatcher(backend, "m", max_delay_s=0.01, max_batch=8, eager=True, eager_calls=0)


async def test_light_rows_send_at_once_under_light_load_and_merge_past_it() -> None:
    backend = GatedBackend()
    batcher = MicroBatcher(backend, "m", max_delay_s=10.0, max_batch=64, eager=True, eager_calls=1, light_rows=3)
    # One row each: the first goes as the one merged call allowed, the next two because the rows in flight and
    # waiting (2, then 3) stay within light_rows, though a call is in flight.
    light = [asyncio.create_task(batcher.infer("", _request(1, n), [], deadline=_deadline())) for n in range(3)]
    await asyncio.wait_for(backend.wait_started(3), 5.0)
    # Past it the next ones queue (not sent, though the 10 s delay is far off) ...
    heavy = [asyncio.create_task(batcher.infer("", _request(1, n), [], deadline=_deadline())) for n in (3, 4)]
    await asyncio.sleep(0)
    assert batcher.queued_rows == 2 and len(backend.gates) == 3
    # ... until a return brings in flight and waiting back within light_rows: 2 in flight + 2 waiting > 3 still,
    # so one return is not enough; a second one (1 + 2 = 3) sends the two together.
    backend.gates[0].set()
    await asyncio.sleep(0.05)
    assert len(backend.gates) == 3 and batcher.queued_rows == 2
    backend.gates[1].set()
    await asyncio.wait_for(backend.wait_started(4), 5.0)
    for gate in backend.gates:
        gate.set()
    results = await asyncio.wait_for(asyncio.gather(*light, *heavy), 5.0)
    assert [e for e in backend.events if e[0] == "start"] == [("start", 1)] * 3 + [("start", 2)]
    np.testing.assert_array_equal(
        np.concatenate([to_numpy(r.outputs[0]) for r in results]),
        2 * np.concatenate([to_numpy(_request(1, n)[0]) for n in range(5)]),
    )


def test_route_config_takes_batching_and_the_fingerprint_ignores_it() -> None:
    plain = parse_routes('[[routes]]\nname = "d"\nmodel = "m"\n').routes[0]
    batched = parse_routes(
        '[[routes]]\nname = "d"\nmodel = "m"\nbatching = { max_delay_ms = 1.5, max_batch = 32, eager = true }\n'
    ).routes[0]
    assert isinstance(batched, RouteConfig) and batched.batching is not None
    assert (batched.batching.max_delay_ms, batched.batching.max_batch, batched.batching.eager) == (1.5, 32, True)
    assert isinstance(plain, RouteConfig) and plain.batching is None
    assert fingerprint_of(plain) == fingerprint_of(batched)
    with pytest.raises(ConfigError, match="batching"):
        parse_routes('[[routes]]\nname = "d"\nmodel = "m"\nbatching = { max_batch = 0 }\n')
    with pytest.raises(ConfigError, match="batching.eager_calls"):
        parse_routes('[[routes]]\nname = "d"\nmodel = "m"\nbatching = { eager = true, eager_calls = 0 }\n')
