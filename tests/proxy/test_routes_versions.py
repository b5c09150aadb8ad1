"""Cache keys name the versions that answer (``Route.answer_key_part``), and answers of others are not stored."""

from __future__ import annotations

from switchyard.proxy.lifecycle.context import CallContext
from switchyard.proxy.routes.base import Route
from switchyard.proxy.routes.schema import RouteConfig
from switchyard.v1 import gateway_pb2 as pb


class _Fixed(Route):
    def __init__(self, versions: tuple[tuple[str, str], ...]) -> None:
        super().__init__(RouteConfig(name="r", model="m", cache={"ttl_s": 60}))
        self.versions = versions

    async def infer(self, request: pb.InferRequest, ctx: CallContext) -> pb.InferResponse:
        raise NotImplementedError


def test_a_new_latest_version_changes_the_key_of_a_request_that_pins_none() -> None:
    request = pb.InferRequest(route="r")
    assert _Fixed((("m", "1"),)).answer_key_part(request) != _Fixed((("m", "2"),)).answer_key_part(request)


def test_a_pin_to_the_version_that_is_latest_shares_its_key() -> None:
    route = _Fixed((("m", "2"),))
    assert route.answer_key_part(pb.InferRequest(route="r", model_versions={"m": "2"})) == route.answer_key_part(
        pb.InferRequest(route="r")
    )
    assert route.answer_key_part(pb.InferRequest(route="r", model_versions={"m": "1"})) != route.answer_key_part(
        pb.InferRequest(route="r")
    )


def test_an_answer_from_another_version_than_the_key_names_is_not_stored() -> None:
    route = _Fixed((("m", "2"),))
    request = pb.InferRequest(route="r")
    assert route.answer_matches_key(request, pb.InferResponse(models=[pb.ModelRef(name="m", version="2")]))
    assert not route.answer_matches_key(request, pb.InferResponse(models=[pb.ModelRef(name="m", version="1")]))
    pinned = pb.InferRequest(route="r", model_versions={"m": "1"})
    assert route.answer_matches_key(pinned, pb.InferResponse(models=[pb.ModelRef(name="m", version="1")]))
