"""Run a local Triton Inference Server as a child process of the gateway.

This module owns the life of one ``tritonserver`` process taken from the
``nvidia-pytriton`` wheel (the ``triton`` extra): finding the binary, its
shared libraries and the Python backend; assembling a backends folder for the
running interpreter; choosing loopback ports; starting Triton in its own
process group, tied to the parent's life on Linux; waiting until the server
and all of its models are ready; and stopping it (SIGTERM, then SIGKILL after
a grace period). Triton's output goes to ``log_path``; failures quote its tail.
``supervise`` restarts Triton on the same ports whenever it dies, with
exponential backoff, and gives up after a run of quick failures.

Triton runs with explicit model control: it loads at start the models named
in ``models`` (every model of the repository when None), and later only what
it is asked to load over its repository API (``proxy.backend.repository``),
which is how a reload brings new models and versions without a restart. A
restart loads ``models`` as they are then (``serve`` keeps them in step with
its routes).

It does not build model repositories (``switchyard.models.build`` does) and
does not send inference requests (the proxy's Triton client does).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import inspect
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from prometheus_client import Counter

from switchyard.server.processes import dying_with_parent, free_port, live_group_members, port_in_use

log = logging.getLogger(__name__)

TRITON_RESTARTS = Counter(
    "switchyard_triton_restarts",
    "Times the supervisor restarted the local Triton after it died, by outcome (ok: ready again; failed).",
    ["outcome"],
)

NOT_INSTALLED_MESSAGE = (
    "tritonserver binary not found: install the triton extra (pip install 'switchyard[triton]') or pass --triton-url"
)

LOG_TAIL_LINES = 40
"""How many lines of Triton's log a startup error quotes."""

_POLL_INTERVAL_S = 0.1
_PROBE_TIMEOUT_S = 1.0
_GROUP_EXIT_WAIT_S = 5.0
_SOCKET_IN_USE = re.compile(r"Socket '[^']*:(\d+)' already in use")
_LOOPBACK_OF_WILDCARD = {"0.0.0.0": "127.0.0.1", "::": "::1"}


class LocalTritonError(RuntimeError):
    """Base of the errors raised while running a local Triton."""


class TritonNotInstalled(LocalTritonError):
    """The ``nvidia-pytriton`` wheel, or a piece of it this Python needs, is missing."""


class TritonStartupFailed(LocalTritonError):
    """Triton exited or did not become ready in time; the message ends with its log tail."""


class TritonGaveUp(LocalTritonError):
    """The supervisor stopped restarting Triton: it failed too often, too soon after each start."""


class PortInUse(TritonStartupFailed):
    """A port Triton must listen on is held by another process."""

    def __init__(self, port: int, role: str, detail: str = "") -> None:
        super().__init__(f"port {port} is already in use (Triton {role}){detail}")
        self.port = port
        self.role = role


@dataclass(frozen=True)
class TritonInstallation:
    """Where the pieces of Triton from the ``nvidia-pytriton`` wheel live."""

    binary: Path
    libraries: Path
    python_backend: Path
    """Folder holding ``libtriton_python.so`` and ``triton_python_backend_utils.py``."""
    stub: Path
    """``triton_python_backend_stub`` built for the running Python version."""

    @classmethod
    def find(cls) -> TritonInstallation:
        """Locate Triton in the ``pytriton`` package without importing it."""
        spec = importlib.util.find_spec("pytriton")
        if spec is None or spec.origin is None:
            raise TritonNotInstalled(NOT_INSTALLED_MESSAGE)
        package = Path(spec.origin).parent
        root = package / "tritonserver"
        binary = root / "bin" / "tritonserver"
        if not binary.is_file():
            raise TritonNotInstalled(NOT_INSTALLED_MESSAGE)
        python_version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = root / "python_backend_stubs" / python_version / "triton_python_backend_stub"
        if not stub.is_file():
            raise TritonNotInstalled(f"nvidia-pytriton has no Python backend stub for Python {python_version}")
        return cls(
            binary=binary,
            libraries=package.parent / "nvidia_pytriton.libs",
            python_backend=root / "backends" / "python",
            stub=stub,
        )


async def _http_status(host: str, port: int, path: str) -> int | None:
    """Status code of ``GET path`` over HTTP/1.0, or None when nothing answers in time."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), _PROBE_TIMEOUT_S)
    except (TimeoutError, OSError):
        return None
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), _PROBE_TIMEOUT_S)
    except (TimeoutError, OSError):
        return None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    parts = status_line.split()
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None


class LocalTriton:
    """One local ``tritonserver`` serving ``model_repository`` on loopback ports.

    ``host`` may be a wildcard (``0.0.0.0``, ``::``) for a Triton that other
    hosts call (``switchyard triton`` in a container); this host then reaches
    it, and probes it, through loopback (``grpc_url``).
    Ports given as 0 are chosen at construction and kept, so ``grpc_url`` is
    known before the start and stays the same across restarts (``kill()`` then
    ``start()``). Start from the thread that lives as long as Triton should
    (the event loop's): on Linux the child gets SIGTERM when that thread ends.

    ``start``/``wait_ready``/``stop`` are coroutines for the gateway; the
    ``*_sync`` variants serve code without a running event loop (fixtures, CLIs).
    The process is a ``subprocess.Popen``, not an asyncio subprocess, because an
    asyncio transport belongs to one loop and kills its child when that loop
    closes, while a Triton may outlive the loop that started it (test sessions).
    """

    def __init__(
        self,
        model_repository: Path,
        *,
        grpc_port: int = 0,
        http_port: int = 0,
        metrics_port: int = 0,
        host: str = "127.0.0.1",
        work_dir: Path | None = None,
        log_verbose: int = 0,
        installation: TritonInstallation | None = None,
        models: Sequence[str] | None = None,
    ) -> None:
        self.model_repository = Path(model_repository).resolve()
        self.models: list[str] | None = None if models is None else list(models)
        """The models loaded at (re)start; None: every model of the repository."""
        self.host = host
        self.installation = installation or TritonInstallation.find()
        self.work_dir = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="switchyard-triton-"))
        self.log_verbose = log_verbose
        ports: dict[str, int] = {}
        for role, port in (("gRPC", grpc_port), ("HTTP", http_port), ("metrics", metrics_port)):
            if port < 0 or port > 65535:
                raise ValueError(f"{role} port must be between 0 and 65535, got {port}")
            if port != 0 and port in ports.values():
                raise ValueError(f"{role} port {port} is also given for another endpoint")
            while port == 0 or port in ports.values():
                port = free_port(host)
            ports[role] = port
        self._ports = ports
        self._process: subprocess.Popen[bytes] | None = None
        self._group_gone = True  # whether no process of the last start's group is left
        self._stop_requested = False  # stop() was called: the supervisor must not restart
        self._log_offset = 0

    # -- addresses and state -------------------------------------------------

    @property
    def grpc_port(self) -> int:
        return self._ports["gRPC"]

    @property
    def local_host(self) -> str:
        """The address this host reaches Triton at: ``host``, or loopback when ``host`` is a wildcard."""
        return _LOOPBACK_OF_WILDCARD.get(self.host, self.host)

    @property
    def grpc_url(self) -> str:
        """``host:port`` of Triton's gRPC endpoint from this host, as tritonclient expects it."""
        host = self.local_host
        return f"[{host}]:{self.grpc_port}" if ":" in host else f"{host}:{self.grpc_port}"

    @property
    def http_port(self) -> int:
        return self._ports["HTTP"]

    @property
    def metrics_port(self) -> int:
        return self._ports["metrics"]

    @property
    def log_path(self) -> Path:
        """Triton's stdout and stderr, appended to across restarts."""
        return self.work_dir / "tritonserver.log"

    @property
    def backend_directory(self) -> Path:
        return self.work_dir / "backends"

    @property
    def pid(self) -> int | None:
        """Process id of the current (or last) tritonserver, None before the first start."""
        return self._process.pid if self._process is not None else None

    @property
    def returncode(self) -> int | None:
        """Exit status of the last tritonserver, None while it runs or before the first start."""
        return self._process.poll() if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def command(self) -> list[str]:
        """The tritonserver command line."""
        return [
            str(self.installation.binary),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={self.backend_directory}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-http=true",
            "--allow-metrics=true",
            "--strict-readiness=true",
            "--exit-on-error=true",
            f"--log-verbose={self.log_verbose}",
            "--model-control-mode=explicit",
            *(f"--load-model={name}" for name in (["*"] if self.models is None else self.models)),
        ]

    def environment(self) -> dict[str, str]:
        """The child's environment: the wheel's libraries and this interpreter first on PATH.

        The Python backend stub imports numpy and onnxruntime from the first
        ``python3`` on PATH, not from PYTHONPATH, hence the interpreter's ``bin``.
        """
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (str(self.installation.libraries), env.get("LD_LIBRARY_PATH", "")) if p
        )
        env["PATH"] = os.pathsep.join(p for p in (os.path.join(sys.exec_prefix, "bin"), env.get("PATH", "")) if p)
        return env

    # -- starting --------------------------------------------------------------

    def start_sync(self) -> None:
        """Start tritonserver and return at once; see ``wait_ready``."""
        if self.running:
            raise LocalTritonError(f"tritonserver is already running (pid {self.pid})")
        if not self.model_repository.is_dir():
            raise LocalTritonError(f"model repository {self.model_repository} is not a directory")
        for role, port in self._ports.items():
            if port_in_use(port, self.host):
                raise PortInUse(port, role)
        self._stop_requested = False
        self._prepare_backends()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._log_offset = log.tell()
            self._process = subprocess.Popen(
                dying_with_parent(self.command()),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                cwd=self.work_dir,
                start_new_session=True,  # own process group: stop() signals Triton and its stubs together
            )
        self._group_gone = False

    async def start(self) -> None:
        """Start tritonserver and return at once; see ``wait_ready``.

        Spawns from the calling (event loop) thread on purpose: the parent-death
        signal fires when the spawning thread ends, so never from a worker thread.
        """
        self.start_sync()

    def _prepare_backends(self) -> None:
        python = self.backend_directory / "python"
        python.mkdir(parents=True, exist_ok=True)
        sources = [
            self.installation.python_backend / "libtriton_python.so",
            self.installation.python_backend / "triton_python_backend_utils.py",
            self.installation.stub,
        ]
        for source in sources:
            link = python / source.name
            if link.is_symlink() or link.exists():
                if link.resolve() == source.resolve():
                    continue
                link.unlink()
            link.symlink_to(source)

    # -- readiness -------------------------------------------------------------

    async def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Wait until the server and every model it loads at start (``models``) are ready.

        Raises ``TritonStartupFailed`` (``PortInUse`` when a port was taken) with
        the tail of Triton's log if the process exits or ``timeout_s`` passes.
        """
        import tritonclient.grpc.aio as grpcclient

        process = self._require_process()
        deadline = time.monotonic() + timeout_s
        client = grpcclient.InferenceServerClient(self.grpc_url)
        try:
            while True:
                if process.poll() is not None:
                    raise self._startup_failure(f"tritonserver exited with status {process.returncode}")
                if await self._ready(client):
                    return
                if time.monotonic() >= deadline:
                    raise self._startup_failure(f"tritonserver was not ready after {timeout_s:g} s")
                await asyncio.sleep(_POLL_INTERVAL_S)
        finally:
            await client.close()

    def wait_ready_sync(self, timeout_s: float = 60.0) -> None:
        """``wait_ready`` for code without a running event loop."""
        asyncio.run(self.wait_ready(timeout_s))

    async def _ready(self, client: Any) -> bool:
        from tritonclient.utils import InferenceServerException

        try:
            if not await client.is_server_ready(client_timeout=_PROBE_TIMEOUT_S):
                return False
            index = await client.get_model_repository_index(as_json=True, client_timeout=_PROBE_TIMEOUT_S)
            entries = index.get("models", [])
            if self.models is None:
                wanted = [entry for entry in entries if entry.get("state") != "READY"]
            else:
                ready = {entry.get("name") for entry in entries if entry.get("state") == "READY"}
                wanted = [name for name in self.models if name not in ready]
            if wanted:
                return False
        except InferenceServerException:
            return False
        # Triton opens gRPC, then HTTP, then metrics, and exits if one of them
        # cannot bind: only when all three answer has it really started.
        return (
            await _http_status(self.local_host, self.http_port, "/v2/health/ready") == 200
            and await _http_status(self.local_host, self.metrics_port, "/metrics") == 200
        )

    def _startup_failure(self, reason: str) -> TritonStartupFailed:
        tail = self.log_tail()
        detail = f"{reason}; last lines of {self.log_path}:\n{tail}"
        # Triton 2.51 says: failed to start GRPC service: Unavailable - Socket '127.0.0.1:8001' already in use
        taken = _SOCKET_IN_USE.search(tail)
        if taken:
            port = int(taken.group(1))
            role = next((role for role, p in self._ports.items() if p == port), "endpoint")
            return PortInUse(port, role, f"; {detail}")
        return TritonStartupFailed(detail)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines Triton wrote since the latest start."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_offset)
                text = log.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- stopping --------------------------------------------------------------

    def stop_sync(self, grace_s: float = 10.0) -> None:
        """SIGTERM Triton's process group, SIGKILL it after ``grace_s``; idempotent."""
        self._stop_requested = True
        process = self._process
        if process is None or self._group_gone:
            return
        if process.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        self._kill_group(process)

    async def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM Triton's process group, SIGKILL it after ``grace_s``; idempotent."""
        await asyncio.to_thread(self.stop_sync, grace_s)

    def kill(self) -> None:
        """SIGKILL Triton and its backend stubs at once (to simulate a crash)."""
        if self._process is not None and not self._group_gone:
            self._kill_group(self._process)

    def _kill_group(self, process: subprocess.Popen[bytes]) -> None:
        # Stubs outlive the server for a moment; SIGKILL the whole group, then
        # wait (bounded) until none is left, so the ports are free for a restart.
        self._signal_group(signal.SIGKILL)
        process.wait()
        deadline = time.monotonic() + _GROUP_EXIT_WAIT_S
        while self._group_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        self._group_gone = True

    def _signal_group(self, signum: int) -> None:
        assert self._process is not None
        try:
            os.killpg(self._process.pid, signum)
        except ProcessLookupError:
            pass

    def _group_alive(self) -> bool:
        assert self._process is not None
        return bool(live_group_members(self._process.pid))

    def _require_process(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise LocalTritonError("tritonserver has not been started")
        return self._process

    # -- supervising -------------------------------------------------------------

    async def wait_exit(self) -> int:
        """Waits until the current tritonserver exits; returns its status.

        Uses a pidfd on Linux (no polling), else polls.
        """
        process = self._require_process()
        if process.poll() is None and hasattr(os, "pidfd_open"):
            try:
                fd = os.pidfd_open(process.pid)
            except OSError:
                fd = -1
            if fd >= 0:
                loop = asyncio.get_running_loop()
                exited = asyncio.Event()
                try:
                    loop.add_reader(fd, exited.set)
                    try:
                        if process.poll() is None:
                            await exited.wait()
                    finally:
                        loop.remove_reader(fd)
                except NotImplementedError:  # a loop without add_reader
                    pass
                finally:
                    os.close(fd)
        while process.poll() is None:  # noqa: ASYNC110 - a Popen has nothing to await
            await asyncio.sleep(_POLL_INTERVAL_S)
        return int(process.returncode)

    async def supervise(
        self,
        *,
        on_restart: Callable[[int], Awaitable[None] | None] | None = None,
        ready_timeout_s: float = 120.0,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        quick_failure_s: float = 60.0,
        max_quick_failures: int = 5,
    ) -> None:
        """Restarts tritonserver on the same ports whenever it dies, until cancelled or ``stop()``.

        Call it after the first start, as a task of the loop that started
        Triton. Before each restart it waits ``backoff_s``, doubled after each
        quick failure up to ``max_backoff_s``; a quick failure is a start that
        did not become ready, or a Triton that died less than
        ``quick_failure_s`` after it became ready. After ``max_quick_failures``
        in a row it logs why and raises :class:`TritonGaveUp`.
        ``on_restart(n)`` (a function or coroutine function) is called each
        time Triton is ready again, with the number of restarts so far.
        """
        if max_quick_failures < 1:
            raise ValueError(f"max_quick_failures must be at least 1, got {max_quick_failures}")
        restarts = 0
        quick_failures = 0  # in a row
        ready_since = time.monotonic()
        while True:
            status = await self.wait_exit()
            if self._stop_requested:
                return
            lived = time.monotonic() - ready_since
            quick_failures = quick_failures + 1 if lived < quick_failure_s else 0
            log.error(
                "local Triton (pid %s) died with status %s, %.1f s after it was ready; last lines of %s:\n%s",
                self.pid,
                status,
                lived,
                self.log_path,
                self.log_tail(10),
            )
            while True:
                # What is left of the group (backend stubs) goes too, so the ports are free.
                await asyncio.to_thread(self.kill)
                if self._stop_requested:
                    return
                if quick_failures >= max_quick_failures:
                    message = (
                        f"local Triton failed {quick_failures} times in a row, each within {quick_failure_s:g} s "
                        f"of starting; giving up (its log: {self.log_path})"
                    )
                    log.error("%s", message)
                    raise TritonGaveUp(message)
                delay = min(backoff_s * 2 ** max(quick_failures - 1, 0), max_backoff_s)
                log.warning("restarting local Triton on gRPC port %d in %.1f s", self.grpc_port, delay)
                await asyncio.sleep(delay)
                if self._stop_requested:
                    return
                started = time.monotonic()
                try:
                    await self.start()
                    await self.wait_ready(ready_timeout_s)
                except LocalTritonError as exc:
                    TRITON_RESTARTS.labels("failed").inc()
                    log.error("local Triton did not come back: %s", exc)
                    quick_failures += 1
                    continue
                break
            restarts += 1
            ready_since = time.monotonic()
            TRITON_RESTARTS.labels("ok").inc()
            log.warning(
                "local Triton is back (pid %s, restart %d): ready %.1f s after the restart",
                self.pid,
                restarts,
                ready_since - started,
            )
            if on_restart is not None:
                result = on_restart(restarts)
                if inspect.isawaitable(result):
                    await result

    # -- context manager -------------------------------------------------------

    async def __aenter__(self) -> LocalTriton:
        await self.start()
        try:
            await self.wait_ready()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
