"""Reloading one gateway process (``proxy.reloading``) in front of the session's Triton: swaps, refusals, keys."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from switchyard.proxy.routes.schema import load_routes
from switchyard.proxy.settings import GatewaySettings
from switchyard.server.local_triton import LocalTriton
from switchyard.v1 import admin_pb2, admin_pb2_grpc, gateway_pb2_grpc
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1.tensors import from_numpy

from .gateway_thread import GatewayThread

DIGITS = np.random.default_rng(0).integers(0, 17, size=(2, 64)).astype(np.float32)
FIRST = """
[[routes]]
name = "digits"
model = "digits_logreg"

[[routes]]
name = "leaving"
model = "digits_logreg"
"""
SECOND = """
[[routes]]
name = "digits"
model = "digits_logreg"
cache = { ttl_s = 60 }

[[routes]]
name = "arriving"
model = "digits_mlp"
"""
ADMIN_KEY = "admin-4f2a9c7e1b3d5f60718293a4b5c6d7e8"
DIGITS_KEY = "digits-0a1b2c3d4e5f60718293a4b5c6d7e8f9"


@pytest.fixture
def gateway(local_triton: LocalTriton, tmp_path: Path) -> Iterator[GatewayThread]:
    routes = tmp_path / "routes.toml"
    routes.write_text(FIRST)
    keys = tmp_path / "keys.toml"
    keys.write_text(
        f'[keys.admin]\nkey = "{ADMIN_KEY}"\nroutes = ["*"]\n\n'
        f'[keys.digits]\nkey = "{DIGITS_KEY}"\nroutes = ["digits"]\n'
    )
    keys.chmod(0o600)
    settings = GatewaySettings(
        triton_url=local_triton.grpc_url,
        host="127.0.0.1",
        port=0,
        metrics_port=None,
        health_interval_s=0.5,
        routes_file=routes,
        api_keys_file=keys,
    )
    with GatewayThread(settings, load_routes(routes)) as thread:
        yield thread


def _call(channel: grpc.Channel, route: str) -> pb.InferResponse:
    request = pb.InferRequest(route=route, inputs=[from_numpy("image", DIGITS)])
    reply: pb.InferResponse = gateway_pb2_grpc.GatewayStub(channel).Infer(
        request, timeout=10, metadata=(("x-api-key", ADMIN_KEY),)
    )
    return reply


def _reload(channel: grpc.Channel, key: str = ADMIN_KEY) -> admin_pb2.ReloadResponse:
    reply: admin_pb2.ReloadResponse = admin_pb2_grpc.AdminStub(channel).Reload(
        admin_pb2.ReloadRequest(), timeout=120, metadata=(("x-api-key", key),)
    )
    return reply


def test_a_reload_swaps_the_routes_and_only_an_all_routes_key_may_ask(gateway: GatewayThread) -> None:
    routes_file = gateway.gateway.settings.routes_file
    assert routes_file is not None
    with grpc.insecure_channel(gateway.target) as channel:
        assert _call(channel, "leaving").outputs
        routes_file.write_text(SECOND)
        with pytest.raises(grpc.RpcError) as info:
            _reload(channel, DIGITS_KEY)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert _call(channel, "leaving").outputs  # nothing changed

        reply = _reload(channel)
        assert (list(reply.added), list(reply.removed), list(reply.changed)) == (["arriving"], ["leaving"], ["digits"])
        assert list(reply.routes) == ["arriving", "digits"]
        assert reply.model_versions["digits_mlp"] == "1"
        with pytest.raises(grpc.RpcError) as info:
            _call(channel, "leaving")
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="route/leaving"))
        assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert _call(channel, "arriving").models[0].name == "digits_mlp"
        _call(channel, "digits")
        assert _call(channel, "digits").cached  # the new definition: cached


def test_calls_on_a_removed_route_finish_or_are_not_found_and_nothing_else(gateway: GatewayThread) -> None:
    """Calls in flight during the swap finish on the old route; those after it are NOT_FOUND; none fails otherwise."""
    routes_file = gateway.gateway.settings.routes_file
    assert routes_file is not None
    outcomes: Counter[str] = Counter()
    stop = threading.Event()

    def calls() -> None:
        with grpc.insecure_channel(gateway.target) as channel:
            while not stop.is_set():
                try:
                    _call(channel, "leaving")
                    outcomes["OK"] += 1
                except grpc.RpcError as exc:
                    outcomes[exc.code().name] += 1

    threads = [threading.Thread(target=calls) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        with grpc.insecure_channel(gateway.target) as channel:
            while outcomes["OK"] < 20:
                stop.wait(0.05)
            routes_file.write_text(SECOND)
            _reload(channel)
            before = outcomes["NOT_FOUND"]
            while outcomes["NOT_FOUND"] < before + 20:
                stop.wait(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    print(f"\ncalls on a route removed by a reload: {dict(outcomes)}")
    assert set(outcomes) == {"OK", "NOT_FOUND"}, outcomes


@pytest.mark.parametrize(
    ("text", "code", "message"),
    [
        ("[[routes]]\nname = 'x'\nmodel = 'digits_logreg'\ncolour = 1\n", "INVALID_ARGUMENT", "routes[x].colour"),
        ("routes = [", "INVALID_ARGUMENT", "not valid TOML"),
        ("[[routes]]\nname = 'x'\nmodel = 'digits_logreg'\nversion = '9'\n", "INVALID_ARGUMENT", "routes[x].version"),
        ("[[routes]]\nname = 'x'\nmodel = 'no_such_model'\n", "FAILED_PRECONDITION", "routes[x].model"),
    ],
)
def test_a_refused_reload_names_the_field_and_keeps_the_routes(
    gateway: GatewayThread, text: str, code: str, message: str
) -> None:
    routes_file = gateway.gateway.settings.routes_file
    assert routes_file is not None
    routes_file.write_text(text)
    with grpc.insecure_channel(gateway.target) as channel:
        with pytest.raises(grpc.RpcError) as info:
            _reload(channel)
        assert info.value.code().name == code
        assert message in (info.value.details() or "")
        assert _call(channel, "leaving").outputs
