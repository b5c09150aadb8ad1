"""Wrong route configurations are rejected at start-up, checked against Triton's real model metadata."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from switchyard.client.cli import main as cli_main
from switchyard.proxy.backend.triton import TritonBackend
from switchyard.proxy.errors import ConfigError
from switchyard.proxy.routes.schema import parse_routes
from switchyard.proxy.routes.table import RouteTable, build_routes
from switchyard.server.local_triton import LocalTriton


def build(triton: LocalTriton, text: str) -> RouteTable:
    async def go() -> RouteTable:
        backend = TritonBackend(triton.grpc_url, max_message_bytes=4 * 1024 * 1024)
        try:
            return await build_routes(parse_routes(text, "routes.toml"), backend)
        finally:
            await backend.close()

    return asyncio.run(go())


SERIAL = """
[[routes]]
name = "r"
kind = "serial"
[[routes.steps]]
name = "classify"
model = "wine_classifier"
outputs = { label = "cultivar" }
"""

CASES = [
    (
        "unknown model",
        SERIAL + '[[routes.steps]]\nname = "next"\nmodel = "no_such_model"\n',
        "routes[r].steps[1].model:",
    ),
    (
        "mapping that does not type-check",
        SERIAL + '[[routes.steps]]\nname = "digits"\nmodel = "digits_logreg"\ninputs = { image = "features" }\n',
        "routes[r].steps[1].inputs.image: model 'digits_logreg' needs image FP32[-1, 64]",
    ),
    (
        "a step reading a tensor produced later (a cycle)",
        """
[[routes]]
name = "r"
kind = "serial"
[[routes.steps]]
name = "first"
model = "wine_alcohol_regressor"
inputs = { features = "from_second" }
[[routes.steps]]
name = "second"
model = "wine_classifier"
outputs = { probabilities = "from_second" }
""",
        "routes[r].steps[0].inputs.features: reads 'from_second', which step 'second' produces",
    ),
    (
        "unknown model input in a mapping",
        SERIAL.replace('outputs = { label = "cultivar" }', 'inputs = { pixels = "features" }'),
        "routes[r].steps[0].inputs.pixels: model 'wine_classifier' has no input 'pixels'",
    ),
    (
        "select on a float tensor by class",
        SERIAL
        + '[[routes.steps]]\nname = "pick"\n'
        + 'select = { tensor = "probabilities", models = { "0" = "wine_classifier" } }\n',
        "routes[r].steps[1].select.tensor: probabilities FP32[-1, 3] must be one integer per row",
    ),
    (
        "select between models with different signatures",
        SERIAL
        + '[[routes.steps]]\nname = "pick"\nselect = { tensor = "cultivar", models = '
        + '{ "0" = "wine_classifier", "1" = "wine_alcohol_regressor" } }\n',
        "routes[r].steps[1].select: models 'wine_classifier' and 'wine_alcohol_regressor' differ",
    ),
    (
        "unknown op",
        SERIAL + '[[routes.steps.post]]\nop = "sharpen"\ntensor = "cultivar"\n',
        "routes[r].steps[0].post[0].op: unknown op 'sharpen'",
    ),
    (
        "bad op parameter",
        SERIAL + '[[routes.steps.post]]\nop = "topk"\ntensor = "probabilities"\nk = 0\n',
        "routes[r].steps[0].post[0].k",
    ),
    (
        "op on a tensor of the wrong type",
        SERIAL + '[[routes.steps.post]]\nop = "softmax"\ntensor = "cultivar"\n',
        "routes[r].steps[0].post[0] (softmax): tensor 'cultivar' is INT64",
    ),
    (
        "route output that does not exist",
        SERIAL.replace('kind = "serial"', 'kind = "serial"\noutputs = ["alcohol"]'),
        "routes[r].outputs[0]: no tensor 'alcohol' at the end of the route",
    ),
    (
        "parallel branch on an unknown model",
        """
[[routes]]
name = "p"
kind = "parallel"
[[routes.branches]]
name = "a"
model = "wine_classifier"
[[routes.branches]]
name = "b"
model = "wine_regressor_typo"
""",
        "routes[p].branches[1].model:",
    ),
    (
        "progressive stages with different outputs",
        """
[[routes]]
name = "g"
kind = "progressive"
[[routes.stages]]
name = "fast"
model = "wine_classifier"
[[routes.stages]]
name = "slow"
model = "wine_alcohol_regressor"
""",
        "routes[g].stages[1]: every stage must produce the same outputs",
    ),
    (
        "pinned version that does not exist",
        SERIAL.replace('model = "wine_classifier"', 'model = "wine_classifier"\nversion = "7"'),
        "routes[r].steps[0].version: model 'wine_classifier' has no ready version '7'",
    ),
]


@pytest.mark.parametrize(("text", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_composite_routes_fail_at_startup(local_triton: LocalTriton, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(local_triton, text)
    assert message in str(info.value)


def test_schema_errors_name_route_and_field() -> None:
    cases = {
        '[[routes]]\nname = "s"\nkind = "serial"\n[[routes.steps]]\nname = "a"\n': "routes[s].steps.0: Value error, "
        "give exactly one of model or select",
        '[[routes]]\nname = "p"\nkind = "parallel"\n[[routes.branches]]\nname = "a"\nmodel = "m"\n': (
            "routes[p].branches: List should have at least 2 items"
        ),
        '[[routes]]\nname = "p"\nkind = "parallel"\npolicy = "some"\n': "routes[p].policy",
        '[[routes]]\nname = "s"\nkind = "serial"\n[[routes.steps]]\nname = "a"\nmodel = "m"\n'
        '[[routes.steps]]\nname = "a"\nmodel = "n"\n': "step 'a' is declared twice",
    }
    for text, message in cases.items():
        with pytest.raises(ConfigError) as info:
            parse_routes(text, "routes.toml")
        assert message in str(info.value), text


def test_a_good_composite_file_builds(local_triton: LocalTriton) -> None:
    table = build(local_triton, SERIAL)
    (route,) = list(table)
    assert [s.name for s in route.description.outputs] == ["cultivar", "probabilities"]


def test_config_check_against_triton_names_the_mistake(
    local_triton: LocalTriton, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text(SERIAL)
    assert cli_main(["config", "check", str(routes), "--triton-url", local_triton.grpc_url]) == 0
    assert capsys.readouterr().out == f"switchyard: {routes}: 1 routes OK against {local_triton.grpc_url} (r)\n"
    routes.write_text(SERIAL + '[[routes.steps]]\nname = "next"\nmodel = "no_such_model"\n')
    assert cli_main(["config", "check", str(routes)]) == 0  # the file alone is well formed
    capsys.readouterr()
    assert cli_main(["config", "check", str(routes), "--triton-url", local_triton.grpc_url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("switchyard: error: routes[r].steps[1].model:"), err
    assert "Traceback" not in err
