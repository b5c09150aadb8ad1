"""CPU accounting from Linux ``/proc``: servers' process trees, the whole machine, and whether a server has exited.

Everything here reads ``/proc``; where there is none the figures are zero.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from benchmarks.loadgen.errors import ServerGone

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            stat = stat_file.read()
    except OSError:
        return None
    # After "pid (comm) " come: state(0) ppid(1) ... utime(11) stime(12); comm may hold spaces and parentheses.
    return stat[stat.rfind(b")") + 2 :].split()


def process_exited(pid: int) -> bool:
    """Whether process ``pid`` has exited: gone from ``/proc``, or a zombie its parent has not reaped yet."""
    fields = _stat_fields(pid)
    return fields is None or fields[0] in (b"Z", b"X")


def check_servers(servers: dict[str, int]) -> None:
    """Raises :class:`ServerGone` naming every server of ``servers`` (name -> pid) that has exited.

    Does nothing where there is no ``/proc`` to tell.
    """
    if not os.path.isdir("/proc"):
        return
    gone = [f"{name} (pid {pid})" for name, pid in servers.items() if pid > 0 and process_exited(pid)]
    if gone:
        raise ServerGone(f"{', '.join(gone)} exited while being measured; the points after it would measure nothing")


def process_tree(pid: int) -> list[int]:
    """``pid`` and all of its live descendants (empty when ``pid`` is gone or there is no ``/proc``)."""
    if _stat_fields(pid) is None:
        return []
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and len(fields) > 1:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, ()))
    return tree


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds used so far by the processes ``pids`` (those gone count 0)."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None and len(fields) > 12:
            total += int(fields[11]) + int(fields[12])
    return total / _CLOCK_TICKS


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from ``/proc/stat``; (0, 0) without it."""
    try:
        with open("/proc/stat", "rb") as stat_file:
            fields = [int(v) for v in stat_file.readline().split()[1:]]
    except OSError:
        return 0.0, 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])  # guest time is already counted in user
    return (total - idle) / _CLOCK_TICKS, total / _CLOCK_TICKS


@dataclass
class CpuSnapshot:
    servers: dict[str, float]
    machine_busy: float
    machine_total: float

    @classmethod
    def take(cls, trees: dict[str, list[int]]) -> CpuSnapshot:
        busy, total = machine_cpu()
        return cls({name: cpu_seconds(pids) for name, pids in trees.items()}, busy, total)

    def since(self, earlier: CpuSnapshot) -> tuple[dict[str, float], float, float]:
        """Per-server CPU seconds, machine busy % (of all CPUs) and machine busy CPU seconds since ``earlier``."""
        servers = {name: max(0.0, self.servers[name] - earlier.servers.get(name, 0.0)) for name in self.servers}
        total = self.machine_total - earlier.machine_total
        busy = self.machine_busy - earlier.machine_busy
        return servers, 100.0 * busy / total if total > 0 else 0.0, busy
