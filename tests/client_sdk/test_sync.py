from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from switchyard.client import (
    Client,
    DeadlineExceeded,
    InferResult,
    InvalidArgument,
    NotFound,
    ProgressiveResult,
    RetryPolicy,
    StreamRequest,
    SwitchyardError,
    Unavailable,
)

from .scripted_gateway import INVALID_MESSAGE, STAGE_FAILURE, UNAVAILABLE_MESSAGE, ScriptedGateway

FAST_RETRIES = RetryPolicy(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.02)


@pytest.fixture
def client(threaded_gateway: ScriptedGateway) -> Iterator[Client]:
    with Client(threaded_gateway.target, retries=FAST_RETRIES) as client:
        yield client


def delay(ms: int) -> np.ndarray:
    return np.array([ms], dtype=np.int32)


def test_infer_returns_outputs_as_numpy(client: Client, threaded_gateway: ScriptedGateway) -> None:
    x = np.arange(6, dtype=np.float64).reshape(3, 2)
    result = client.infer("echo", {"x": x, "s": np.array(["z"])}, outputs=["x"], model_versions={"echo": "2"})
    np.testing.assert_array_equal(result["x"], x)
    assert list(result.outputs) == ["x"]
    assert result.models == [("echo", "2")]
    assert result.request_id == threaded_gateway.calls_to("Infer")[0].request.request_id


def test_infer_sends_the_data_key_and_decodes_missing_branches(
    client: Client, threaded_gateway: ScriptedGateway
) -> None:
    result = client.infer("partial", {}, data_key="k", request_id="p")
    assert threaded_gateway.calls_to("Infer")[0].request.data_key == "k"
    assert sorted(result.missing) == ["linear", "tree"]
    assert isinstance(result.missing["linear"], DeadlineExceeded)
    assert isinstance(result.missing["tree"], Unavailable)
    assert result.missing["tree"].request_id == "p"


def test_invalid_argument_raises_with_the_servers_message(client: Client) -> None:
    with pytest.raises(InvalidArgument) as caught:
        client.infer("invalid", {}, request_id="b1")
    assert (caught.value.message, caught.value.request_id) == (INVALID_MESSAGE, "b1")


def test_routes(client: Client) -> None:
    assert [(route.name, route.kind) for route in client.routes()] == [("echo", "single"), ("ensemble", "parallel")]
    assert client.route("ensemble").models == [("tree", "2"), ("linear", "")]
    with pytest.raises(NotFound, match="route 'x' not found"):
        client.route("x")
    ensemble = client.route("ensemble")
    assert [(step.name, step.models) for step in ensemble.steps] == [
        ("trees", [("tree", "2")]),
        ("linear", [("linear", ""), ("linear", "3")]),
    ]
    assert ensemble.cached is False
    assert client.route("echo").cached is True


def test_unavailable_is_retried_with_the_same_request_id(client: Client, threaded_gateway: ScriptedGateway) -> None:
    threaded_gateway.unavailable_calls = 2
    client.infer("echo", {})
    calls = threaded_gateway.calls_to("Infer")
    assert len(calls) == 3
    assert len({call.request.request_id for call in calls}) == 1


def test_retries_stop_after_max_attempts(client: Client, threaded_gateway: ScriptedGateway) -> None:
    threaded_gateway.unavailable_calls = 10
    with pytest.raises(Unavailable, match=UNAVAILABLE_MESSAGE):
        client.routes()
    assert len(threaded_gateway.calls_to("ListRoutes")) == 3


def test_non_idempotent_infer_is_not_retried(client: Client, threaded_gateway: ScriptedGateway) -> None:
    threaded_gateway.unavailable_calls = 1
    with pytest.raises(Unavailable):
        client.infer("echo", {}, idempotent=False)
    assert len(threaded_gateway.calls_to("Infer")) == 1


def test_retries_never_pass_the_calls_deadline(threaded_gateway: ScriptedGateway) -> None:
    threaded_gateway.unavailable_calls = 100
    policy = RetryPolicy(max_attempts=10, initial_backoff_s=0.2, jitter=False)
    with Client(threaded_gateway.target, retries=policy) as client:
        started = time.monotonic()
        with pytest.raises(Unavailable):
            client.infer("echo", {}, timeout=0.5)
        assert time.monotonic() - started < 0.5
    first, second = (call.time_remaining for call in threaded_gateway.calls_to("Infer"))
    assert first is not None and second is not None and second <= first - 0.15


def test_slow_answer_raises_deadline_exceeded(threaded_gateway: ScriptedGateway) -> None:
    with Client(threaded_gateway.target, default_timeout=0.2) as client:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            client.infer("slow", {})
        assert time.monotonic() - started < 1.0
    assert len(threaded_gateway.calls_to("Infer")) == 1


def test_metadata_goes_with_every_call(threaded_gateway: ScriptedGateway) -> None:
    with Client(threaded_gateway.target, metadata=[("authorization", "Bearer t")]) as client:
        client.routes()
    assert threaded_gateway.calls[0].metadata["authorization"] == "Bearer t"


def test_closed_client_refuses_calls(threaded_gateway: ScriptedGateway) -> None:
    client = Client(threaded_gateway.target)
    client.close()
    client.close()
    with pytest.raises(RuntimeError, match="Client is closed"):
        client.routes()


def test_one_client_serves_many_threads(client: Client) -> None:
    results: list[InferResult] = []

    def work(i: int) -> None:
        results.append(client.infer("echo", {"i": np.array([i])}))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert sorted(int(result["i"][0]) for result in results) == list(range(8))


def test_stream_answers_out_of_order_and_matches_by_request_id(client: Client) -> None:
    requests = [
        StreamRequest("echo", {"v": np.array([1]), "delay_ms": delay(300)}, request_id="slow"),
        StreamRequest("echo", {"v": np.array([2])}, request_id="fast"),
        StreamRequest("invalid", {}, request_id="bad"),
    ]
    order: list[str | None] = []
    answers: dict[str | None, InferResult | SwitchyardError] = {}
    for item in client.infer_stream(requests):
        order.append(item.request_id)
        answers[item.request_id] = item
    assert order[-1] == "slow"
    assert set(order) == {"slow", "fast", "bad"}
    assert isinstance(answers["slow"], InferResult) and answers["slow"]["v"].tolist() == [1]
    bad = answers["bad"]
    assert isinstance(bad, InvalidArgument) and bad.message == INVALID_MESSAGE


def test_stream_pipelines_requests_while_reading_answers(client: Client) -> None:
    first_answered = threading.Event()

    def requests() -> Iterator[StreamRequest]:
        yield StreamRequest("echo", {}, request_id="1")
        if not first_answered.wait(timeout=5):
            raise AssertionError("the first answer never arrived before the second request was sent")
        yield StreamRequest("echo", {}, request_id="2")

    seen = []
    for item in client.infer_stream(requests()):
        seen.append(item.request_id)
        first_answered.set()
    assert seen == ["1", "2"]


def test_stream_failure_raises(client: Client) -> None:
    requests = [
        StreamRequest("echo", {}, request_id="ok"),
        StreamRequest("abort", {"delay_ms": delay(100)}, request_id="boom"),
        StreamRequest("echo", {"delay_ms": delay(2000)}, request_id="never"),
    ]
    received = []
    with pytest.raises(Unavailable, match=UNAVAILABLE_MESSAGE):
        for item in client.infer_stream(requests):
            received.append(item.request_id)
    assert received == ["ok"]


def test_stream_deadline(client: Client) -> None:
    with pytest.raises(DeadlineExceeded):
        list(client.infer_stream([StreamRequest("slow", {})], timeout=0.3))


def test_leaving_the_stream_early_cancels_it_on_the_server(client: Client, threaded_gateway: ScriptedGateway) -> None:
    stream = client.infer_stream([StreamRequest("echo", {}, request_id="a"), StreamRequest("slow", {})])
    assert next(stream).request_id == "a"
    stream.close()
    assert threaded_gateway.stream_cancelled.wait(timeout=2)


def test_exception_from_the_request_iterable_is_raised_after_the_answers(client: Client) -> None:
    def requests() -> Iterator[StreamRequest]:
        yield StreamRequest("echo", {}, request_id="sent")
        raise RuntimeError("data source broke")

    received = []
    with pytest.raises(RuntimeError, match="data source broke"):
        for item in client.infer_stream(requests()):
            received.append(item.request_id)
    assert received == ["sent"]


def test_duplicate_request_id_is_refused(client: Client, threaded_gateway: ScriptedGateway) -> None:
    requests = [StreamRequest("echo", {}, request_id="d"), StreamRequest("echo", {}, request_id="d")]
    with pytest.raises(ValueError, match="request_id 'd' was already sent on this stream"):
        list(client.infer_stream(requests))
    assert len(threaded_gateway.stream_requests) == 1


def test_stream_sends_the_data_key(client: Client, threaded_gateway: ScriptedGateway) -> None:
    list(client.infer_stream([StreamRequest("echo", {}, data_key="k-2")]))
    assert [request.data_key for request in threaded_gateway.stream_requests] == ["k-2"]


def test_progressive_yields_each_stage_as_it_arrives(client: Client, threaded_gateway: ScriptedGateway) -> None:
    # Later stages wait until the first has reached the caller (see the asyncio test).
    gate = threaded_gateway.stage_gate = threading.Event()
    items: list[ProgressiveResult] = []
    for item in client.infer_progressive("progressive", {"v": np.array([5])}, data_key="d", timeout=5.0):
        items.append(item)
        gate.set()
    assert [(item.stage, item.stage_index, item.final, item.ok) for item in items] == [
        ("fast", 0, False, True),
        ("accurate", 1, True, True),
    ]
    assert all(item.result is not None and item.result["v"].tolist() == [5] for item in items)
    (call,) = threaded_gateway.calls_to("InferProgressive")
    assert call.request.data_key == "d"
    assert items[0].result is not None and items[0].result.request_id == call.request.request_id


def test_progressive_failed_stage_is_yielded_with_its_error(client: Client) -> None:
    failed, answered = client.infer_progressive("progressive-flaky", {}, request_id="f")
    assert (failed.stage, failed.ok, failed.result) == ("fast", False, None)
    assert isinstance(failed.error, Unavailable)
    assert (failed.error.message, failed.error.request_id) == (STAGE_FAILURE, "f")
    assert answered.ok and answered.final


def test_progressive_call_failure_raises_after_earlier_stages(
    client: Client, threaded_gateway: ScriptedGateway
) -> None:
    received = []
    with pytest.raises(Unavailable, match=UNAVAILABLE_MESSAGE) as caught:
        for item in client.infer_progressive("progressive-abort", {}, request_id="a"):
            received.append(item.stage)
    assert received == ["fast"]
    assert caught.value.request_id == "a"
    assert len(threaded_gateway.calls_to("InferProgressive")) == 1


def test_progressive_unavailable_before_any_message_is_retried(
    client: Client, threaded_gateway: ScriptedGateway
) -> None:
    threaded_gateway.unavailable_calls = 2
    assert [item.stage for item in client.infer_progressive("progressive", {})] == ["fast", "accurate"]
    calls = threaded_gateway.calls_to("InferProgressive")
    assert len(calls) == 3 and len({call.request.request_id for call in calls}) == 1
    threaded_gateway.unavailable_calls = 1
    with pytest.raises(Unavailable):
        list(client.infer_progressive("progressive", {}, idempotent=False))
    assert len(threaded_gateway.calls_to("InferProgressive")) == 4


def test_progressive_deadline(client: Client, threaded_gateway: ScriptedGateway) -> None:
    threaded_gateway.stage_gate = threading.Event()  # never set
    received = []
    with pytest.raises(DeadlineExceeded):
        for item in client.infer_progressive("progressive", {}, timeout=0.3):
            received.append(item.stage)
    assert received == ["fast"]


def test_leaving_progressive_early_cancels_it_on_the_server(client: Client, threaded_gateway: ScriptedGateway) -> None:
    threaded_gateway.stage_gate = threading.Event()  # never set
    stages = client.infer_progressive("progressive", {})
    assert next(stages).stage == "fast"
    stages.close()
    assert threaded_gateway.progressive_cancelled.wait(timeout=2)


def test_progressive_on_a_closed_client_raises_when_called(threaded_gateway: ScriptedGateway) -> None:
    client = Client(threaded_gateway.target)
    client.close()
    with pytest.raises(RuntimeError, match="Client is closed"):
        client.infer_progressive("progressive", {})
