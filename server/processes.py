"""Ports and child processes: free and taken ports, process groups, children that die with their parent.

Shared by the local Triton (``server.local_triton``) and the gateway workers
(``server.workers``).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from collections.abc import Sequence


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


def dying_with_parent(argv: Sequence[str]) -> list[str]:
    """``argv`` run so that Linux sends it SIGTERM when the thread that starts it dies (``setpriv --pdeathsig``).

    A killed gateway must not leave its Triton or its workers behind. The
    parent-death signal is set by ``setpriv`` (util-linux) right before it
    execs ``argv``, rather than by a ``preexec_fn``: Python code between fork
    and exec forces a plain fork(), whose gRPC fork handlers crashed the child
    when the gateway's gRPC threads were busy; without it CPython spawns with
    vfork and no handler runs. Where setpriv is missing, ``argv`` is returned
    as it is (the child then outlives a parent killed by SIGKILL). A parent
    killed in the moment between the spawn and setpriv's prctl is not seen.
    """
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    if setpriv is None:
        return list(argv)
    return [setpriv, "--pdeathsig", "TERM", "--", *argv]
