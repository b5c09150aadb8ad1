from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest
import uvloop

from switchyard.client import (
    AsyncClient,
    DeadlineExceeded,
    InferResult,
    InvalidArgument,
    NotFound,
    ProgressiveResult,
    RetryPolicy,
    RouteInfo,
    RouteStep,
    StreamRequest,
    SwitchyardError,
    TensorSpec,
    Unavailable,
)

from .scripted_gateway import INVALID_MESSAGE, STAGE_FAILURE, UNAVAILABLE_MESSAGE, ScriptedGateway

FAST_RETRIES = RetryPolicy(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.02)


@pytest.fixture
async def client(gateway: ScriptedGateway) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(gateway.target, retries=FAST_RETRIES) as client:
        yield client


def delay(ms: int) -> np.ndarray:
    return np.array([ms], dtype=np.int32)


# --- infer ---------------------------------------------------------------------------------------------------


async def test_infer_returns_outputs_as_numpy(client: AsyncClient) -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    names = np.array([b"a", "bé"], dtype=object)
    result = await client.infer("echo", {"x": x, "names": names}, request_id="req-1")
    assert isinstance(result, InferResult)
    np.testing.assert_array_equal(result["x"], x)
    assert result["x"].dtype == np.float32
    assert result["names"].tolist() == [b"a", "bé".encode()]
    assert (result.route, result.request_id, result.cached) == ("echo", "req-1", True)
    assert result.models == [("echo", "1")]


async def test_infer_sends_outputs_versions_and_bypass_cache(client: AsyncClient, gateway: ScriptedGateway) -> None:
    result = await client.infer(
        "echo",
        {"a": np.zeros(1, np.int64), "b": np.ones(2, np.uint8)},
        outputs=["b"],
        model_versions={"echo": 3},
        bypass_cache=True,
    )
    assert list(result.outputs) == ["b"]
    assert result.models == [("echo", "3")]
    assert result.cached is False
    (call,) = gateway.calls_to("Infer")
    assert list(call.request.outputs) == ["b"]
    assert dict(call.request.model_versions) == {"echo": "3"}


async def test_infer_sends_the_data_key(client: AsyncClient, gateway: ScriptedGateway) -> None:
    await client.infer("echo", {"x": np.zeros(1, np.float32)}, data_key="image-42")
    await client.infer("echo", {"x": np.zeros(1, np.float32)})
    first, second = gateway.calls_to("Infer")
    assert first.request.data_key == "image-42"
    assert second.request.data_key == ""


async def test_missing_branches_are_errors_by_branch_name(client: AsyncClient) -> None:
    result = await client.infer("partial", {"x": np.ones(1, np.float32)}, request_id="p-1")
    assert result["x"].tolist() == [1.0]
    assert sorted(result.missing) == ["linear", "tree"]
    late, down = result.missing["linear"], result.missing["tree"]
    assert isinstance(late, DeadlineExceeded) and late.message == "branch linear did not answer in time"
    assert isinstance(down, Unavailable) and down.message == "model tree is unavailable"
    assert late.request_id == down.request_id == "p-1"
    assert (await client.infer("echo", {})).missing == {}


async def test_infer_assigns_a_request_id(client: AsyncClient, gateway: ScriptedGateway) -> None:
    result = await client.infer("echo", {"x": np.zeros(1, np.float32)})
    sent = gateway.calls_to("Infer")[0].request.request_id
    assert len(sent) == 32
    assert result.request_id == sent


async def test_invalid_argument_raises_with_the_servers_message(client: AsyncClient, gateway: ScriptedGateway) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await client.infer("invalid", {"x": np.zeros(1, np.int64)}, request_id="bad-1")
    assert caught.value.message == INVALID_MESSAGE
    assert caught.value.request_id == "bad-1"
    assert str(caught.value) == f"INVALID_ARGUMENT: {INVALID_MESSAGE} (request_id=bad-1)"
    assert len(gateway.calls_to("Infer")) == 1  # not retried


async def test_unknown_route_raises_not_found(client: AsyncClient) -> None:
    with pytest.raises(NotFound, match="route 'nope' not found"):
        await client.infer("nope", {})


async def test_metadata_goes_with_every_call(gateway: ScriptedGateway) -> None:
    async with AsyncClient(gateway.target, metadata={"X-Api-Key": "secret"}) as client:
        await client.infer("echo", {})
        await client.routes()
    assert [call.metadata.get("x-api-key") for call in gateway.calls] == ["secret", "secret"]


# --- routes --------------------------------------------------------------------------------------------------


async def test_routes_describe_every_route(client: AsyncClient) -> None:
    routes = await client.routes()
    assert [route.name for route in routes] == ["echo", "ensemble"]
    assert routes[1] == RouteInfo(
        name="ensemble",
        kind="parallel",
        description="Two models at once.",
        inputs=[TensorSpec("features", "FP64", (4,))],
        outputs=[TensorSpec("label", "BYTES", (1,))],
        models=[("tree", "2"), ("linear", "")],  # type: ignore[list-item]
        max_batch_size=0,
        steps=[
            RouteStep("trees", [("tree", "2")]),  # type: ignore[list-item]
            RouteStep("linear", [("linear", ""), ("linear", "3")]),  # type: ignore[list-item]
        ],
        cached=False,
    )


async def test_route_by_name(client: AsyncClient) -> None:
    echo = await client.route("echo")
    assert echo.kind == "single"
    assert echo.inputs == [("x", "FP32", (-1, 3))]
    assert echo.max_batch_size == 8
    assert echo.cached is True
    assert echo.steps == []
    with pytest.raises(NotFound, match="route 'missing' not found") as caught:
        await client.route("missing")
    assert caught.value.request_id is None


# --- retries -------------------------------------------------------------------------------------------------


async def test_unavailable_is_retried_with_the_same_request_id(client: AsyncClient, gateway: ScriptedGateway) -> None:
    gateway.unavailable_calls = 2
    result = await client.infer("echo", {"x": np.ones(2, np.float32)})
    calls = gateway.calls_to("Infer")
    assert len(calls) == 3
    assert len({call.request.request_id for call in calls}) == 1
    assert result.request_id == calls[0].request.request_id


async def test_retries_stop_after_max_attempts(client: AsyncClient, gateway: ScriptedGateway) -> None:
    gateway.unavailable_calls = 10
    with pytest.raises(Unavailable) as caught:
        await client.infer("echo", {}, request_id="r")
    assert caught.value.message == UNAVAILABLE_MESSAGE
    assert caught.value.request_id == "r"
    assert len(gateway.calls_to("Infer")) == 3


async def test_non_idempotent_infer_is_not_retried(client: AsyncClient, gateway: ScriptedGateway) -> None:
    gateway.unavailable_calls = 1
    with pytest.raises(Unavailable):
        await client.infer("echo", {}, idempotent=False)
    assert len(gateway.calls_to("Infer")) == 1


async def test_retries_none_disables_retries(gateway: ScriptedGateway) -> None:
    gateway.unavailable_calls = 1
    async with AsyncClient(gateway.target, retries=None) as client:
        with pytest.raises(Unavailable):
            await client.routes()
    assert len(gateway.calls_to("ListRoutes")) == 1


async def test_route_lookups_are_retried(client: AsyncClient, gateway: ScriptedGateway) -> None:
    gateway.unavailable_calls = 2
    assert len(await client.routes()) == 2
    gateway.unavailable_calls = 1
    assert (await client.route("echo")).name == "echo"
    assert len(gateway.calls_to("ListRoutes")) == 3
    assert len(gateway.calls_to("GetRoute")) == 2


async def test_retries_never_pass_the_calls_deadline(gateway: ScriptedGateway) -> None:
    gateway.unavailable_calls = 100
    policy = RetryPolicy(max_attempts=10, initial_backoff_s=0.2, max_backoff_s=1.0, jitter=False)
    async with AsyncClient(gateway.target, retries=policy) as client:
        started = time.monotonic()
        with pytest.raises(Unavailable):
            await client.infer("echo", {}, timeout=0.5)
        elapsed = time.monotonic() - started
    # Attempt 1 at 0 s, attempt 2 after 0.2 s; the next wait (0.4 s) would end past the deadline.
    calls = gateway.calls_to("Infer")
    assert len(calls) == 2
    assert elapsed < 0.5
    first, second = (call.time_remaining for call in calls)
    assert first is not None and second is not None
    assert 0.4 < first <= 0.52
    assert second <= first - 0.15  # the second attempt only got what was left


async def test_slow_answer_raises_deadline_exceeded_and_is_not_retried(
    client: AsyncClient, gateway: ScriptedGateway
) -> None:
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded) as caught:
        await client.infer("slow", {}, timeout=0.2, request_id="late")
    assert time.monotonic() - started < 1.0
    assert caught.value.request_id == "late"
    assert len(gateway.calls_to("Infer")) == 1


async def test_default_timeout_is_every_calls_deadline(gateway: ScriptedGateway) -> None:
    async with AsyncClient(gateway.target, default_timeout=0.3) as client:
        await client.routes()
        with pytest.raises(DeadlineExceeded):
            await client.infer("slow", {})
    seen = gateway.calls_to("ListRoutes")[0].time_remaining
    assert seen is not None and 0.1 < seen <= 0.32


async def test_per_call_timeout_overrides_the_default(client: AsyncClient, gateway: ScriptedGateway) -> None:
    await client.routes(timeout=5.0)
    await client.routes()
    first, second = (call.time_remaining for call in gateway.calls_to("ListRoutes"))
    # gRPC rounds the deadline it sends up a little (the timeout header has few digits).
    assert first is not None and 4.0 < first <= 5.2
    assert second is not None and 29.0 < second <= 30.2


async def test_unreachable_gateway_raises_unavailable_after_retries() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with AsyncClient(f"127.0.0.1:{port}", retries=FAST_RETRIES, default_timeout=5.0) as client:
        started = time.monotonic()
        with pytest.raises(Unavailable):
            await client.routes()
        assert time.monotonic() - started < 3.0


async def test_closed_client_refuses_calls(gateway: ScriptedGateway) -> None:
    client = AsyncClient(gateway.target)
    await client.routes()
    await client.close()
    await client.close()  # idempotent
    with pytest.raises(RuntimeError, match="AsyncClient is closed"):
        await client.routes()


async def test_tests_run_on_uvloop() -> None:
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)


def test_client_can_be_built_outside_an_event_loop() -> None:
    client = AsyncClient("127.0.0.1:1")
    asyncio.run(client.close())


# --- streams -------------------------------------------------------------------------------------------------


async def collect(client: AsyncClient, requests: object, **kwargs: float) -> dict[str, InferResult | SwitchyardError]:
    answers: dict[str, InferResult | SwitchyardError] = {}
    async for item in client.infer_stream(requests, **kwargs):  # type: ignore[arg-type]
        assert item.request_id is not None
        answers[item.request_id] = item
    return answers


async def test_stream_answers_out_of_order_and_matches_by_request_id(client: AsyncClient) -> None:
    requests = [
        StreamRequest("echo", {"x": np.array([1.0], np.float32), "delay_ms": delay(300)}, request_id="slow"),
        StreamRequest("echo", {"x": np.array([2.0], np.float32)}, request_id="fast"),
        StreamRequest("invalid", {}, request_id="bad"),
    ]
    order: list[str] = []
    answers: dict[str, InferResult | SwitchyardError] = {}
    async for item in client.infer_stream(requests):
        assert item.request_id is not None
        order.append(item.request_id)
        answers[item.request_id] = item
    assert order[-1] == "slow"  # answered last although sent first
    assert set(order) == {"slow", "fast", "bad"}
    slow, fast, bad = answers["slow"], answers["fast"], answers["bad"]
    assert isinstance(slow, InferResult) and slow["x"].tolist() == [1.0]
    assert isinstance(fast, InferResult) and fast["x"].tolist() == [2.0]
    # A failed request is an error object for its id; the stream went on to answer "slow".
    assert isinstance(bad, InvalidArgument)
    assert (bad.message, bad.request_id) == (INVALID_MESSAGE, "bad")


async def test_stream_pipelines_requests_while_reading_answers(client: AsyncClient) -> None:
    first_answered = asyncio.Event()

    async def requests() -> AsyncIterator[StreamRequest]:
        yield StreamRequest("echo", {"n": np.array([1])}, request_id="1")
        # Only sent once the first answer is in: needs the SDK to read while it writes.
        await first_answered.wait()
        yield StreamRequest("echo", {"n": np.array([2])}, request_id="2")

    seen = []

    async def consume() -> None:
        async for item in client.infer_stream(requests()):
            assert isinstance(item, InferResult)
            seen.append(item.request_id)
            first_answered.set()

    await asyncio.wait_for(consume(), timeout=5)
    assert seen == ["1", "2"]


async def test_stream_sends_every_request_field(client: AsyncClient, gateway: ScriptedGateway) -> None:
    request = StreamRequest(
        "echo", {"a": np.zeros(1), "b": np.ones(1)}, outputs=["b"], model_versions={"echo": 7}, bypass_cache=True
    )
    (item,) = (await collect(client, [request])).values()
    assert isinstance(item, InferResult)
    assert list(item.outputs) == ["b"] and item.models == [("echo", "7")] and item.cached is False
    (sent,) = gateway.stream_requests
    assert sent.request_id == request.request_id
    assert sent.data_key == ""


async def test_stream_sends_the_data_key(client: AsyncClient, gateway: ScriptedGateway) -> None:
    await collect(client, [StreamRequest("echo", {}, data_key="k-1")])
    (sent,) = gateway.stream_requests
    assert sent.data_key == "k-1"


async def test_stream_failure_raises_after_earlier_answers(client: AsyncClient) -> None:
    requests = [
        StreamRequest("echo", {}, request_id="ok"),
        StreamRequest("abort", {"delay_ms": delay(100)}, request_id="boom"),
        StreamRequest("echo", {"delay_ms": delay(2000)}, request_id="never"),
    ]
    received: list[str | None] = []
    with pytest.raises(Unavailable, match=UNAVAILABLE_MESSAGE):
        async for item in client.infer_stream(requests):
            received.append(item.request_id)
    assert received == ["ok"]


async def test_stream_deadline(client: AsyncClient) -> None:
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        await collect(client, [StreamRequest("slow", {})], timeout=0.3)
    assert time.monotonic() - started < 2.0


async def test_stream_refused_by_the_gateway_raises(client: AsyncClient, gateway: ScriptedGateway) -> None:
    gateway.unavailable_calls = 1
    with pytest.raises(Unavailable):
        await collect(client, [StreamRequest("echo", {})])
    assert len(gateway.calls_to("InferStream")) == 1  # streams are not retried


async def test_leaving_the_stream_early_cancels_it_on_the_server(client: AsyncClient, gateway: ScriptedGateway) -> None:
    requests = [StreamRequest("echo", {}, request_id="now"), StreamRequest("slow", {}, request_id="later")]
    async with contextlib.aclosing(client.infer_stream(requests)) as stream:
        async for item in stream:
            assert item.request_id == "now"
            break
    for _ in range(100):
        if gateway.stream_cancelled.is_set():
            break
        await asyncio.sleep(0.02)
    assert gateway.stream_cancelled.is_set()


async def test_duplicate_request_id_stops_sending_and_raises_after_the_answers(
    client: AsyncClient, gateway: ScriptedGateway
) -> None:
    requests = [StreamRequest("echo", {}, request_id="same"), StreamRequest("echo", {}, request_id="same")]
    received = []
    with pytest.raises(ValueError, match="request_id 'same' was already sent on this stream"):
        async for item in client.infer_stream(requests):
            received.append(item.request_id)
    assert received == ["same"]
    assert len(gateway.stream_requests) == 1


async def test_exception_from_the_request_iterable_is_raised_after_the_answers(client: AsyncClient) -> None:
    async def requests() -> AsyncIterator[StreamRequest]:
        yield StreamRequest("echo", {}, request_id="sent")
        raise RuntimeError("data source broke")

    received = []
    with pytest.raises(RuntimeError, match="data source broke"):
        async for item in client.infer_stream(requests()):
            received.append(item.request_id)
    assert received == ["sent"]


async def test_many_requests_on_one_stream(client: AsyncClient, gateway: ScriptedGateway) -> None:
    requests = [StreamRequest("echo", {"i": np.array([i])}, request_id=str(i)) for i in range(200)]
    answers = await collect(client, requests)
    assert sorted(answers, key=int) == [str(i) for i in range(200)]
    assert all(answer["i"].tolist() == [int(rid)] for rid, answer in answers.items())  # type: ignore[index]
    assert len(gateway.calls_to("InferStream")) == 1


# --- progressive ---------------------------------------------------------------------------------------------


async def test_progressive_yields_each_stage_as_it_arrives(client: AsyncClient, gateway: ScriptedGateway) -> None:
    # Later stages wait until the first has reached the caller: an SDK that waited for the whole
    # stream would run into the deadline instead.
    gateway.stage_gate = threading.Event()
    x = np.arange(3, dtype=np.float32)
    items: list[ProgressiveResult] = []
    async for item in client.infer_progressive("progressive", {"x": x}, request_id="p-1", timeout=5.0):
        items.append(item)
        gateway.stage_gate.set()
    assert [(item.stage, item.stage_index, item.final) for item in items] == [
        ("fast", 0, False),
        ("accurate", 1, True),
    ]
    for item in items:
        assert isinstance(item, ProgressiveResult)
        assert item.ok and item.error is None and item.result is not None
        assert item.result["x"].tolist() == x.tolist()
        assert item.result.request_id == "p-1"
        assert item.result.models == [(item.stage, "1")]
    (call,) = gateway.calls_to("InferProgressive")
    assert call.request.request_id == "p-1"


async def test_progressive_sends_every_request_field(client: AsyncClient, gateway: ScriptedGateway) -> None:
    items = [
        item
        async for item in client.infer_progressive(
            "progressive",
            {"a": np.zeros(1), "b": np.ones(1)},
            outputs=["b"],
            model_versions={"accurate": 4},
            bypass_cache=True,
            data_key="img-7",
        )
    ]
    final = items[-1].result
    assert final is not None
    assert list(final.outputs) == ["b"] and final.models == [("accurate", "4")] and final.cached is False
    (call,) = gateway.calls_to("InferProgressive")
    assert call.request.data_key == "img-7"
    assert len(call.request.request_id) == 32
    assert final.request_id == call.request.request_id


async def test_progressive_failed_stage_is_yielded_with_its_error(client: AsyncClient) -> None:
    items = [item async for item in client.infer_progressive("progressive-flaky", {}, request_id="f-1")]
    failed, answered = items
    assert (failed.stage, failed.stage_index, failed.final, failed.ok) == ("fast", 0, False, False)
    assert failed.result is None
    assert isinstance(failed.error, Unavailable)
    assert (failed.error.message, failed.error.request_id) == (STAGE_FAILURE, "f-1")
    assert (answered.stage, answered.final, answered.ok) == ("accurate", True, True)


async def test_progressive_on_another_route_kind_answers_once(client: AsyncClient) -> None:
    (item,) = [item async for item in client.infer_progressive("echo", {"x": np.ones(2)})]
    assert (item.stage, item.stage_index, item.final, item.ok) == ("echo", 0, True, True)
    assert item.result is not None and item.result["x"].tolist() == [1.0, 1.0]


async def test_progressive_call_failure_raises_after_earlier_stages(
    client: AsyncClient, gateway: ScriptedGateway
) -> None:
    received = []
    with pytest.raises(Unavailable, match=UNAVAILABLE_MESSAGE) as caught:
        async for item in client.infer_progressive("progressive-abort", {}, request_id="a-1"):
            received.append(item.stage)
    assert received == ["fast"]
    assert caught.value.request_id == "a-1"
    assert len(gateway.calls_to("InferProgressive")) == 1  # a stage had answered: not retried


async def test_progressive_refused_call_raises_its_error(client: AsyncClient, gateway: ScriptedGateway) -> None:
    with pytest.raises(InvalidArgument) as caught:
        async for _ in client.infer_progressive("invalid", {}, request_id="bad-1"):
            raise AssertionError("no message expected")
    assert (caught.value.message, caught.value.request_id) == (INVALID_MESSAGE, "bad-1")
    assert len(gateway.calls_to("InferProgressive")) == 1


async def test_progressive_unavailable_before_any_message_is_retried(
    client: AsyncClient, gateway: ScriptedGateway
) -> None:
    gateway.unavailable_calls = 2
    items = [item async for item in client.infer_progressive("progressive", {})]
    assert [item.stage for item in items] == ["fast", "accurate"]
    calls = gateway.calls_to("InferProgressive")
    assert len(calls) == 3
    assert len({call.request.request_id for call in calls}) == 1


async def test_non_idempotent_progressive_is_not_retried(client: AsyncClient, gateway: ScriptedGateway) -> None:
    gateway.unavailable_calls = 1
    with pytest.raises(Unavailable):
        async for _ in client.infer_progressive("progressive", {}, idempotent=False):
            pass
    assert len(gateway.calls_to("InferProgressive")) == 1


async def test_progressive_deadline_covers_every_stage(client: AsyncClient, gateway: ScriptedGateway) -> None:
    gateway.stage_gate = threading.Event()  # never set: the second stage never answers
    received = []
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded) as caught:
        async for item in client.infer_progressive("progressive", {}, timeout=0.3, request_id="late"):
            received.append(item.stage)
    assert time.monotonic() - started < 2.0
    assert received == ["fast"]
    assert caught.value.request_id == "late"
    seen = gateway.calls_to("InferProgressive")[0].time_remaining
    assert seen is not None and seen <= 0.32


async def test_leaving_progressive_early_cancels_it_on_the_server(
    client: AsyncClient, gateway: ScriptedGateway
) -> None:
    gateway.stage_gate = threading.Event()  # never set
    async with contextlib.aclosing(client.infer_progressive("progressive", {})) as stages:
        async for item in stages:
            assert item.stage == "fast"
            break
    for _ in range(100):
        if gateway.progressive_cancelled.is_set():
            break
        await asyncio.sleep(0.02)
    assert gateway.progressive_cancelled.is_set()


async def test_progressive_checks_its_arguments_when_called(gateway: ScriptedGateway) -> None:
    client = AsyncClient(gateway.target)
    with pytest.raises(TypeError, match="outputs must be a sequence"):
        client.infer_progressive("progressive", {}, outputs="y")
    with pytest.raises(ValueError, match="timeout must be > 0"):
        client.infer_progressive("progressive", {}, timeout=0)
    await client.close()
    with pytest.raises(RuntimeError, match="AsyncClient is closed"):
        client.infer_progressive("progressive", {})
    assert gateway.calls_to("InferProgressive") == []
