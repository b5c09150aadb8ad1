"""Ports and child processes: free and taken ports, process groups, children that die with their parent.

Shared by the local Triton (``server.local_triton``) and the gateway workers
(``server.workers``).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def free_port(host: str = "127.0.0.1") -> int:
    """Return a port on ``host`` that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether binding ``host:port`` fails the way a server's listening socket would."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As servers do, so connections of a previous run in TIME_WAIT do not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False


def live_group_members(pgid: int) -> list[int]:
    """Pids of the processes in group ``pgid`` that have not exited.

    Zombies do not count: they hold no ports, and the stubs Triton leaves behind
    are reaped by whoever inherits them (which may be never, under some init).
    Without ``/proc``, any member at all counts.
    """
    if not os.path.isdir("/proc"):
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return [pgid]
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(os.path.join(entry.path, "stat"), "rb") as stat_file:
                stat = stat_file.read()
        except OSError:
            continue
        # After "pid (comm) " come: state ppid pgrp ...; comm may contain spaces and parentheses.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
            members.append(int(entry.name))
    return members


def die_with_parent_hook() -> Callable[[], None] | None:
    """Return a ``preexec_fn`` asking Linux to SIGTERM the child when its parent dies."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before fork, not in the child
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return hook
