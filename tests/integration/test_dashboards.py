"""The Grafana dashboard and the Prometheus alerts use only metrics a live gateway exports."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from .gateway_thread import GatewayThread

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "switchyard.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
METRIC = re.compile(r"\b(switchyard_[a-z0-9_]+)")
SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in board["templating"]["list"] if "definition" in v]
    return exprs


def alert_rules() -> list[dict[str, Any]]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [rule for group in rules["groups"] for rule in group["rules"]]


def family(name: str, exported: set[str]) -> str | None:
    if name in exported:
        return name
    for suffix in SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in exported:
            return name[: -len(suffix)]
    return None


def test_dashboard_parses_and_covers_what_an_operator_watches() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] == "switchyard"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    titles = " | ".join(p["title"].lower() for p in board["panels"])
    for topic in ("request rate", "errors", "latency", "stage", "in flight", "cache hit", "batch", "circuit", "jobs"):
        assert topic in titles, topic
    for expr in dashboard_exprs():
        assert expr.count("(") == expr.count(")"), expr


def test_alerts_parse_and_name_the_failures_to_page_for() -> None:
    rules = alert_rules()
    names = {rule["alert"] for rule in rules}
    assert {
        "SwitchyardHighErrorRatio",
        "SwitchyardHighLatencyP99",
        "SwitchyardCircuitBreakerOpen",
        "SwitchyardTritonDown",
        "SwitchyardJobBacklog",
    } <= names
    for rule in rules:
        assert rule["expr"].strip() and rule["for"] and rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]


def test_every_metric_used_is_exported_by_a_live_gateway(gateway_thread: GatewayThread) -> None:
    port = gateway_thread.gateway.metrics_port
    assert port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        exported = {f.name for f in text_string_to_metric_families(reply.read().decode())}
    used = {name for expr in dashboard_exprs() + [r["expr"] for r in alert_rules()] for name in METRIC.findall(expr)}
    assert len(used) >= 15
    missing = sorted(name for name in used if family(name, exported) is None)
    assert not missing, f"not exported by the gateway: {missing}"
