"""End to end through the gateway on real Triton: answers equal onnxruntime on the same ONNX file."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort

from switchyard.models.datasets import digits_split, wine_split
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc
from switchyard.v1.tensors import from_numpy, to_numpy

BATCH = 64


def _infer(stub: gateway_pb2_grpc.GatewayStub, route: str, name: str, array: np.ndarray) -> dict[str, np.ndarray]:
    reply = stub.Infer(pb.InferRequest(route=route, inputs=[from_numpy(name, array)]), timeout=10)
    assert reply.route == route
    return {t.name: to_numpy(t) for t in reply.outputs}


def test_heldout_digits_match_onnxruntime(gateway_stub: gateway_pb2_grpc.GatewayStub, model_repository: Path) -> None:
    _, x_test, _, y_test = digits_split()
    session = ort.InferenceSession(str(model_repository / "digits_logreg" / "1" / "model.onnx"))
    labels, probabilities = [], []
    for start in range(0, len(x_test), BATCH):
        out = _infer(gateway_stub, "digits", "image", x_test[start : start + BATCH])
        labels.append(out["label"].reshape(-1))
        probabilities.append(out["probabilities"])
    got_labels = np.concatenate(labels)
    got_probabilities = np.concatenate(probabilities)
    ref_labels, ref_probabilities = session.run(["label", "probabilities"], {"image": x_test})
    np.testing.assert_array_equal(got_labels, ref_labels.reshape(-1))
    np.testing.assert_allclose(got_probabilities, ref_probabilities, atol=1e-6, rtol=0)
    accuracy = float((got_labels == y_test).mean())
    print(f"\ndigits held-out accuracy through the gateway: {accuracy:.4f} on {len(y_test)} images")
    assert accuracy > 0.9


def test_preprocessing_route_matches_plain_route(gateway_stub: gateway_pb2_grpc.GatewayStub) -> None:
    _, x_test, _, _ = digits_split()
    images = x_test[:32]
    plain = _infer(gateway_stub, "digits", "image", images)
    processed = _infer(gateway_stub, "digits_8x8", "image", images.reshape(-1, 8, 8).astype(np.uint8))
    np.testing.assert_allclose(processed["probabilities"], plain["probabilities"], atol=1e-6)
    order = np.argsort(-plain["probabilities"], axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(processed["top_indices"], order)
    np.testing.assert_allclose(processed["top_scores"], np.take_along_axis(plain["probabilities"], order, axis=1))


def test_postprocessing_clip_and_output_subset(
    gateway_stub: gateway_pb2_grpc.GatewayStub, model_repository: Path
) -> None:
    data = wine_split()
    features = data.X_test[:16]
    # Far-off features push the linear regressor below zero; the route clips at 0.
    extreme = np.vstack([features, -50 * np.abs(features[:4])]).astype(np.float32)
    out = _infer(gateway_stub, "wine_alcohol", "features", extreme)
    session = ort.InferenceSession(str(model_repository / "wine_alcohol_regressor" / "1" / "model.onnx"))
    (raw,) = session.run(None, {"features": extreme})
    assert (raw < 0).any(), "test data should include a negative raw prediction"
    np.testing.assert_allclose(out["alcohol"], np.clip(raw, 0, None), atol=1e-5)

    reply = gateway_stub.Infer(
        pb.InferRequest(route="wine", inputs=[from_numpy("features", features)], outputs=["label"]), timeout=10
    )
    assert [t.name for t in reply.outputs] == ["label"]


def test_list_and_get_routes(gateway_stub: gateway_pb2_grpc.GatewayStub) -> None:
    routes = gateway_stub.ListRoutes(pb.ListRoutesRequest(), timeout=5).routes
    assert [r.name for r in routes] == sorted(r.name for r in routes)
    digits = gateway_stub.GetRoute(pb.GetRouteRequest(name="digits"), timeout=5)
    assert digits.kind == pb.ROUTE_KIND_SINGLE
    assert [(s.name, s.datatype, list(s.shape)) for s in digits.inputs] == [("image", "FP32", [-1, 64])]
    assert {s.name for s in digits.outputs} == {"label", "probabilities"}
    assert [m.name for m in digits.models] == ["digits_logreg"]
    assert digits.max_batch_size == 64
    try:
        gateway_stub.GetRoute(pb.GetRouteRequest(name="missing"), timeout=5)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.NOT_FOUND
        assert "missing" in (exc.details() or "")
    else:
        raise AssertionError("GetRoute of an unknown route succeeded")


def test_version_pin_and_unknown_version(gateway_stub: gateway_pb2_grpc.GatewayStub) -> None:
    _, x_test, _, _ = digits_split()
    request = pb.InferRequest(
        route="digits", inputs=[from_numpy("image", x_test[:2])], model_versions={"digits_logreg": "1"}
    )
    reply = gateway_stub.Infer(request, timeout=10)
    assert [(m.name, m.version) for m in reply.models] == [("digits_logreg", "1")]
    request.model_versions["digits_logreg"] = "7"
    try:
        gateway_stub.Infer(request, timeout=10)
    except grpc.RpcError as exc:
        # Triton's own message is kept and the model is named.
        assert exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INVALID_ARGUMENT)
        assert "digits_logreg" in (exc.details() or "")
    else:
        raise AssertionError("a pin to a version that does not exist succeeded")


def test_stream_pipelines_requests_and_reports_errors_per_request(gateway_stub: gateway_pb2_grpc.GatewayStub) -> None:
    _, x_test, _, _ = digits_split()

    def requests():  # type: ignore[no-untyped-def]
        for i in range(100):
            rows = x_test[i : i + 1] if i % 10 else x_test[i : i + 1, :63]  # every 10th is malformed
            yield pb.InferRequest(route="digits", request_id=f"r{i}", inputs=[from_numpy("image", rows)])

    answers = {m.request_id: m for m in gateway_stub.InferStream(requests(), timeout=30)}
    assert len(answers) == 100
    for i in range(100):
        message = answers[f"r{i}"]
        if i % 10:
            assert message.WhichOneof("result") == "response"
            assert to_numpy(message.response.outputs[0]).shape[0] == 1
        else:
            assert message.WhichOneof("result") == "error"
            assert message.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
            assert "inputs[image].shape[1]" in message.error.message
