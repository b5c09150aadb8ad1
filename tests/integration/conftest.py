"""Shared fixtures of the integration tests: one built model repository and one local Triton per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from switchyard.models.build import build_repository
from switchyard.server.triton import LocalTriton

TRITON_READY_TIMEOUT_S = 120.0


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled models, built once per session."""
    return build_repository(tmp_path_factory.mktemp("models") / "repository")


@pytest.fixture(scope="session")
def local_triton(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTriton]:
    """A ready Triton serving ``model_repository`` on free loopback ports; tests must not stop it."""
    triton = LocalTriton(model_repository, work_dir=tmp_path_factory.mktemp("triton"))
    triton.start_sync()
    try:
        triton.wait_ready_sync(TRITON_READY_TIMEOUT_S)
        yield triton
    finally:
        triton.stop_sync()
