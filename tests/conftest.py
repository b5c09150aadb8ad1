"""Test-wide hooks: everything under tests/integration/ carries the ``integration`` marker; job stores in a temp dir."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

INTEGRATION = Path(__file__).parent / "integration"


def pytest_configure(config: pytest.Config) -> None:
    # Gateways keep their embedded job store under SWITCHYARD_DATA_DIR (default: the user's data folder);
    # the tests' gateways, in this process or started as `switchyard serve`, use a folder of the run's own.
    if "SWITCHYARD_DATA_DIR" not in os.environ:
        os.environ["SWITCHYARD_DATA_DIR"] = data_dir = tempfile.mkdtemp(prefix="switchyard-data-")
        config.add_cleanup(lambda: shutil.rmtree(data_dir, ignore_errors=True))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)
