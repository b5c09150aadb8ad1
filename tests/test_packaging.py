"""The wheel: built offline from the checkout, what it holds and what its metadata promises.

The pins must match what the generated stubs check at import (grpcio and
protobuf versions), Python versions where numpy<2 has wheels, the SDK without
the server stack, a licence file for the declared licence, typed packages,
and no locally built model repository, ever.
"""

from __future__ import annotations

import email.message
import email.parser
import re
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from .wheels import ROOT, build_wheel

SERVER_STACK = {"tritonclient", "uvloop", "redis", "pydantic", "pydantic-settings", "prometheus-client", "pillow"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


@pytest.fixture(scope="module")
def metadata(wheel: Path, names: list[str]) -> email.message.Message:
    (path,) = [name for name in names if name.endswith(".dist-info/METADATA")]
    with zipfile.ZipFile(wheel) as archive:
        return email.parser.Parser().parsestr(archive.read(path).decode())


def requirements(metadata: email.message.Message) -> list[Requirement]:
    return [Requirement(text) for text in metadata.get_all("Requires-Dist") or []]


def core(metadata: email.message.Message) -> dict[str, Requirement]:
    """What ``pip install switchyard`` installs: the requirements with no extra marker."""
    return {r.name: r for r in requirements(metadata) if r.marker is None}


def test_the_wheel_holds_the_packages_the_protos_and_the_typing_markers(names: list[str]) -> None:
    for expected in (
        "switchyard/client/__init__.py",
        "switchyard/client/py.typed",
        "switchyard/client/batch/cli.py",
        "switchyard/v1/py.typed",
        "switchyard/v1/gateway.proto",
        "switchyard/v1/jobs.proto",
        "switchyard/v1/admin.proto",
        "switchyard/v1/gateway_pb2.pyi",
        "switchyard/proxy/grpc/oip.py",
        "switchyard/server/cli.py",
        "switchyard/models/default_routes.toml",
        "switchyard/server/templates/project/routes.toml.j2",
        "switchyard/server/templates/project/k8s/deployment.yaml.j2",
    ):
        assert expected in names, expected
    assert [name for name in names if name.endswith("licenses/LICENSE")], names
    tops = {name.split("/")[0] for name in names}
    assert tops == {"switchyard", "switchyard-0.1.0.dist-info"}, tops  # no tests, benchmarks, examples, scripts


def test_a_built_model_repository_never_reaches_the_wheel(names: list[str]) -> None:
    """build_wheel planted triton_models/repository/ (the output of `switchyard models build`) in its copy."""
    assert not [name for name in names if name.startswith("switchyard/models/repository")]
    assert not [name for name in names if name.endswith((".onnx", ".pbtxt"))]


def test_the_license_is_the_declared_one(metadata: email.message.Message) -> None:
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata.get_all("License-File") == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text


def test_classifiers_urls_and_python_versions(metadata: email.message.Message) -> None:
    classifiers = metadata.get_all("Classifier") or []
    assert "Typing :: Typed" in classifiers
    assert "Programming Language :: Python :: 3.11" in classifiers
    assert "Programming Language :: Python :: 3.12" in classifiers
    assert not [c for c in classifiers if c.startswith("License ::")]  # the SPDX expression says it (PEP 639)
    urls = dict(entry.split(", ", 1) for entry in metadata.get_all("Project-URL") or [])
    assert urls and all(url.startswith("https://") for url in urls.values()), urls
    python = SpecifierSet(metadata["Requires-Python"])
    # numpy<2, which nvidia-pytriton needs, has wheels up to CPython 3.12 only.
    assert {"3.11", "3.12"} <= {v for v in ("3.10", "3.11", "3.12", "3.13") if python.contains(v + ".0")}
    assert not python.contains("3.13.0") and not python.contains("3.10.0")


def stub_versions() -> tuple[str, str]:
    """(grpcio, protobuf) versions the committed stubs check for at import."""
    stubs = ROOT / "protos" / "switchyard" / "v1"
    grpc_versions = {
        re.search(r"^GRPC_GENERATED_VERSION = '([\d.]+)'$", path.read_text(), re.MULTILINE).group(1)  # type: ignore[union-attr]
        for path in stubs.glob("*_pb2_grpc.py")
    }
    protobuf_versions = {
        ".".join(re.findall(r"Domain\.PUBLIC,\s*(\d+),\s*(\d+),\s*(\d+),", path.read_text())[0])
        for path in stubs.glob("*_pb2.py")
    }
    assert len(grpc_versions) == len(protobuf_versions) == 1, (grpc_versions, protobuf_versions)
    return grpc_versions.pop(), protobuf_versions.pop()


def test_the_pins_admit_exactly_what_the_stubs_accept(metadata: email.message.Message) -> None:
    grpc_version, protobuf_version = stub_versions()
    assert (grpc_version, protobuf_version) == ("1.81.1", "6.33.5")
    required = core(metadata)
    grpcio, protobuf = required["grpcio"].specifier, required["protobuf"].specifier
    assert grpcio.contains(grpc_version) and not grpcio.contains("1.81.0")
    assert protobuf.contains(protobuf_version) and not protobuf.contains("6.33.4")
    # The stubs are protobuf-6 gencode, and tritonclient (the server) needs protobuf<7.
    assert not protobuf.contains("7.0.0")


def test_pip_install_switchyard_is_the_sdk_without_the_server(metadata: email.message.Message) -> None:
    assert set(core(metadata)) == {"grpcio", "protobuf", "numpy"}
    extras = set(metadata.get_all("Provides-Extra") or [])
    assert {"batch", "server", "triton", "gpu", "bench", "postgres", "spark", "otel", "playground", "dev"} <= extras
    by_extra: dict[str, set[str]] = {}
    for requirement in requirements(metadata):
        if requirement.marker is not None:
            extra = re.search(r'extra == "([^"]+)"', str(requirement.marker)).group(1)  # type: ignore[union-attr]
            by_extra.setdefault(extra, set()).add(requirement.name)
    assert SERVER_STACK <= by_extra["server"]
    assert by_extra["batch"] == {"pyarrow", "tqdm"}


def test_every_extra_named_anywhere_exists(metadata: email.message.Message) -> None:
    """Self-references in the metadata, and `switchyard[...]` / `.[...]` in code and docs, name real extras."""
    extras = set(metadata.get_all("Provides-Extra") or [])
    named: dict[str, set[str]] = {}
    for requirement in requirements(metadata):
        if requirement.name == "switchyard":
            named.setdefault("METADATA", set()).update(requirement.extras)
    texts = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "examples").rglob("*.md")]
    for folder in ("client_sdk", "proxy", "server", "triton_models", "benchmarks", "scripts", ".ci"):
        texts += [path for path in (ROOT / folder).rglob("*") if path.suffix in ("", ".py", ".md", ".toml")]
    pattern = re.compile(r"(?:switchyard|\B\.)\[([a-z][a-z0-9_,-]*)\]")
    for path in texts:
        if path.is_file():
            for match in pattern.finditer(path.read_text(errors="ignore")):
                named.setdefault(str(path.relative_to(ROOT)), set()).update(match.group(1).split(","))
    unknown = {where: sorted(names - extras) for where, names in named.items() if names - extras}
    assert not unknown, unknown
    assert named["METADATA"] == {"server", "batch", "triton", "bench", "postgres", "spark", "otel", "playground"}


def test_the_command_is_the_sdks(wheel: Path, names: list[str]) -> None:
    (path,) = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
    with zipfile.ZipFile(wheel) as archive:
        entry_points = archive.read(path).decode()
    assert "[console_scripts]\nswitchyard = switchyard.client.cli:main" in entry_points
