"""The playground (Streamlit) driven headless by AppTest against a live gateway."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits
from streamlit.testing.v1 import AppTest

from .gateway_thread import GatewayThread

pytestmark = pytest.mark.integration

APP = Path(__file__).resolve().parents[2] / "client_sdk" / "playground.py"


def app(gateway_thread: GatewayThread, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("SWITCHYARD_PLAYGROUND_TARGET", gateway_thread.target)
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def test_lists_routes_and_classifies_a_digit(gateway_thread: GatewayThread, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app(gateway_thread, monkeypatch)
    routes = at.sidebar.selectbox(key="route")
    assert {"digits", "wine", "wine_alcohol_by_cultivar", "digits_progressive"} <= set(routes.options)
    digits = load_digits()
    index = int(np.flatnonzero(digits.target == 7)[0])
    routes.set_value("digits").run()
    at.text_area(key="in:image").input(" ".join(str(v) for v in digits.data[index])).run()
    at.button(key="send").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    text = " ".join(m.value for m in at.markdown)
    assert "models: `digits_logreg" in text and "cached: **False**" in text
    assert any(m.label == "latency" for m in at.metric)
    label_table = at.dataframe[0].value
    assert int(np.asarray(label_table).ravel()[0]) == 7


def test_progressive_route_shows_each_stage(gateway_thread: GatewayThread, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app(gateway_thread, monkeypatch)
    at.sidebar.selectbox(key="route").set_value("digits_progressive").run()
    at.text_area(key="in:image").input(" ".join(["1"] * 64)).run()
    at.button(key="send").click().run()
    assert not at.exception, at.exception
    stages = [h.value for h in at.subheader]
    assert stages == ["stage fast", "stage accurate (final)"]


def test_jobs_tab_submits_and_watches_a_job(gateway_thread: GatewayThread, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app(gateway_thread, monkeypatch)
    at.sidebar.selectbox(key="route").set_value("digits").run()
    at.text_area(key="in:image").input(" ".join(["2"] * 64)).run()
    at.button(key="submit").click().run()
    assert not at.exception, at.exception
    assert any(m.value.startswith("job `") and "**succeeded**" in m.value for m in at.markdown), [
        m.value for m in at.markdown
    ]
