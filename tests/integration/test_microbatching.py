"""Gateway-side micro-batching against a real Triton: same answers, far fewer Triton requests."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from switchyard.models.datasets import digits_split
from switchyard.proxy.routes.schema import parse_routes
from switchyard.proxy.settings import GatewaySettings
from switchyard.server.local_triton import LocalTriton
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc
from switchyard.v1.channel import channel_options
from switchyard.v1.tensors import from_numpy, to_numpy

from .gateway_thread import GatewayThread
from .triton_stats import model_counts

MODEL = "digits_logreg"
CONCURRENCY = 64
# One sync client issues the 64 calls one after another; on a loaded 2-core
# machine their arrivals spread over several milliseconds, so the window is
# wide enough to hold them (the production default is 2 ms).
# "digits" is the unbatched reference; "digits_default" leaves batching unset,
# which micro-batches adaptively because the model batches.
ROUTES = f"""
[[routes]]
name = "digits"
model = "{MODEL}"
batching = false

[[routes]]
name = "digits_default"
model = "{MODEL}"

[[routes]]
name = "digits_batched"
model = "{MODEL}"
batching = {{ max_delay_ms = 20.0, max_batch = 64 }}

[[routes]]
name = "digits_eager"
model = "{MODEL}"
batching = {{ max_delay_ms = 20.0, max_batch = 64, eager = true }}
"""


@pytest.fixture(scope="module")
def gateway(local_triton: LocalTriton) -> Iterator[GatewayThread]:
    settings = GatewaySettings(triton_url=local_triton.grpc_url, host="127.0.0.1", port=0, metrics_port=None)
    with GatewayThread(settings, parse_routes(ROUTES)) as thread:
        yield thread


def _call_all(stub: gateway_pb2_grpc.GatewayStub, route: str, x: np.ndarray) -> list[pb.InferResponse]:
    """One single-row request per row of ``x``, all in flight at once (sync gRPC futures, no second event loop)."""
    futures = [
        stub.Infer.future(pb.InferRequest(route=route, inputs=[from_numpy("image", x[i : i + 1])]), timeout=30)
        for i in range(len(x))
    ]
    return [f.result() for f in futures]


@pytest.mark.parametrize("route", ["digits_default", "digits_batched", "digits_eager"])
def test_concurrent_requests_share_triton_calls_and_answer_the_same(
    gateway: GatewayThread, local_triton: LocalTriton, route: str
) -> None:
    _, x_test, _, _ = digits_split()
    x = np.ascontiguousarray(x_test[:CONCURRENCY])
    with grpc.insecure_channel(gateway.target, options=channel_options()) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        _call_all(stub, "digits", x[:2])  # warm the channel and the model
        plain = _call_all(stub, "digits", x)
        before = model_counts(local_triton.grpc_url, MODEL).requests
        batched = _call_all(stub, route, x)
        sent = model_counts(local_triton.grpc_url, MODEL).requests - before
    print(f"\n{route}: {CONCURRENCY} gateway requests -> {sent} Triton requests ({CONCURRENCY / max(sent, 1):.1f}x)")
    for a, b in zip(plain, batched, strict=True):
        assert [t.name for t in a.outputs] == [t.name for t in b.outputs]
        for ta, tb in zip(a.outputs, b.outputs, strict=True):
            assert list(tb.shape)[0] == 1
            a_array, b_array = to_numpy(ta), to_numpy(tb)
            if a_array.dtype.kind == "f":
                # Triton batches both routes (dynamic batching), and a GEMM's rounding depends on the batch.
                np.testing.assert_allclose(b_array, a_array, rtol=1e-4, atol=1e-6)
            else:
                np.testing.assert_array_equal(b_array, a_array)
    # Eager sends the first arrivals alone while the rest are still coming in: a looser bound. The default
    # sends alone while a model instance is free or the load is light (two rows per instance in flight and
    # waiting), and waits only past that: it must share some calls.
    bound = {"digits_default": CONCURRENCY - 1, "digits_eager": CONCURRENCY // 2}.get(route, CONCURRENCY // 4)
    assert 1 <= sent <= bound, f"{sent} Triton requests for {CONCURRENCY} gateway requests"


def test_pinned_version_and_errors_still_answer(gateway: GatewayThread) -> None:
    _, x_test, _, _ = digits_split()
    with grpc.insecure_channel(gateway.target, options=channel_options()) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        reply = stub.Infer(
            pb.InferRequest(
                route="digits_batched", inputs=[from_numpy("image", x_test[:3])], model_versions={MODEL: "1"}
            ),
            timeout=30,
        )
        assert reply.models[0].version == "1" and list(reply.outputs[0].shape)[0] == 3
        with pytest.raises(grpc.RpcError) as info:
            stub.Infer(pb.InferRequest(route="digits_batched", inputs=[from_numpy("pixels", x_test[:1])]), timeout=30)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
