"""Overload, a hung backend and cancelled calls against a real Triton.

* Load shedding: past ``max_inflight`` a call is answered RESOURCE_EXHAUSTED at
  once, every admitted call succeeds, and the bookkeeping returns to zero.
* A backend that accepts the connection and never answers: calls end
  DEADLINE_EXCEEDED at the client's deadline, and a thousand of them leave no
  task or memory behind.
* Calls cancelled by their client mid-call do not disturb the others.

The backend is made to hang by a loopback TCP forwarder between the gateway
and Triton that can be switched to swallowing every byte. Each test prints
its figures (``pytest -s`` shows them). The only timing asserted is the
deadline precision (±100 ms); the other bounds are generous sanity bounds.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Iterator
from typing import Any, TypeVar

import grpc
import numpy as np
import psutil
import pytest
from prometheus_client import REGISTRY

from switchyard.models import BUNDLED_ROUTES
from switchyard.models.datasets import digits_split
from switchyard.proxy.errors import BackendUnavailable
from switchyard.proxy.gateway import Gateway
from switchyard.proxy.routes.schema import RoutesFile, load_routes
from switchyard.proxy.settings import GatewaySettings
from switchyard.server.local_triton import LocalTriton
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc
from switchyard.v1.tensors import from_numpy, to_numpy

from .gateway_thread import GatewayThread
from .links import StallingForwarder
from .waiting import wait_for

T = TypeVar("T")

MiB = 1024 * 1024
DEADLINE_S = 0.3
DEADLINE_TOLERANCE_S = 0.1
PROGRESSIVE = "digits_progressive"


# -- helpers ------------------------------------------------------------------


class RssSampler:
    """This process's resident memory, sampled every few milliseconds in a thread while in use."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self._process = psutil.Process()
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
        self.baseline = self.peak = self.last = self._process.memory_info().rss

    def _sample(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.last = self._process.memory_info().rss
            self.peak = max(self.peak, self.last)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.last = self._process.memory_info().rss
        self.peak = max(self.peak, self.last)

    @property
    def peak_growth(self) -> int:
        return self.peak - self.baseline

    @property
    def growth(self) -> int:
        return self.last - self.baseline

    def describe(self) -> str:
        return (
            f"RSS {self.baseline / MiB:.1f} MiB before, peak +{self.peak_growth / MiB:.1f} MiB, "
            f"after {self.growth / MiB:+.1f} MiB"
        )


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _in_flight(route: str) -> float:
    return _sample("switchyard_inflight_requests", route=route)


def _shed(route: str, reason: str) -> float:
    return _sample("switchyard_shed_requests_total", route=route, reason=reason)


def _answered(route: str, code: str) -> float:
    return _sample("switchyard_requests_total", route=route, code=code)


def _task_count(gateway: GatewayThread) -> int:
    """Tasks alive on the gateway's event loop, not counting the one that counts them."""

    async def count() -> int:
        return len(asyncio.all_tasks()) - 1

    return gateway.call(count())


def _task_names(gateway: GatewayThread) -> list[str]:
    """What the tasks on the gateway's loop are running: for a failure message."""

    async def names() -> list[str]:
        me = asyncio.current_task()
        return sorted(f"{t.get_name()} {t.get_coro()!r}" for t in asyncio.all_tasks() if t is not me)

    return gateway.call(names())


def _quiet_task_count(gateway: GatewayThread, window_s: float = 0.5) -> int:
    """The fewest tasks seen on the gateway's loop over ``window_s``: its count at rest."""
    deadline = time.monotonic() + window_s
    count = _task_count(gateway)
    while time.monotonic() < deadline:
        time.sleep(0.05)
        count = min(count, _task_count(gateway))
    return count


def _settled_task_count(gateway: GatewayThread, baseline: int, timeout_s: float = 5.0) -> int:
    """The task count once it is back at ``baseline`` or ``timeout_s`` has passed (tasks unwind asynchronously)."""
    deadline = time.monotonic() + timeout_s
    count = _task_count(gateway)
    while count > baseline and time.monotonic() < deadline:
        time.sleep(0.05)
        count = _task_count(gateway)
    return count


def _digits_request(route: str, images: np.ndarray) -> pb.InferRequest:
    return pb.InferRequest(route=route, inputs=[from_numpy("image", images.astype(np.float32))])


def _labels(reply: pb.InferResponse) -> np.ndarray:
    (tensor,) = [t for t in reply.outputs if t.name == "label"]
    return to_numpy(tensor).reshape(-1)


def _reference_labels(target: str, images: np.ndarray, route: str = PROGRESSIVE) -> np.ndarray:
    with grpc.insecure_channel(target) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        parts = [
            _labels(stub.Infer(_digits_request(route, images[i : i + 64]), timeout=30))
            for i in range(0, len(images), 64)
        ]
    return np.concatenate(parts)


def _settings(triton_url: str, **overrides: Any) -> GatewaySettings:
    return GatewaySettings(triton_url=triton_url, host="127.0.0.1", port=0, metrics_port=None, **overrides)


@pytest.fixture
def forwarder(local_triton: LocalTriton) -> Iterator[StallingForwarder]:
    proxy = StallingForwarder(local_triton.grpc_url)
    try:
        yield proxy
    finally:
        proxy.close()


# -- load shedding ------------------------------------------------------------

MAX_INFLIGHT = 8
OFFERED = 400
SHED_RSS_BOUND = 256 * MiB


def test_overload_is_shed_and_every_admitted_call_succeeds(local_triton: LocalTriton) -> None:
    gateway = GatewayThread(_settings(local_triton.grpc_url, max_inflight=MAX_INFLIGHT), load_routes(BUNDLED_ROUTES))
    try:
        images = digits_split().X_test[:OFFERED]
        reference = _reference_labels(gateway.target, images)
        shed_before = _shed(PROGRESSIVE, "gateway")
        exhausted_before = _answered(PROGRESSIVE, "RESOURCE_EXHAUSTED")

        async def one(stub: gateway_pb2_grpc.GatewayStub, i: int) -> tuple[str, str, np.ndarray | None]:
            try:
                reply = await stub.Infer(_digits_request(PROGRESSIVE, images[i : i + 1]), timeout=30)
            except grpc.aio.AioRpcError as exc:
                return exc.code().name, exc.details() or "", None
            return "OK", "", _labels(reply)

        async def offer() -> list[tuple[str, str, np.ndarray | None]]:
            async with grpc.aio.insecure_channel(gateway.target) as channel:
                stub = gateway_pb2_grpc.GatewayStub(channel)
                return await asyncio.gather(*(one(stub, i) for i in range(OFFERED)))

        with RssSampler() as rss:
            outcomes = asyncio.run(offer())
        codes = [code for code, _, _ in outcomes]
        admitted = codes.count("OK")
        shed = codes.count("RESOURCE_EXHAUSTED")
        print(
            f"\noverload: max_inflight {MAX_INFLIGHT}, {OFFERED} concurrent Infer on {PROGRESSIVE}: "
            f"{admitted} admitted, {shed} shed; {rss.describe()}"
        )
        assert admitted + shed == OFFERED, f"codes other than OK and RESOURCE_EXHAUSTED: {set(codes)}"
        assert shed > 0, "nothing was shed"
        assert admitted > 0
        messages = {message for code, message, _ in outcomes if code == "RESOURCE_EXHAUSTED"}
        assert messages == {f"gateway has {MAX_INFLIGHT} requests in flight"}
        for i, (code, _, labels) in enumerate(outcomes):
            if code == "OK":
                assert labels is not None and labels.tolist() == [reference[i]], f"call {i}"
        assert _shed(PROGRESSIVE, "gateway") - shed_before == shed
        assert _answered(PROGRESSIVE, "RESOURCE_EXHAUSTED") - exhausted_before == shed
        wait_for(lambda: _in_flight(PROGRESSIVE) == 0, 5, "in-flight gauge back to 0")
        assert rss.peak_growth < SHED_RSS_BOUND, rss.describe()
    finally:
        gateway.stop()


def test_stream_and_progressive_requests_are_shed_per_request(forwarder: StallingForwarder) -> None:
    """With the backend hung, two calls hold both slots: every further request is shed, on every RPC."""
    routes = load_routes(BUNDLED_ROUTES)
    routes = RoutesFile(
        routes=[r.model_copy(update={"max_inflight": 1}) if r.name == "digits" else r for r in routes.routes]
    )
    gateway = GatewayThread(_settings(forwarder.url, max_inflight=2, health_interval_s=30.0), routes)
    image = digits_split().X_test[:1]
    pixels = image.reshape(1, 8, 8).astype(np.uint8)
    wine = pb.InferRequest(route="wine", inputs=[from_numpy("features", np.zeros((1, 12), np.float32))])
    keys = [("digits", "route"), ("digits_8x8", "gateway"), ("wine", "gateway"), ("<unknown>", "gateway")]
    keys.append((PROGRESSIVE, "gateway"))
    before = {key: _shed(*key) for key in keys}
    try:
        forwarder.stall()

        async def scenario() -> None:
            async with grpc.aio.insecure_channel(gateway.target) as channel:
                stub = gateway_pb2_grpc.GatewayStub(channel)
                hold_digits = asyncio.ensure_future(stub.Infer(_digits_request("digits", image), timeout=2.0))
                await asyncio.to_thread(wait_for, lambda: _in_flight("digits") == 1, 5, "digits admitted")
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.Infer(_digits_request("digits", image), timeout=2.0)
                assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert info.value.details() == "route 'digits' has 1 request in flight"

                hold_wine = asyncio.ensure_future(stub.Infer(wine, timeout=2.0))
                await asyncio.to_thread(wait_for, lambda: _in_flight("wine") == 1, 5, "wine admitted")

                stream_requests = [
                    pb.InferRequest(route="digits_8x8", request_id="a", inputs=[from_numpy("image", pixels)]),
                    pb.InferRequest(route="wine", request_id="b", inputs=wine.inputs),
                    pb.InferRequest(route="no_such_route", request_id="c"),
                ]
                stream = stub.InferStream(iter(stream_requests), timeout=5.0)
                answers = {message.request_id: message async for message in stream}
                assert await stream.code() == grpc.StatusCode.OK
                assert sorted(answers) == ["a", "b", "c"]
                for message in answers.values():
                    assert message.WhichOneof("result") == "error", message
                    assert message.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
                    assert message.error.message == "gateway has 2 requests in flight"

                progressive = stub.InferProgressive(_digits_request(PROGRESSIVE, image), timeout=2.0)
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    async for _ in progressive:
                        pass
                assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert info.value.details() == "gateway has 2 requests in flight"

                # Other RPCs are not inference requests: never shed.
                assert (await stub.ListRoutes(pb.ListRoutesRequest(), timeout=2.0)).routes

                for hold in (hold_digits, hold_wine):
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await hold
                    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                await asyncio.to_thread(
                    wait_for, lambda: _in_flight("digits") == _in_flight("wine") == 0, 5, "slots released"
                )
                # The slots are free again: the next call is admitted (and meets the hung backend).
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.Infer(_digits_request("digits", image), timeout=DEADLINE_S)
                assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

        asyncio.run(scenario())
        shed = {key: _shed(*key) - before[key] for key in keys}
        print(f"\nshed per (route, reason): {', '.join(f'{r}/{why} {n:g}' for (r, why), n in shed.items())}")
        assert shed == dict.fromkeys(keys, 1.0)
    finally:
        gateway.stop()


# -- a hung backend -----------------------------------------------------------

PRECISION_CALLS = 50
HUNG_CALLS = 1000
HUNG_BATCH = 200
HUNG_RSS_BOUND = 64 * MiB


async def _hung_calls(stub: gateway_pb2_grpc.GatewayStub, request: pb.InferRequest, n: int) -> list[tuple[str, float]]:
    async def one() -> tuple[str, float]:
        started = time.monotonic()
        try:
            await stub.Infer(request, timeout=DEADLINE_S)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name, time.monotonic() - started
        return "OK", time.monotonic() - started

    return await asyncio.gather(*(one() for _ in range(n)))


def _max_deviation(outcomes: list[tuple[str, float]]) -> float:
    return max(abs(elapsed - DEADLINE_S) for _, elapsed in outcomes)


def test_hung_backend_ends_every_call_at_its_deadline(forwarder: StallingForwarder) -> None:
    gateway = GatewayThread(_settings(forwarder.url, health_interval_s=30.0), load_routes(BUNDLED_ROUTES))
    request = _digits_request("digits", digits_split().X_test[:1])
    try:
        with grpc.insecure_channel(gateway.target) as channel:
            assert gateway_pb2_grpc.GatewayStub(channel).Infer(request, timeout=10).outputs
        # The open connection to the backend goes silent.
        forwarder.stall()
        timed_out_before = _answered("digits", "DEADLINE_EXCEEDED")
        cancelled_before = _answered("digits", "CANCELLED")

        async def run() -> tuple[list[tuple[str, float]], list[tuple[str, float]], int, int, RssSampler]:
            async with grpc.aio.insecure_channel(gateway.target) as channel:
                stub = gateway_pb2_grpc.GatewayStub(channel)
                await _hung_calls(stub, request, 5)  # warm-up: whatever is created once is in the baseline
                baseline = await asyncio.to_thread(_quiet_task_count, gateway)
                precision = await _hung_calls(stub, request, PRECISION_CALLS)
                many: list[tuple[str, float]] = []
                with RssSampler() as rss:
                    for _ in range(HUNG_CALLS // HUNG_BATCH):
                        many += await _hung_calls(stub, request, HUNG_BATCH)
                    after = await asyncio.to_thread(_settled_task_count, gateway, baseline)
            return precision, many, baseline, after, rss

        precision, many, baseline, after, rss = asyncio.run(run())
        timed_out = _answered("digits", "DEADLINE_EXCEEDED") - timed_out_before
        cancelled = _answered("digits", "CANCELLED") - cancelled_before
        print(
            f"\nhung backend (open connection goes silent), {DEADLINE_S * 1e3:.0f} ms deadline: "
            f"{PRECISION_CALLS} concurrent calls, max deviation {_max_deviation(precision) * 1e3:.1f} ms; "
            f"{HUNG_CALLS} more in batches of {HUNG_BATCH}: max deviation {_max_deviation(many) * 1e3:.1f} ms, "
            f"gateway loop tasks {baseline} before, {after} after, {rss.describe()}; "
            f"the gateway counted {timed_out:g} DEADLINE_EXCEEDED and {cancelled:g} CANCELLED "
            "(its handler cancelled by gRPC at the deadline)"
        )
        assert {code for code, _ in precision + many} == {"DEADLINE_EXCEEDED"}
        assert _max_deviation(precision) <= DEADLINE_TOLERANCE_S
        assert after <= baseline, f"{after - baseline} tasks left on the gateway loop: {_task_names(gateway)}"
        assert rss.growth < HUNG_RSS_BOUND, rss.describe()
        wait_for(lambda: _in_flight("digits") == 0, 5, "in-flight gauge back to 0")

        # The connection is dropped and the new one is accepted but never
        # answered (no HTTP/2 settings). gRPC gives up on such a connection
        # attempt after its connect timeout (the channel's 200 ms minimum
        # reconnect backoff), so calls end UNAVAILABLE, soon fast through the
        # circuit breaker, or DEADLINE_EXCEEDED: never later than the deadline.
        connections = forwarder.connections
        forwarder.stall(drop=True)

        async def reconnecting() -> list[tuple[str, float]]:
            async with grpc.aio.insecure_channel(gateway.target) as channel:
                stub = gateway_pb2_grpc.GatewayStub(channel)
                return [outcome for _ in range(3) for outcome in await _hung_calls(stub, request, PRECISION_CALLS)]

        fresh = asyncio.run(reconnecting())
        fresh_codes = sorted({code for code, _ in fresh})
        latest = max(elapsed for _, elapsed in fresh)
        print(
            f"hung backend (new connection never answered): {len(fresh)} calls in 3 waves: "
            f"{', '.join(f'{sum(c == code for c, _ in fresh)} {code}' for code in fresh_codes)}, the latest ended "
            f"after {latest * 1e3:.0f} ms; {forwarder.connections - connections} new connection(s)"
        )
        assert set(fresh_codes) <= {"DEADLINE_EXCEEDED", "UNAVAILABLE"}
        assert latest <= DEADLINE_S + DEADLINE_TOLERANCE_S
        assert forwarder.connections > connections

        # The backend comes back: the gateway reconnects without a restart.
        forwarder.stall(False)

        def answers() -> bool:
            try:
                with grpc.insecure_channel(gateway.target) as channel:
                    return bool(gateway_pb2_grpc.GatewayStub(channel).Infer(request, timeout=2).outputs)
            except grpc.RpcError:
                return False

        print(f"backend back: answered again after {wait_for(answers, 15, 'recovery'):.2f} s")
    finally:
        gateway.stop()


def test_start_against_a_hung_backend_fails_within_its_bound(forwarder: StallingForwarder) -> None:
    forwarder.stall()
    settings = _settings(forwarder.url, backend_ready_timeout_s=1.0)

    async def start() -> float:
        gateway = Gateway(settings, load_routes(BUNDLED_ROUTES))
        started = time.monotonic()
        try:
            with pytest.raises(BackendUnavailable, match="models not ready"):
                await gateway.start()
            return time.monotonic() - started
        finally:
            await gateway.stop(0)

    elapsed = asyncio.run(start())
    print(f"\nstart-up against a hung backend gave up after {elapsed:.2f} s (backend_ready_timeout_s 1.0)")
    assert elapsed < 10, "start-up hung"
    assert forwarder.connections > 0


# -- cancellation -------------------------------------------------------------

CANCEL_CALLS = 200
CANCEL_SHARE = 0.1
# Long enough that a cancellation lands while the backend call is on the link even when
# the machine is busy and the server hears of the client's RST_STREAM late.
CANCEL_LINK_DELAY_S = 0.4


def test_cancelled_calls_leave_the_others_and_nothing_behind(local_triton: LocalTriton) -> None:
    # Every backend call takes at least CANCEL_LINK_DELAY_S longer on a slow link, so that a
    # cancellation lands while the gateway is answering the call rather than before it
    # has started (a burst of calls queues in the client and in the gateway first).
    slow_link = StallingForwarder(local_triton.grpc_url, delay_s=CANCEL_LINK_DELAY_S)
    gateway = GatewayThread(_settings(slow_link.url, health_interval_s=30.0), load_routes(BUNDLED_ROUTES))
    try:
        images = digits_split().X_test[:CANCEL_CALLS]
        reference = _reference_labels(gateway.target, images)
        rng = random.Random(7)
        to_cancel = set(rng.sample(range(CANCEL_CALLS), int(CANCEL_CALLS * CANCEL_SHARE)))
        delays: dict[int, float] = {}

        async def one(stub: gateway_pb2_grpc.GatewayStub, i: int) -> tuple[str, np.ndarray | None, float]:
            started = time.monotonic()
            call = stub.Infer(_digits_request(PROGRESSIVE, images[i : i + 1]), timeout=30)
            if i in delays:
                await asyncio.sleep(delays[i])
                call.cancel()
            try:
                reply = await call
            except asyncio.CancelledError:
                return "CANCELLED", None, time.monotonic() - started
            except grpc.aio.AioRpcError as exc:
                return exc.code().name, None, time.monotonic() - started
            return "OK", _labels(reply), time.monotonic() - started

        async def load() -> list[tuple[str, np.ndarray | None, float]]:
            async with grpc.aio.insecure_channel(gateway.target) as channel:
                stub = gateway_pb2_grpc.GatewayStub(channel)
                return await asyncio.gather(*(one(stub, i) for i in range(CANCEL_CALLS)))

        # The same load once without cancelling: how long a call lasts under it here, so
        # that the cancellations land while calls are in the gateway, on any machine.
        calibration = asyncio.run(load())
        assert {code for code, _, _ in calibration} == {"OK"}
        median = float(np.median([elapsed for _, _, elapsed in calibration]))
        delays.update({i: rng.uniform(0.2, 0.8) * median for i in to_cancel})
        cancelled_before = _answered(PROGRESSIVE, "CANCELLED")
        baseline = _quiet_task_count(gateway)
        with RssSampler() as rss:
            outcomes = asyncio.run(load())
        after = _settled_task_count(gateway, baseline)
        wait_for(lambda: _in_flight(PROGRESSIVE) == 0, 5, "in-flight gauge back to 0")
        cancelled = [i for i, (code, _, _) in enumerate(outcomes) if code == "CANCELLED"]
        server_cancelled = _answered(PROGRESSIVE, "CANCELLED") - cancelled_before
        print(
            f"\ncancellation: {CANCEL_CALLS} concurrent Infer on {PROGRESSIVE} over a link "
            f"{CANCEL_LINK_DELAY_S * 1e3:.0f} ms slow (median call {median * 1e3:.0f} ms), "
            f"{len(to_cancel)} cancelled by the client after {min(delays.values()) * 1e3:.0f}-"
            f"{max(delays.values()) * 1e3:.0f} ms: {len(cancelled)} ended CANCELLED "
            f"({len(to_cancel) - len(cancelled)} had answered first), {CANCEL_CALLS - len(cancelled)} answered; "
            f"the gateway's handler was cancelled mid-call for {server_cancelled:g}; "
            f"gateway loop tasks {baseline} before, {after} after; {rss.describe()}"
        )
        assert set(cancelled) <= to_cancel
        assert server_cancelled > 0, "no call was cancelled while the gateway was answering it"
        for i, (code, labels, _) in enumerate(outcomes):
            if i in cancelled:
                continue
            assert code == "OK", f"call {i}: {code}"
            assert labels is not None and labels.tolist() == [reference[i]], f"call {i}"
        assert after <= baseline, f"{after - baseline} tasks left on the gateway loop: {_task_names(gateway)}"
    finally:
        try:
            gateway.stop()
        finally:
            slow_link.close()
