"""Renders the kustomizations of deploy/k8s, offline, for the manifest tests.

No kustomize binary can be installed here (neither Debian nor PyPI has a
real one), so this renders the subset of kustomize that deploy/k8s uses, with
kustomize's semantics: ``resources`` (files, and folders holding a
kustomization), ``namespace`` (set on namespaced objects; a Namespace object
is renamed), ``images`` (``newName``/``newTag``/``digest`` on every container
whose image has that name), ``replicas`` and ``patches`` (JSON 6902 patches
with a ``target`` of kind and name). Any other field is refused by name, so a
kustomization cannot quietly rely on something this does not do. Where a
kustomize or kubectl binary is on PATH, a test renders with it as well and
compares.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]

SUPPORTED_FIELDS = {"apiVersion", "kind", "resources", "namespace", "images", "replicas", "patches"}
CLUSTER_SCOPED_KINDS = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "PriorityClass",
    "StorageClass",
}
SCALABLE_KINDS = {"Deployment", "StatefulSet", "ReplicaSet"}


class UnsupportedKustomization(ValueError):
    """The kustomization uses a field or form this renderer does not implement."""


def load_documents(path: Path) -> list[Resource]:
    """Every non-empty YAML document of ``path``."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def render(directory: Path) -> list[Resource]:
    """The objects ``kustomize build DIRECTORY`` would produce (in file order, not kustomize's)."""
    kustomization_file = directory / "kustomization.yaml"
    kustomization = yaml.safe_load(kustomization_file.read_text())
    unsupported = set(kustomization) - SUPPORTED_FIELDS
    if unsupported:
        raise UnsupportedKustomization(f"{kustomization_file}: fields not rendered here: {sorted(unsupported)}")
    if kustomization.get("kind", "Kustomization") != "Kustomization":
        raise UnsupportedKustomization(f"{kustomization_file}: kind {kustomization['kind']!r}")

    resources: list[Resource] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            resources += render(path)
        elif path.is_file():
            resources += load_documents(path)
        else:
            raise UnsupportedKustomization(f"{kustomization_file}: resource {entry!r} is neither a file nor a folder")
    resources = copy.deepcopy(resources)

    namespace = kustomization.get("namespace")
    if namespace is not None:
        for resource in resources:
            if resource["kind"] == "Namespace":
                resource["metadata"]["name"] = namespace
            elif resource["kind"] not in CLUSTER_SCOPED_KINDS:
                resource["metadata"]["namespace"] = namespace
    for image in kustomization.get("images", []):
        _set_image(resources, image)
    for replicas in kustomization.get("replicas", []):
        _set_replicas(resources, replicas, kustomization_file)
    for patch in kustomization.get("patches", []):
        _patch(resources, patch, kustomization_file)
    return resources


def pod_spec(resource: Resource) -> dict[str, Any] | None:
    """The pod spec inside a workload object, or None for other kinds."""
    kind = resource["kind"]
    if kind == "Pod":
        return dict(resource["spec"])
    if kind in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}:
        return dict(resource["spec"]["template"]["spec"])
    if kind == "CronJob":
        return dict(resource["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    return None


def containers(resource: Resource) -> list[dict[str, Any]]:
    """Every container and init container of a workload object."""
    spec = pod_spec(resource)
    if spec is None:
        return []
    return list(spec.get("initContainers", [])) + list(spec.get("containers", []))


def _image_name(image: str) -> str:
    name = image.split("@", 1)[0]
    last_colon, last_slash = name.rfind(":"), name.rfind("/")
    return name[:last_colon] if last_colon > last_slash else name


def _set_image(resources: list[Resource], image: dict[str, str]) -> None:
    for resource in resources:
        for container in containers(resource):
            current = container["image"]
            if _image_name(current) != image["name"]:
                continue
            name = image.get("newName", image["name"])
            if "digest" in image:
                container["image"] = f"{name}@{image['digest']}"
            elif "newTag" in image:
                container["image"] = f"{name}:{image['newTag']}"
            else:
                container["image"] = name + current[len(_image_name(current)) :]


def _set_replicas(resources: list[Resource], replicas: dict[str, Any], source: Path) -> None:
    matched = [r for r in resources if r["kind"] in SCALABLE_KINDS and r["metadata"]["name"] == replicas["name"]]
    if not matched:
        raise UnsupportedKustomization(f"{source}: replicas for {replicas['name']!r}: no such workload")
    for resource in matched:
        resource["spec"]["replicas"] = replicas["count"]


def _patch(resources: list[Resource], patch: dict[str, Any], source: Path) -> None:
    target = patch.get("target")
    if not target or set(target) - {"kind", "name"} or "path" in patch:
        raise UnsupportedKustomization(f"{source}: only inline patches with a target of kind and name are rendered")
    operations = yaml.safe_load(patch["patch"])
    if not isinstance(operations, list):
        raise UnsupportedKustomization(f"{source}: only JSON 6902 patches (a list of operations) are rendered")
    kind, name = target.get("kind"), target.get("name")
    matched = [r for r in resources if kind in (None, r["kind"]) and name in (None, r["metadata"]["name"])]
    if not matched:
        raise UnsupportedKustomization(f"{source}: patch target {target} matches nothing")
    for resource in matched:
        for operation in operations:
            _apply_operation(resource, operation, source)


def _apply_operation(document: Resource, operation: dict[str, Any], source: Path) -> None:
    op, path = operation["op"], operation["path"]
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]
    parent: Any = document
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    last = parts[-1]
    if op in {"add", "replace"}:
        value = copy.deepcopy(operation["value"])
        if isinstance(parent, list):
            if last == "-":
                parent.append(value)
            elif op == "add":
                parent.insert(int(last), value)
            else:
                parent[int(last)] = value
        else:
            if op == "replace" and last not in parent:
                raise UnsupportedKustomization(f"{source}: replace of {path}, which does not exist")
            parent[last] = value
    elif op == "remove":
        del parent[int(last) if isinstance(parent, list) else last]
    else:
        raise UnsupportedKustomization(f"{source}: patch operation {op!r} is not rendered")
