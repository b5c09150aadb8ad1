"""The routes file: schema errors name the route and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchyard.models import BUNDLED_ROUTES
from switchyard.proxy.errors import ConfigError
from switchyard.proxy.routes.schema import load_routes, parse_routes


def test_bundled_default_routes_parse() -> None:
    routes = load_routes(BUNDLED_ROUTES).routes
    names = [r.name for r in routes]
    assert names == sorted(set(names), key=names.index)  # unique
    assert {"digits", "digits_8x8", "wine", "wine_alcohol"} <= set(names)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[routes]]\nname = "a"\n', "routes[a].model: Field required"),
        ('[[routes]]\nname = "a"\nmodel = "m"\nkind = "teleport"\n', "routes[a].kind"),
        ('[[routes]]\nname = "a"\nmodel = "m"\nversion = "latest"\n', "routes[a].version"),
        ('[[routes]]\nname = "a"\nmodel = "m"\ncolour = "red"\n', "routes[a].colour: Extra inputs are not permitted"),
        ('[[routes]]\nname = "a"\nmodel = "m"\n[[routes]]\nname = "a"\nmodel = "n"\n', "route 'a' is declared twice"),
        ('[[routes]]\nname = "a b"\nmodel = "m"\n', "routes[a b].name"),
        (
            '[[routes]]\nname = "a"\nmodel = "m"\n[[routes.inputs]]\nname = "x"\ndatatype = "FP32"\nshape = [-1, 0]\n',
            "routes[a].inputs.0.shape",
        ),
        ("routes = [", "not valid TOML"),
        ("[[route]]\nname = 'a'\n", "route: Extra inputs are not permitted"),
    ],
)
def test_bad_routes_files_are_rejected_with_the_field(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_routes(text, "routes.toml")
    assert message in str(info.value)
    assert str(info.value).startswith("routes.toml")


def test_a_file_without_routes_serves_none() -> None:
    """A new project's routes.toml holds only commented examples until its first model."""
    assert parse_routes("# nothing yet\n", "routes.toml").routes == []


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read routes file"):
        load_routes(tmp_path / "absent.toml")
