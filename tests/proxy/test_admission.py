"""Admission control: the process bound, a route's own bound, the messages and the bookkeeping."""

from __future__ import annotations

import grpc
import pytest

from switchyard.proxy.errors import ConfigError, Overloaded
from switchyard.proxy.lifecycle.admission import Admission, Shed
from switchyard.proxy.routes.schema import parse_routes
from switchyard.proxy.settings import GatewaySettings


def test_process_bound_sheds_past_max_and_names_it() -> None:
    admission = Admission(3)
    for route in ("a", "b", "a"):
        admission.admit(route)
    assert admission.inflight() == 3
    with pytest.raises(Shed) as info:
        admission.admit("c")
    assert info.value.reason == "gateway"
    assert info.value.message == "gateway has 3 requests in flight"
    assert info.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert isinstance(info.value, Overloaded)
    # A shed request takes nothing.
    assert admission.inflight() == 3 and admission.inflight("c") == 0


def test_release_frees_a_slot() -> None:
    admission = Admission(1)
    admission.admit("a")
    with pytest.raises(Shed):
        admission.admit("a")
    admission.release("a")
    assert admission.inflight() == 0 and admission.inflight("a") == 0
    admission.admit("b")
    assert admission.inflight("b") == 1


def test_route_bound_applies_to_its_route_only() -> None:
    admission = Admission(10)
    admission.admit("digits", 2)
    admission.admit("digits", 2)
    with pytest.raises(Shed) as info:
        admission.admit("digits", 2)
    assert info.value.reason == "route"
    assert info.value.message == "route 'digits' has 2 requests in flight"
    admission.admit("wine", 2)  # another route is not affected
    admission.admit("wine")
    assert admission.inflight() == 4
    assert admission.inflight("digits") == 2 and admission.inflight("wine") == 2


def test_route_bound_is_checked_before_the_process_bound() -> None:
    admission = Admission(2)
    admission.admit("digits", 2)
    admission.admit("digits", 2)
    with pytest.raises(Shed) as info:
        admission.admit("digits", 2)
    assert info.value.reason == "route"
    with pytest.raises(Shed) as info:
        admission.admit("wine", 5)
    assert info.value.reason == "gateway"


def test_counts_return_to_zero_after_many_cycles() -> None:
    admission = Admission(5)
    held: list[str] = []
    shed = 0
    for i in range(1000):
        route = f"r{i % 3}"
        try:
            admission.admit(route, 2)
            held.append(route)
        except Shed:
            shed += 1
        if i % 8 == 7:
            while held:
                admission.release(held.pop())
    while held:
        admission.release(held.pop())
    assert shed > 0
    assert admission.inflight() == 0
    assert all(admission.inflight(f"r{i}") == 0 for i in range(3))


def test_message_of_a_bound_of_one() -> None:
    admission = Admission(1)
    admission.admit("digits", 1)
    with pytest.raises(Shed, match=r"^route 'digits' has 1 request in flight$"):
        admission.admit("digits", 1)
    with pytest.raises(Shed, match=r"^gateway has 1 request in flight$"):
        admission.admit("wine")


def test_release_without_admit_is_a_bug() -> None:
    admission = Admission(1)
    with pytest.raises(RuntimeError, match="release without admit"):
        admission.release("a")


def test_bound_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Admission(0)


def test_settings_default_and_bounds() -> None:
    assert GatewaySettings().max_inflight == 512
    assert GatewaySettings(max_inflight=8).max_inflight == 8
    with pytest.raises(ValueError):
        GatewaySettings(max_inflight=0)


def test_route_max_inflight_in_the_routes_file() -> None:
    routes = parse_routes('[[routes]]\nname = "digits"\nmodel = "digits_logreg"\nmax_inflight = 64\n')
    assert routes.routes[0].max_inflight == 64
    routes = parse_routes(
        '[[routes]]\nname = "p"\nkind = "progressive"\nmax_inflight = 3\n'
        '[[routes.stages]]\nname = "a"\nmodel = "m1"\n[[routes.stages]]\nname = "b"\nmodel = "m2"\n'
    )
    assert routes.routes[0].max_inflight == 3
    assert parse_routes('[[routes]]\nname = "d"\nmodel = "m"\n').routes[0].max_inflight is None
    with pytest.raises(ConfigError, match=r"routes\[digits\]\.max_inflight"):
        parse_routes('[[routes]]\nname = "digits"\nmodel = "digits_logreg"\nmax_inflight = 0\n')
