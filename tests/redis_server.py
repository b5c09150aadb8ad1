"""A real ``redis-server`` for tests: free loopback port, temp dir, no persistence.

:class:`RedisServer` starts the binary found on ``PATH`` (or named by
``SWITCHYARD_TEST_REDIS_SERVER``), waits until it answers PING, and stops it
(terminate, then kill). :func:`redis_server` is a pytest fixture around it;
use it from any test folder by importing it into that folder's conftest.py::

    from tests.redis_server import redis_server  # noqa: F401

A missing binary fails the test with a clear message: CI installs Redis, so a
skip would hide a broken environment.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

BINARY_ENV = "SWITCHYARD_TEST_REDIS_SERVER"
START_TIMEOUT_S = 10.0


class RedisServerError(RuntimeError):
    pass


def find_binary() -> str:
    """The redis-server binary to run; raises :class:`RedisServerError` with a hint when there is none."""
    binary = os.environ.get(BINARY_ENV) or shutil.which("redis-server")
    if not binary:
        raise RedisServerError(
            "redis-server not found on PATH: install it (Debian/Ubuntu: apt-get install redis-server) "
            f"or set {BINARY_ENV} to its path"
        )
    return binary


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ping(port: int, timeout_s: float = 0.5) -> bool:
    """Whether a Redis on 127.0.0.1:``port`` answers PING (raw RESP, no client library)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process on 127.0.0.1; ``start``/``stop`` may be called again (same port)."""

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or find_binary()
        self.port = 0
        self._dir = Path(tempfile.mkdtemp(prefix="switchyard-redis-"))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> RedisServer:
        """Starts the server (on a free port the first time, the same port afterwards) and waits for PING."""
        if self.running:
            return self
        attempts = 1 if self.port else 3  # a fresh free port can be taken before redis binds it
        for attempt in range(attempts):
            port = self.port or free_port()
            try:
                self._launch(port)
                self.port = port
                return self
            except RedisServerError:
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def _launch(self, port: int) -> None:
        log_path = self._dir / f"redis-{port}.log"
        args = [
            self.binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self._dir),
            "--logfile",
            str(log_path),
            "--daemonize",
            "no",
        ]
        self._proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            if ping(port):
                return
            time.sleep(0.01)
        self._terminate()
        log = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else "(no log)"
        raise RedisServerError(f"redis-server on port {port} did not answer PING; log tail:\n{log}")

    def stop(self) -> None:
        """Stops the server (terminate, then kill); a no-op when it is not running."""
        self._terminate()

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        else:
            proc.wait()

    def close(self) -> None:
        """Stops the server and removes its temp dir."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh, empty redis-server for one test; the test may ``stop()`` and ``start()`` it."""
    try:
        server = RedisServer()
    except RedisServerError as exc:
        pytest.fail(str(exc), pytrace=False)
    with server:
        yield server
