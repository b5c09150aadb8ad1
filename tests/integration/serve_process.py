"""`switchyard serve` as a child process for tests: started, read while it runs, always reaped."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator


class Serve:
    """A running ``switchyard serve``; its output is read by a thread, so a chatty gateway never blocks on the pipe."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._serving = threading.Event()
        self._ended = threading.Event()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if "serving on" in line:
                self._serving.set()
        self._ended.set()

    def wait_serving(self, timeout_s: float) -> None:
        """Until it prints ``serving on``; AssertionError with its output if it exits first or takes longer."""
        deadline = time.monotonic() + timeout_s
        while not self._serving.wait(0.05):
            assert not self._ended.is_set(), f"serve exited before serving:\n{self.log}"
            assert time.monotonic() < deadline, f"serve did not come up within {timeout_s} s:\n{self.log}"

    @property
    def log(self) -> str:
        """Everything it has printed so far (stdout and stderr)."""
        return "".join(self.lines)

    def port_after(self, label: str) -> int:
        """The port printed as ``<label> HOST:PORT`` (``serving on``, ``metrics``)."""
        match = re.search(rf"{re.escape(label)} [\d.]+:(\d+)", self.log)
        assert match, f"no {label!r} address in the output:\n{self.log}"
        return int(match.group(1))

    @property
    def port(self) -> int:
        return self.port_after("serving on")

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM, then its exit status once it has exited and all of its output is read."""
        self.proc.send_signal(signal.SIGTERM)
        status = self.proc.wait(timeout_s)
        self._reader.join(10)
        return status

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@contextlib.contextmanager
def running_serve(*args: str, ready_s: float = 120.0) -> Iterator[Serve]:
    """``switchyard serve ARGS`` until it prints ``serving on``; killed and reaped on the way out whatever happens."""
    exe = os.path.join(sys.exec_prefix, "bin", "switchyard")
    proc = subprocess.Popen([exe, "serve", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    serve = Serve(proc)
    try:
        serve.wait_serving(ready_s)
        yield serve
    finally:
        serve.close()
