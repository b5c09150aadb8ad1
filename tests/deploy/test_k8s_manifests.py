"""deploy/k8s, rendered offline (base and every overlay): valid against Kubernetes' schemas, and in step with the code.

Schemas: kubernetes-validate, strict (unknown fields refused), for the oldest
Kubernetes these manifests claim (gRPC probes, autoscaling/v2, policy/v1) and
the newest the package knows. The ServiceMonitor is a Prometheus Operator
resource with no schema there; its fields are checked against the gateway's
Service instead. The cross-checks read the gateway's settings, health names,
metrics registry and command-line parser.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version
from prometheus_client import REGISTRY

import switchyard.proxy.metrics  # noqa: F401 - registers the gateway's metrics
from switchyard.proxy.grpc.health import LIVENESS_SERVICE
from switchyard.proxy.settings import GatewaySettings

from .contract import dockerfile_user, gateway_settings, parse_command, triton_endpoints
from .kustomize import Resource, containers, pod_spec, render
from .podman import ROOT

K8S = ROOT / "deploy" / "k8s"
KUSTOMIZATIONS = [K8S / "base", *sorted(p for p in (K8S / "overlays").iterdir() if p.is_dir())]
OLDEST_KUBERNETES = "1.29.0"


def _id(path: Path) -> str:
    return str(path.relative_to(K8S))


@pytest.fixture(params=KUSTOMIZATIONS, ids=_id, scope="module")
def rendered(request: pytest.FixtureRequest) -> tuple[Path, list[Resource]]:
    return request.param, render(request.param)


class Objects:
    """The rendered objects by kind and name."""

    def __init__(self, resources: list[Resource]) -> None:
        self.resources = resources

    def get(self, kind: str, name: str) -> Resource:
        found = [r for r in self.resources if r["kind"] == kind and r["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name!r}, found {len(found)}"
        return found[0]

    def of_kind(self, kind: str) -> list[Resource]:
        return [r for r in self.resources if r["kind"] == kind]

    def workloads(self) -> Iterator[Resource]:
        return (r for r in self.resources if pod_spec(r) is not None)


def _container(resource: Resource, name: str) -> dict[str, Any]:
    (container,) = [c for c in containers(resource) if c["name"] == name]
    return container


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


def _pod_labels(resource: Resource) -> dict[str, str]:
    spec = resource["spec"]["jobTemplate"]["spec"] if resource["kind"] == "CronJob" else resource["spec"]
    return dict(spec["template"]["metadata"]["labels"])


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _container_port(container: dict[str, Any], name: str) -> int:
    (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == name]
    return int(port)


def _gateway(objects: Objects) -> tuple[Resource, dict[str, Any], GatewaySettings]:
    deployment = objects.get("Deployment", "gateway")
    container = _container(deployment, "gateway")
    where = f"gateway Deployment ({deployment['metadata'].get('namespace')})"
    return deployment, container, gateway_settings(_env(container), where)


def test_every_manifest_is_valid_kubernetes(rendered: tuple[Path, list[Resource]]) -> None:
    directory, resources = rendered
    versions = (OLDEST_KUBERNETES, latest_version())
    checked = 0
    for resource in resources:
        if resource["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # no schema offline: test_service_monitor_scrapes_the_gateway_metrics_port
        for version in versions:
            try:
                kubernetes_validate.validate(resource, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = f"{_id(directory)}: {resource['kind']}/{resource['metadata']['name']}"
                pytest.fail(f"{where} {'.'.join(str(p) for p in exc.path)}: {exc.message} (Kubernetes {version})")
            checked += 1
    kinds = sorted({r["kind"] for r in resources})
    print(f"\n{_id(directory)}: {len(resources)} objects ({', '.join(kinds)}), {checked} validations on {versions}")
    assert checked >= 2 * (len(resources) - 1)


def test_gateway_ports_probes_and_shutdown_match_the_gateway(rendered: tuple[Path, list[Resource]]) -> None:
    objects = Objects(rendered[1])
    deployment, container, settings = _gateway(objects)
    defaults = GatewaySettings()
    assert parse_command(container["args"], "gateway args").command == "serve"
    assert _container_port(container, "grpc") == settings.port == defaults.port
    assert _container_port(container, "metrics") == settings.metrics_port == defaults.metrics_port
    assert settings.host == "0.0.0.0" and settings.metrics_host == "0.0.0.0", "pods must listen on their pod IP"

    for probe in ("startupProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": settings.port, "service": LIVENESS_SERVICE}, probe
    # "" is the overall health: SERVING while every route is ready.
    assert container["readinessProbe"]["grpc"] == {"port": settings.port, "service": ""}

    # Stateless pods: the cache and the jobs live in Redis.
    assert settings.cache_backend == "redis" and settings.jobs_backend == "redis"
    redis = objects.get("Service", "redis")
    for url in (settings.redis_url, settings.jobs_redis_url):
        assert url is not None
        host, port = url.removeprefix("redis://").split("/")[0].split(":")
        assert host == redis["metadata"]["name"] and int(port) in [p["port"] for p in redis["spec"]["ports"]], url

    # Room for the preStop pause and the gateway's drain before the kubelet's SIGKILL.
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep", command
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= float(command[1]) + settings.grace_s + 5, (grace, command, settings.grace_s)


def test_gateway_reaches_every_triton_through_the_headless_service(rendered: tuple[Path, list[Resource]]) -> None:
    objects = Objects(rendered[1])
    gateway, _, settings = _gateway(objects)
    namespace = gateway["metadata"]["namespace"]
    service = objects.get("Service", "triton-headless")
    assert service["spec"]["clusterIP"] == "None", "the Triton Service must be headless (one address per pod)"
    assert settings.triton_url.startswith("dns:///"), settings.triton_url
    ((host, port),) = triton_endpoints(settings.triton_url)
    assert host == f"triton-headless.{namespace}.svc.cluster.local", f"{host} is not in namespace {namespace}"

    triton = objects.get("Deployment", "triton")
    container = _container(triton, "triton")
    args = parse_command(container["args"], "triton args")
    assert args.command == "triton"
    assert _container_port(container, "grpc") == args.grpc_port == port
    assert _container_port(container, "http") == args.http_port
    (service_port,) = [p for p in service["spec"]["ports"] if p["port"] == port]
    assert service_port["targetPort"] == "grpc"
    assert _selects(service["spec"]["selector"], _pod_labels(triton))
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == "http", probe
    grace = triton["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    # Triton finishes in-flight requests for --grace-s, then unloads its models (about 10 s).
    assert grace >= args.grace_s + 15, (grace, args.grace_s)


def test_autoscaler_uses_a_metric_the_gateway_exports(rendered: tuple[Path, list[Resource]]) -> None:
    objects = Objects(rendered[1])
    hpa = objects.get("HorizontalPodAutoscaler", "gateway")
    target = hpa["spec"]["scaleTargetRef"]
    objects.get(target["kind"], target["name"])
    exported = {metric.name for metric in REGISTRY.collect()}
    pod_metrics = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert pod_metrics == ["switchyard_inflight_requests"]
    for name in pod_metrics:
        assert name in exported, f"the HPA scales on {name}, which the gateway does not export"
        rules = (K8S / "README.md").read_text()
        assert f"seriesQuery: '{name}{{" in rules, f"deploy/k8s/README.md has no Prometheus adapter rule for {name}"
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"] == ["cpu"]


def test_service_monitor_scrapes_the_gateway_metrics_port(rendered: tuple[Path, list[Resource]]) -> None:
    objects = Objects(rendered[1])
    _, container, settings = _gateway(objects)
    (monitor,) = objects.of_kind("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    service = objects.get("Service", "gateway")
    assert _selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert set(monitor["spec"]) == {"selector", "endpoints"}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert set(endpoint) <= {"port", "path", "interval"}
    assert endpoint["path"] == "/metrics"
    (port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
    assert _container_port(container, port["targetPort"]) == settings.metrics_port


def test_services_and_budgets_select_their_pods(rendered: tuple[Path, list[Resource]]) -> None:
    objects = Objects(rendered[1])
    workloads = list(objects.workloads())
    for service in objects.of_kind("Service"):
        selected = [w for w in workloads if _selects(service["spec"]["selector"], _pod_labels(w))]
        assert len(selected) == 1, f"Service {service['metadata']['name']} selects {len(selected)} workloads"
        names = {p["name"] for c in containers(selected[0]) for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in names, f"Service {service['metadata']['name']}: no port {port['targetPort']}"
    for budget in objects.of_kind("PodDisruptionBudget"):
        selected = [w for w in workloads if _selects(budget["spec"]["selector"]["matchLabels"], _pod_labels(w))]
        assert len(selected) == 1, f"PodDisruptionBudget {budget['metadata']['name']} selects {len(selected)}"
        assert budget["spec"]["minAvailable"] < selected[0]["spec"]["replicas"], "a budget that blocks every drain"


def test_pods_run_non_root_with_resources(rendered: tuple[Path, list[Resource]]) -> None:
    objects = Objects(rendered[1])
    image_user = dockerfile_user()
    images = set()
    for workload in objects.workloads():
        name = f"{workload['kind']}/{workload['metadata']['name']}"
        spec = pod_spec(workload)
        assert spec is not None
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        for container in containers(workload):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False and context["capabilities"]["drop"] == ["ALL"], name
            for kind in ("requests", "limits"):
                assert set(container["resources"][kind]) == {"cpu", "memory"}, f"{name}: resources.{kind}"
            if container["name"] != "redis":
                images.add(container["image"])
                assert spec["securityContext"]["runAsUser"] == image_user, f"{name}: not the image's user"
    assert len(images) == 1, f"one Switchyard image for every role, found {images}"


def test_batch_cronjob_scores_through_the_gateway_service(rendered: tuple[Path, list[Resource]]) -> None:
    objects = Objects(rendered[1])
    (cronjob,) = objects.of_kind("CronJob")
    (container,) = containers(cronjob)
    args = parse_command(container["args"], "batch CronJob args")
    assert args.command == "batch"
    host, port = args.gateway.split(":")
    service = objects.get("Service", host)
    assert int(port) in [p["port"] for p in service["spec"]["ports"]]
    claim = pod_spec(cronjob)["volumes"][0]["persistentVolumeClaim"]["claimName"]  # type: ignore[index]
    objects.get("PersistentVolumeClaim", claim)
    assert args.input.startswith("/data/") and args.output.startswith("/data/")


def _kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@pytest.mark.skipif(_kustomize_command() is None, reason="no kustomize or kubectl binary to compare with")
def test_rendering_matches_kustomize(rendered: tuple[Path, list[Resource]]) -> None:
    directory, resources = rendered
    command = _kustomize_command()
    assert command is not None
    done = subprocess.run([*command, str(directory)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr

    def keyed(objects: list[Resource]) -> dict[str, str]:
        return {
            f"{o['kind']}/{o['metadata'].get('namespace', '')}/{o['metadata']['name']}": json.dumps(o, sort_keys=True)
            for o in objects
        }

    theirs = keyed([d for d in yaml.safe_load_all(done.stdout) if d])
    assert keyed(resources) == theirs
    print(f"\n{_id(directory)}: the same {len(theirs)} objects as `{' '.join(command)}`")
