"""The load generator's own failures: a worker that misbehaved, a server that exited mid-point."""

from __future__ import annotations


class LoadGeneratorError(RuntimeError):
    pass


class ServerGone(LoadGeneratorError):
    """A server being measured has exited (crashed, killed): a point stops at the window that notices."""
