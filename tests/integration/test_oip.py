"""The Open Inference Protocol front against a real Triton: tritonclient (sync, asyncio, streams) calls routes.

Every answer is compared with what ``switchyard.v1.Gateway/Infer`` gives for
the same request; the bad-input table of ``test_gateway_errors`` runs through
``ModelInfer`` with the same codes and messages (fields named as the OIP
request names them); the prediction cache, gateway micro-batching, API keys
and the metrics apply to the front as to the gateway's own RPCs.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.grpc.aio as triton_aio
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY
from tritonclient.grpc import service_pb2 as spb
from tritonclient.grpc import service_pb2_grpc
from tritonclient.utils import InferenceServerException

from switchyard.models import BUNDLED_ROUTES
from switchyard.models.datasets import digits_png, digits_split, wine_split
from switchyard.proxy.routes.schema import load_routes, parse_routes
from switchyard.proxy.settings import GatewaySettings
from switchyard.server.local_triton import LocalTriton
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc
from switchyard.v1.channel import channel_options
from switchyard.v1.tensors import from_numpy, to_numpy

from .gateway_thread import GatewayThread
from .test_gateway_errors import CASES, req
from .triton_stats import model_counts

S = grpc.StatusCode
TIMEOUT = 20.0
DIGITS = digits_split()
WINE = wine_split()
HELD_OUT = np.ascontiguousarray(DIGITS.X_test[:16])


def inputs_of(route: str, rows: int = 4) -> dict[str, np.ndarray]:
    """A request's inputs for one of the bundled routes: real held-out rows."""
    if route.startswith("wine"):
        return {"features": np.ascontiguousarray(WINE.X_test[:rows])}
    if route == "digits_8x8":
        return {"image": HELD_OUT[:rows].astype(np.uint8).reshape(rows, 8, 8)}
    if route == "digits_png":
        return {"png": np.array(digits_png(HELD_OUT[:rows]), dtype=np.object_)}
    return {"image": HELD_OUT[:rows]}


def triton_inputs(arrays: dict[str, np.ndarray], module: Any = triton_grpc) -> list[Any]:
    inputs = []
    for name, array in arrays.items():
        datatype = "BYTES" if array.dtype == np.object_ else from_numpy(name, array).datatype
        tensor = module.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def gateway_outputs(stub: gateway_pb2_grpc.GatewayStub, route: str, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    request = pb.InferRequest(route=route, inputs=[from_numpy(n, a) for n, a in arrays.items()])
    return {t.name: to_numpy(t) for t in stub.Infer(request, timeout=TIMEOUT).outputs}


def assert_same(got: dict[str, Any], want: dict[str, Any]) -> None:
    """The same outputs; floats to the last bits that Triton's dynamic batching may change (rows batched with others
    go through another matrix product)."""
    assert list(got) == list(want)
    for name, array in want.items():
        assert got[name].dtype == array.dtype and got[name].shape == array.shape, name
        if array.dtype.kind == "f":
            np.testing.assert_allclose(got[name], array, rtol=1e-5, atol=1e-7, err_msg=name)
        else:
            np.testing.assert_array_equal(got[name], array, err_msg=name)


def result_outputs(result: Any, names: list[str]) -> dict[str, Any]:
    return {name: result.as_numpy(name) for name in names}


@pytest.fixture(scope="module")
def oip_client(gateway_thread: GatewayThread) -> Iterator[triton_grpc.InferenceServerClient]:
    client = triton_grpc.InferenceServerClient(gateway_thread.target)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="module")
def oip_stub(gateway_thread: GatewayThread) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    """The generated stub on its own channel: requests built field by field (typed contents, bad input)."""
    with grpc.insecure_channel(gateway_thread.target, options=channel_options()) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


ROUTES = ["digits", "digits_8x8", "wine", "wine_alcohol_by_cultivar", "wine_profile", "digits_png"]


@pytest.mark.parametrize("route", ROUTES)
def test_tritonclient_gets_the_same_outputs_as_gateway_infer(
    oip_client: triton_grpc.InferenceServerClient, gateway_stub: gateway_pb2_grpc.GatewayStub, route: str
) -> None:
    arrays = inputs_of(route)
    want = gateway_outputs(gateway_stub, route, arrays)
    result = oip_client.infer(route, triton_inputs(arrays), request_id="oip-1", client_timeout=TIMEOUT)
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == (route, "1", "oip-1")
    assert_same(result_outputs(result, [o.name for o in response.outputs]), want)
    assert response.parameters["models"].string_param  # the models that ran, as name=version


def test_held_out_digits_are_recognised_through_the_front(oip_client: triton_grpc.InferenceServerClient) -> None:
    result = oip_client.infer("digits", triton_inputs({"image": HELD_OUT}), client_timeout=TIMEOUT)
    labels = result.as_numpy("label").ravel()
    assert (labels == DIGITS.y_test[: len(HELD_OUT)]).mean() >= 0.9, labels


def test_outputs_asked_for_and_tritons_classification(
    oip_client: triton_grpc.InferenceServerClient, gateway_stub: gateway_pb2_grpc.GatewayStub
) -> None:
    arrays = inputs_of("digits")
    outputs = [triton_grpc.InferRequestedOutput("probabilities", class_count=3)]
    result = oip_client.infer("digits", triton_inputs(arrays), outputs=outputs, client_timeout=TIMEOUT)
    top = result.as_numpy("probabilities")
    assert top.shape == (4, 3) and [o.name for o in result.get_response().outputs] == ["probabilities"]
    probabilities = gateway_outputs(gateway_stub, "digits", arrays)["probabilities"]
    for row, classes in zip(probabilities, top, strict=True):
        best = np.argsort(-row, kind="stable")[:3]
        assert [c.decode() for c in classes] == [f"{row[i]:f}:{i}" for i in best]


def test_typed_contents_answer_as_raw_contents_do(
    oip_stub: service_pb2_grpc.GRPCInferenceServiceStub, gateway_stub: gateway_pb2_grpc.GatewayStub
) -> None:
    features = inputs_of("wine")["features"]
    request = spb.ModelInferRequest(model_name="wine", id="typed")
    request.inputs.add(name="features", datatype="FP32", shape=features.shape).contents.fp32_contents.extend(
        features.ravel().tolist()
    )
    response = oip_stub.ModelInfer(request, timeout=TIMEOUT)
    got = {
        o.name: to_numpy(pb.Tensor(datatype=o.datatype, shape=o.shape, raw_data=raw))
        for o, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    }
    assert_same(got, gateway_outputs(gateway_stub, "wine", {"features": features}))
    del request.inputs[0].contents.fp32_contents[7:]
    with pytest.raises(grpc.RpcError) as info:
        oip_stub.ModelInfer(request, timeout=TIMEOUT)
    assert info.value.code() == S.INVALID_ARGUMENT
    assert info.value.details() == "inputs[features].contents: has 28 bytes, shape [4, 12] of FP32 needs 192"


async def test_asyncio_client_and_its_stream(
    gateway_thread: GatewayThread, gateway_stub: gateway_pb2_grpc.GatewayStub
) -> None:
    routes = ["digits", "wine", "digits_8x8"]
    want = {route: gateway_outputs(gateway_stub, route, inputs_of(route)) for route in routes}
    client = triton_aio.InferenceServerClient(gateway_thread.target)
    try:
        assert await client.is_server_live() and await client.is_model_ready("digits")
        answers = await asyncio.gather(
            *(client.infer(r, triton_inputs(inputs_of(r), triton_aio), client_timeout=TIMEOUT) for r in routes)
        )
        for route, result in zip(routes, answers, strict=True):
            assert_same(result_outputs(result, list(want[route])), want[route])

        async def requests() -> Any:
            for i in range(30):
                route = routes[i % len(routes)]
                yield {"model_name": route, "inputs": triton_inputs(inputs_of(route), triton_aio), "request_id": str(i)}
            # A bad request travels in-band; the stream goes on.
            yield {"model_name": "nope", "inputs": triton_inputs(inputs_of("digits"), triton_aio), "request_id": "bad"}

        seen: dict[str, Any] = {}
        async for result, error in client.stream_infer(requests(), stream_timeout=TIMEOUT):
            seen["bad" if error is not None else result.get_response().id] = error or result
            if len(seen) == 31:
                break  # every request answered; the stream stays open until the client leaves it
    finally:
        await client.close()
    assert str(seen["bad"].message()) == "model_name: no route named 'nope'"
    for i in range(30):
        route = routes[i % len(routes)]
        assert_same(result_outputs(seen[str(i)], list(want[route])), want[route])


def test_sync_stream_pipelines_requests_with_errors_in_band(
    gateway_thread: GatewayThread, gateway_stub: gateway_pb2_grpc.GatewayStub
) -> None:
    want = gateway_outputs(gateway_stub, "digits", {"image": HELD_OUT[:1]})
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client = triton_grpc.InferenceServerClient(gateway_thread.target)
    try:
        client.start_stream(callback=lambda result, error: answers.put((result, error)), stream_timeout=TIMEOUT)
        for i in range(100):
            image = HELD_OUT[:1] if i != 50 else HELD_OUT[:1, :63]  # one request with a wrong shape
            client.async_stream_infer("digits", triton_inputs({"image": image}), request_id=f"s{i}")
        results = [answers.get(timeout=TIMEOUT) for _ in range(100)]
        client.stop_stream()
    finally:
        client.close()
    errors = [error for _, error in results if error is not None]
    assert [e.message() for e in errors] == ["inputs[image].shape[1]: expected 64, got 63 (route shape [-1, 64])"], (
        errors
    )
    answered = {result.get_response().id: result for result, error in results if error is None}
    assert set(answered) == {f"s{i}" for i in range(100)} - {"s50"}
    for result in answered.values():
        assert result.get_response().parameters["triton_final_response"].bool_param
        assert_same(result_outputs(result, list(want)), want)


def test_stream_errors_carry_the_request_id_and_the_status_name(
    oip_stub: service_pb2_grpc.GRPCInferenceServiceStub,
) -> None:
    good = spb.ModelInferRequest(model_name="digits", id="good")
    good.inputs.add(name="image", datatype="FP32", shape=[1, 64])
    good.raw_input_contents.append(HELD_OUT[:1].tobytes())
    bad = spb.ModelInferRequest(model_name="digits", id="bad")
    bad.CopyFrom(good)
    bad.id = "bad"
    bad.inputs[0].datatype = "FP64"
    messages = list(oip_stub.ModelStreamInfer(iter([good, bad]), timeout=TIMEOUT))
    by_id = {m.infer_response.id: m for m in messages}
    assert by_id["good"].error_message == "" and by_id["good"].infer_response.model_name == "digits"
    assert by_id["bad"].error_message == "inputs[image].datatype: expected FP32, got FP64"
    assert by_id["bad"].infer_response.parameters["grpc_status"].string_param == "INVALID_ARGUMENT"


def to_oip(request: pb.InferRequest) -> spb.ModelInferRequest:
    """The same request in the Open Inference Protocol, data in raw_input_contents."""
    message = spb.ModelInferRequest(model_name=request.route, id=request.request_id)
    for tensor in request.inputs:
        message.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        message.raw_input_contents.append(tensor.raw_data)
    for name in request.outputs:
        message.outputs.add(name=name)
    if request.model_versions:
        pins = ",".join(f"{model}={version}" for model, version in request.model_versions.items())
        message.parameters["model_versions"].string_param = pins
    return message


def oip_field(field: str) -> str:
    """What the front calls a field that the gateway's messages name."""
    if field.startswith("model_versions["):
        return "parameters[model_versions]" + field.removeprefix("model_versions")
    renamed = {"route": "model_name", "inputs[image].raw_data": "raw_input_contents[0]"}
    return renamed.get(field, field + ".name" if field == "outputs[0]" else field)


@pytest.mark.parametrize(("case", "request_", "code", "field"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_table_has_the_gateways_codes_and_messages(
    oip_stub: service_pb2_grpc.GRPCInferenceServiceStub,
    gateway_stub: gateway_pb2_grpc.GatewayStub,
    case: str,
    request_: pb.InferRequest,
    code: grpc.StatusCode,
    field: str,
) -> None:
    with pytest.raises(grpc.RpcError) as gateway:
        gateway_stub.Infer(request_, timeout=10)
    with pytest.raises(grpc.RpcError) as front:
        oip_stub.ModelInfer(to_oip(request_), timeout=10)
    assert front.value.code() == gateway.value.code() == code
    reason = (gateway.value.details() or "").removeprefix(field)
    assert front.value.details() == oip_field(field) + reason
    assert oip_stub.ModelInfer(to_oip(req()), timeout=10).outputs  # still serving


def test_transport_limit_and_deadline_as_the_gateway(
    gateway_thread: GatewayThread, oip_stub: service_pb2_grpc.GRPCInferenceServiceStub
) -> None:
    limit = gateway_thread.gateway.settings.max_message_bytes
    big = np.zeros((1, limit // 4 + 16), np.float32)
    with pytest.raises(grpc.RpcError) as info:
        oip_stub.ModelInfer(to_oip(req(inputs=[from_numpy("image", big)])), timeout=10)
    assert info.value.code() == S.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.RpcError) as info:
        oip_stub.ModelInfer(to_oip(req()), timeout=0.0005)
    assert info.value.code() == S.DEADLINE_EXCEEDED


def test_versions_and_unknown_routes(oip_client: triton_grpc.InferenceServerClient) -> None:
    inputs = triton_inputs(inputs_of("digits"))
    assert oip_client.infer("digits", inputs, model_version="1", client_timeout=TIMEOUT).as_numpy("label") is not None
    for name, version, status, message in [
        ("digits", "2", S.NOT_FOUND, "model_version: route 'digits' has no version 2 (its only version is 1)"),
        ("digits", "two", S.INVALID_ARGUMENT, "model_version: must be a positive integer, got 'two'"),
        ("nope", "", S.NOT_FOUND, "model_name: no route named 'nope'"),
    ]:
        with pytest.raises(InferenceServerException) as info:
            oip_client.infer(name, inputs, model_version=version, client_timeout=TIMEOUT)
        assert (info.value.status(), info.value.message()) == (str(status), message)
    assert not oip_client.is_model_ready("nope") and not oip_client.is_model_ready("digits", "2")


def test_routes_are_models_with_metadata_and_configuration(
    oip_client: triton_grpc.InferenceServerClient, gateway_stub: gateway_pb2_grpc.GatewayStub
) -> None:
    assert oip_client.is_server_live() and oip_client.is_server_ready()
    server = oip_client.get_server_metadata(as_json=True)
    assert server["name"] == "switchyard" and "classification" in server["extensions"]
    metadata = oip_client.get_model_metadata("digits_8x8", as_json=True)
    route = gateway_stub.GetRoute(pb.GetRouteRequest(name="digits_8x8"), timeout=TIMEOUT)

    def specs(tensors: Any) -> list[dict[str, Any]]:
        return [{"name": t.name, "datatype": t.datatype, "shape": [str(d) for d in t.shape]} for t in tensors]

    assert metadata == {
        "name": "digits_8x8",
        "versions": ["1"],
        "platform": "switchyard_single",
        "inputs": [{"name": "image", "datatype": "UINT8", "shape": ["-1", "8", "8"]}],
        "outputs": specs(route.outputs),
    }
    assert {"name": "top_scores", "datatype": "FP32", "shape": ["-1", "3"]} in metadata["outputs"]
    assert oip_client.get_model_metadata("wine_profile", as_json=True)["platform"] == "switchyard_parallel"
    config = oip_client.get_model_config("digits", as_json=True)["config"]
    assert config["max_batch_size"] == 64
    assert config["input"] == [{"name": "image", "data_type": "TYPE_FP32", "dims": ["64"]}]
    assert config["parameters"]["models"]["string_value"] == "digits_logreg"
    with pytest.raises(InferenceServerException) as info:
        oip_client.get_model_metadata("nope")
    assert (info.value.status(), info.value.message()) == ("StatusCode.NOT_FOUND", "name: no route named 'nope'")


@pytest.mark.parametrize(
    ("call", "method"),
    [
        (lambda c: c.get_inference_statistics("digits"), "ModelStatistics"),
        (lambda c: c.get_model_repository_index(), "RepositoryIndex"),
        (lambda c: c.load_model("digits"), "RepositoryModelLoad"),
        (lambda c: c.unload_model("digits"), "RepositoryModelUnload"),
        (lambda c: c.register_system_shared_memory("r", "/r", 64), "SystemSharedMemoryRegister"),
        (lambda c: c.get_cuda_shared_memory_status(), "CudaSharedMemoryStatus"),
        (lambda c: c.get_trace_settings(), "TraceSetting"),
        (lambda c: c.get_log_settings(), "LogSettings"),
    ],
)
def test_unsupported_methods_answer_unimplemented_saying_what_is_supported(
    oip_client: triton_grpc.InferenceServerClient, call: Any, method: str
) -> None:
    with pytest.raises(InferenceServerException) as info:
        call(oip_client)
    assert info.value.status() == "StatusCode.UNIMPLEMENTED"
    assert info.value.message().startswith(f"{method} is not supported by Switchyard's Open Inference Protocol front")
    assert "supported: ServerLive, ServerReady, ServerMetadata, ModelReady, ModelMetadata" in info.value.message()


def test_the_cache_applies_and_is_reported(oip_client: triton_grpc.InferenceServerClient) -> None:
    image = HELD_OUT[5:7] + 0.25  # inputs no other test sends
    first = oip_client.infer("digits_cached", triton_inputs({"image": image}), client_timeout=TIMEOUT)
    second = oip_client.infer("digits_cached", triton_inputs({"image": image}), client_timeout=TIMEOUT)
    bypass = oip_client.infer(
        "digits_cached", triton_inputs({"image": image}), parameters={"bypass_cache": True}, client_timeout=TIMEOUT
    )
    assert [r.get_response().parameters["cached"].bool_param for r in (first, second, bypass)] == [False, True, False]
    np.testing.assert_array_equal(first.as_numpy("probabilities"), second.as_numpy("probabilities"))


def test_requests_are_counted_in_the_gateways_metrics(oip_client: triton_grpc.InferenceServerClient) -> None:
    def served(code: str) -> float:
        return REGISTRY.get_sample_value("switchyard_requests_total", {"route": "wine", "code": code}) or 0.0

    ok, bad = served("OK"), served("INVALID_ARGUMENT")
    oip_client.infer("wine", triton_inputs(inputs_of("wine")), client_timeout=TIMEOUT)
    with pytest.raises(InferenceServerException):
        oip_client.infer("wine", triton_inputs({"features": np.zeros((1, 11), np.float32)}), client_timeout=TIMEOUT)
    assert (served("OK") - ok, served("INVALID_ARGUMENT") - bad) == (1.0, 1.0)


def test_reflection_lists_the_front(gateway_thread: GatewayThread) -> None:
    with grpc.insecure_channel(gateway_thread.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        (answer,) = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {service.name for service in answer.list_services_response.service}
        assert "inference.GRPCInferenceService" in names
        (answer,) = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol="inference.GRPCInferenceService")])
        )
        assert answer.file_descriptor_response.file_descriptor_proto


# -- micro-batching and API keys: gateways of their own --------------------------------------------------------

BATCHING_ROUTES = """
[[routes]]
name = "digits"
model = "digits_logreg"

[[routes]]
name = "digits_batched"
model = "digits_logreg"
batching = { max_delay_ms = 20.0, max_batch = 64 }
"""


@pytest.fixture(scope="module")
def batching_gateway(local_triton: LocalTriton) -> Iterator[GatewayThread]:
    settings = GatewaySettings(triton_url=local_triton.grpc_url, host="127.0.0.1", port=0, metrics_port=None)
    with GatewayThread(settings, parse_routes(BATCHING_ROUTES)) as thread:
        yield thread


def test_micro_batching_applies_to_the_front(batching_gateway: GatewayThread, local_triton: LocalTriton) -> None:
    rows = np.ascontiguousarray(DIGITS.X_test[:64])

    def call_all(stub: service_pb2_grpc.GRPCInferenceServiceStub, route: str) -> list[Any]:
        futures = []
        for i in range(len(rows)):
            request = spb.ModelInferRequest(model_name=route)
            request.inputs.add(name="image", datatype="FP32", shape=[1, 64])
            request.raw_input_contents.append(rows[i : i + 1].tobytes())
            futures.append(stub.ModelInfer.future(request, timeout=30))
        return [f.result() for f in futures]

    with grpc.insecure_channel(batching_gateway.target, options=channel_options()) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        call_all(stub, "digits")  # warm the channel and the model
        plain = call_all(stub, "digits")
        before = model_counts(local_triton.grpc_url, "digits_logreg").requests
        batched = call_all(stub, "digits_batched")
        sent = model_counts(local_triton.grpc_url, "digits_logreg").requests - before
    print(f"\nOIP digits_batched: 64 requests -> {sent} Triton requests")
    assert sent < 64 / 2
    for a, b in zip(plain, batched, strict=True):
        assert b.raw_output_contents[0] == a.raw_output_contents[0]  # the labels
        probabilities = np.frombuffer(b.raw_output_contents[1], "<f4")
        np.testing.assert_allclose(probabilities, np.frombuffer(a.raw_output_contents[1], "<f4"), rtol=1e-5, atol=1e-7)


ALICE = "alice-5b8c1d2e3f4a5b6c7d8e9f0a1b2c3d4e"  # digits only
OPS = "ops-0f1e2d3c4b5a69788796a5b4c3d2e1f0"  # every route


@pytest.fixture(scope="module")
def keyed_gateway(local_triton: LocalTriton, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayThread]:
    keys: Path = tmp_path_factory.mktemp("oip-keys") / "keys.toml"
    keys.write_text(
        f'[keys.alice]\nkey = "{ALICE}"\nroutes = ["digits"]\n\n[keys.ops]\nkey = "{OPS}"\nroutes = ["*"]\n'
    )
    keys.chmod(0o600)
    settings = GatewaySettings(
        triton_url=local_triton.grpc_url, host="127.0.0.1", port=0, metrics_port=None, api_keys_file=keys
    )
    with GatewayThread(settings, load_routes(BUNDLED_ROUTES)) as thread:
        yield thread


def test_api_keys_authorise_routes_by_model_name(keyed_gateway: GatewayThread) -> None:
    client = triton_grpc.InferenceServerClient(keyed_gateway.target)
    alice = {"authorization": f"Bearer {ALICE}"}
    digits, wine = triton_inputs(inputs_of("digits")), triton_inputs(inputs_of("wine"))

    def status(call: Any) -> str:
        with pytest.raises(InferenceServerException) as info:
            call()
        return str(info.value.status())

    try:
        assert client.infer("digits", digits, headers=alice, client_timeout=TIMEOUT).as_numpy("label") is not None
        assert client.is_server_live(headers=alice) and client.is_model_ready("digits", headers=alice)
        assert client.infer("wine", wine, headers={"x-api-key": OPS}, client_timeout=TIMEOUT).as_numpy("label").size
        assert status(lambda: client.infer("wine", wine, headers=alice)) == "StatusCode.PERMISSION_DENIED"
        assert status(lambda: client.get_model_metadata("wine", headers=alice)) == "StatusCode.PERMISSION_DENIED"
        assert status(lambda: client.infer("digits", digits)) == "StatusCode.UNAUTHENTICATED"
        assert status(lambda: client.is_server_live()) == "StatusCode.UNAUTHENTICATED"
        # A stream naming a route the key may not use is refused as Gateway/InferStream is.
        errors: queue.Queue[Any] = queue.Queue()
        client.start_stream(callback=partial(lambda q, result, error: q.put(error), errors), headers=alice)
        client.async_stream_infer("wine", wine)
        error = errors.get(timeout=TIMEOUT)
        client.stop_stream()
        assert "may not use route 'wine'" in str(error)
    finally:
        client.close()
