"""Child processes die with the process that started them, even when it is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from switchyard.server.processes import dying_with_parent

# A parent that starts `sleep` through dying_with_parent, prints its pid, then waits to be killed.
PARENT = """
import subprocess, sys, time
from switchyard.server.processes import dying_with_parent
child = subprocess.Popen(dying_with_parent(["sleep", "60"]))
print(child.pid, flush=True)
time.sleep(60)
"""


def _name(pid: int) -> str:
    with open(f"/proc/{pid}/status") as status:
        return status.readline().split(":", 1)[1].strip()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signals are Linux's")
def test_a_child_dies_when_its_parent_is_killed() -> None:
    if dying_with_parent(["true"]) == ["true"]:
        pytest.skip("setpriv (util-linux) is not installed")
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    # setpriv sets the signal, then becomes `sleep`: kill the parent once it has (a parent killed in
    # the microseconds before is a race setpriv does not close).
    deadline = time.monotonic() + 10
    while _name(child) != "sleep" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _alive(child)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(10)
    parent.stdout.close()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the child outlived its killed parent"


def test_without_setpriv_the_command_is_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda _name: None)
    assert dying_with_parent(["tritonserver", "--x"]) == ["tritonserver", "--x"]
