"""Serving patterns against real Triton: serial, parallel, progressive, image pre-processing.

Each test asserts the pattern's defining behaviour: data flow and order for
serial, overlapping branches and both timeout policies for parallel, the fast
answer reaching the client before the slow model has finished for
progressive.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from switchyard.models.datasets import digits_png, digits_split, wine_split
from switchyard.proxy.routes.schema import parse_routes
from switchyard.proxy.settings import GatewaySettings
from switchyard.server.local_triton import LocalTriton
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc
from switchyard.v1.tensors import from_numpy, to_numpy

from .gateway_thread import GatewayThread


def spans(call: grpc.Call) -> dict[str, tuple[float, float]]:
    """The proxy's stage timings from the ``switchyard-timing`` trailer: name -> (start ms, end ms)."""
    header = dict(call.trailing_metadata() or ()).get("switchyard-timing", "")
    out = {}
    for item in filter(None, (part.strip() for part in header.split(","))):
        name, *fields = item.split(";")
        values = dict(f.split("=") for f in fields)
        start = float(values["start"])
        out[name] = (start, start + float(values["dur"]))
    return out


def onnx(model_repository: Path, model: str, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(model_repository / model / "1" / "model.onnx"))
    return session.run(None, feed)


def test_serial_class_picks_the_regressor_row_by_row(
    gateway_stub: gateway_pb2_grpc.GatewayStub, model_repository: Path
) -> None:
    features = wine_split().X_test[:40]
    reply, call = gateway_stub.Infer.with_call(
        pb.InferRequest(route="wine_alcohol_by_cultivar", inputs=[from_numpy("features", features)]), timeout=10
    )
    out = {t.name: to_numpy(t) for t in reply.outputs}
    assert set(out) == {"cultivar", "cultivar_probabilities", "alcohol"}

    # Step 1's class is the classifier's, and each row's alcohol is the regressor of that class.
    labels, _ = onnx(model_repository, "wine_classifier", {"features": features})
    np.testing.assert_array_equal(out["cultivar"].reshape(-1), labels.reshape(-1))
    assert len(set(labels.reshape(-1).tolist())) > 1, "the test rows should span several cultivars"
    expected = np.empty((len(features), 1), np.float32)
    for cultivar in range(3):
        rows = labels.reshape(-1) == cultivar
        if rows.any():
            (alcohol,) = onnx(model_repository, f"wine_alcohol_c{cultivar}", {"features": features[rows]})
            expected[rows] = alcohol
    np.testing.assert_allclose(out["alcohol"], np.clip(expected, 0, None), rtol=1e-5)

    # The classifier ran first, then only the regressors of the classes present.
    models = [m.name for m in reply.models]
    assert models[0] == "wine_classifier"
    assert sorted(models[1:]) == sorted(f"wine_alcohol_c{c}" for c in set(labels.reshape(-1).tolist()))
    timings = spans(call)
    assert timings["step:classify"][1] <= timings["step:regress"][0]


def test_serial_route_is_described_with_its_steps(gateway_stub: gateway_pb2_grpc.GatewayStub) -> None:
    info = gateway_stub.GetRoute(pb.GetRouteRequest(name="wine_alcohol_by_cultivar"), timeout=5)
    assert info.kind == pb.ROUTE_KIND_SERIAL
    assert [s.name for s in info.steps] == ["classify", "regress"]
    assert [m.name for m in info.steps[1].models] == ["wine_alcohol_c0", "wine_alcohol_c1", "wine_alcohol_c2"]
    assert [(s.name, s.datatype) for s in info.inputs] == [("features", "FP32")]


def test_parallel_branches_overlap_and_aggregate(gateway_stub: gateway_pb2_grpc.GatewayStub) -> None:
    features = wine_split().X_test[:16]
    request = pb.InferRequest(route="wine_profile", inputs=[from_numpy("features", features)])
    reply, call = gateway_stub.Infer.with_call(request, timeout=10)
    out = {t.name: to_numpy(t) for t in reply.outputs}
    assert set(out) == {"cultivar.label", "cultivar.probabilities", "alcohol.alcohol"}
    assert not reply.missing

    single = {
        route: {
            t.name: to_numpy(t)
            for t in gateway_stub.Infer(
                pb.InferRequest(route=route, inputs=[from_numpy("features", features)]), timeout=10
            ).outputs
        }
        for route in ("wine", "wine_alcohol")
    }
    np.testing.assert_array_equal(out["cultivar.label"], single["wine"]["label"])
    raw_alcohol = out["alcohol.alcohol"]
    np.testing.assert_allclose(np.clip(raw_alcohol, 0, None), single["wine_alcohol"]["alcohol"], rtol=1e-6)

    # Concurrency, from the proxy's own timings of this one call: each branch
    # started before the other finished (run one after the other, they could not overlap).
    timings = spans(call)
    (a_start, a_end), (b_start, b_end) = timings["branch:cultivar"], timings["branch:alcohol"]
    assert a_start < b_end and b_start < a_end, timings


TIMEOUT_ROUTES = """
[[routes]]
name = "profile_all"
kind = "parallel"
policy = "all"
[[routes.branches]]
name = "cultivar"
model = "wine_classifier"
[[routes.branches]]
name = "alcohol"
model = "wine_alcohol_regressor"
timeout_s = 0.00001

[[routes]]
name = "profile_partial"
kind = "parallel"
policy = "partial"
[[routes.branches]]
name = "cultivar"
model = "wine_classifier"
[[routes.branches]]
name = "alcohol"
model = "wine_alcohol_regressor"
timeout_s = 0.00001
"""


@pytest.fixture(scope="module")
def timeout_gateway(local_triton: LocalTriton) -> Iterator[gateway_pb2_grpc.GatewayStub]:
    settings = GatewaySettings(triton_url=local_triton.grpc_url, host="127.0.0.1", port=0, metrics_port=None)
    gateway = GatewayThread(settings, parse_routes(TIMEOUT_ROUTES))
    try:
        with grpc.insecure_channel(gateway.target) as channel:
            yield gateway_pb2_grpc.GatewayStub(channel)
    finally:
        gateway.stop()


def test_parallel_policy_all_fails_naming_the_late_branch(timeout_gateway: gateway_pb2_grpc.GatewayStub) -> None:
    features = wine_split().X_test[:4]
    with pytest.raises(grpc.RpcError) as info:
        timeout_gateway.Infer(
            pb.InferRequest(route="profile_all", inputs=[from_numpy("features", features)]), timeout=10
        )
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "branch 'alcohol'" in info.value.details()


def test_parallel_policy_partial_answers_and_lists_the_missing_branch(
    timeout_gateway: gateway_pb2_grpc.GatewayStub,
) -> None:
    features = wine_split().X_test[:4]
    reply = timeout_gateway.Infer(
        pb.InferRequest(route="profile_partial", inputs=[from_numpy("features", features)]), timeout=10
    )
    assert {t.name for t in reply.outputs} == {"cultivar.label", "cultivar.probabilities"}
    assert [m.branch for m in reply.missing] == ["alcohol"]
    assert reply.missing[0].status.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert "timeout" in reply.missing[0].status.message


def test_progressive_fast_answer_arrives_before_the_slow_model_finishes(
    gateway_stub: gateway_pb2_grpc.GatewayStub, model_repository: Path
) -> None:
    _, x_test, _, y_test = digits_split()
    images = x_test[:64]
    early: list[bool] = []
    seen: list[dict[str, tuple[float, float]]] = []
    for attempt in range(10):
        if attempt:
            time.sleep(0.2)  # let a burst of other work on this small machine pass
        sent = time.monotonic()
        stream = gateway_stub.InferProgressive(
            pb.InferRequest(route="digits_progressive", inputs=[from_numpy("image", images)]), timeout=30
        )
        messages = [(time.monotonic() - sent, message) for message in stream]
        timings = spans(stream)
        seen.append(timings)
        stages = [(m.stage, m.stage_index, m.final) for _, m in messages]
        if stages == [("accurate", 1, True)]:
            # On a loaded machine the slow model can win; a worse answer is then never sent after it.
            continue
        assert stages == [("fast", 0, False), ("accurate", 1, True)], (stages, timings)
        fast = {t.name: to_numpy(t) for t in messages[0][1].response.outputs}
        accurate = {t.name: to_numpy(t) for t in messages[1][1].response.outputs}
        reference_fast = onnx(model_repository, "digits_logreg", {"image": images})[1]
        np.testing.assert_allclose(fast["probabilities"], reference_fast, atol=1e-6)
        reference_accurate = onnx(model_repository, "digits_mlp", {"image": images})[1]
        np.testing.assert_allclose(accurate["probabilities"], reference_accurate, atol=1e-5)
        hits = [(out["label"].reshape(-1) == y_test[:64]).mean() for out in (fast, accurate)]
        assert hits[1] >= hits[0]
        # The client held the fast answer before the proxy saw the slow stage
        # end. The client's clock starts before the proxy's, so this is
        # conservative; a proxy that buffered the answers could never pass it.
        early.append(messages[0][0] * 1e3 < timings["stage:accurate"][1])
        if early[-1]:
            break
    assert any(early), f"the fast answer never reached the client before the slow stage ended: {early} {seen}"


def test_image_route_decodes_png_bytes(gateway_stub: gateway_pb2_grpc.GatewayStub) -> None:
    _, x_test, _, _ = digits_split()
    images = x_test[:24]
    pngs = np.array(digits_png(images.reshape(-1, 8, 8)), dtype=object)
    reply = gateway_stub.Infer(pb.InferRequest(route="digits_png", inputs=[from_numpy("png", pngs)]), timeout=10)
    out = {t.name: to_numpy(t) for t in reply.outputs}
    # PNG grey levels are 8-bit: what the route sees is each pixel rounded to 1/255 of full scale.
    quantized = (np.round(images * 255 / 16) * 16 / 255).astype(np.float32)
    plain = gateway_stub.Infer(pb.InferRequest(route="digits", inputs=[from_numpy("image", quantized)]), timeout=10)
    expected = {t.name: to_numpy(t) for t in plain.outputs}
    np.testing.assert_array_equal(out["label"], expected["label"])
    np.testing.assert_allclose(out["probabilities"], expected["probabilities"], atol=1e-5)
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    assert [n.decode() for n in out["top_labels"][:, 0]] == [names[i] for i in expected["label"].reshape(-1)]

    with pytest.raises(grpc.RpcError) as info:
        bad = np.array([b"not an image"], dtype=object)
        gateway_stub.Infer(pb.InferRequest(route="digits_png", inputs=[from_numpy("png", bad)]), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "inputs[png][0]" in info.value.details()
