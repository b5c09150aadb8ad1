"""The gateway's request ids: unique within a process, across processes and after a fork."""

from __future__ import annotations

import multiprocessing
import re

from switchyard.proxy.lifecycle.context import new_request_id


def _child_ids(queue: multiprocessing.Queue[list[str]]) -> None:
    queue.put([new_request_id() for _ in range(3)])


def test_ids_are_32_hex_digits_and_never_repeat_in_a_process() -> None:
    ids = [new_request_id() for _ in range(10_000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_forked_and_spawned_processes_do_not_repeat_the_parent_ids() -> None:
    parent = [new_request_id() for _ in range(3)]
    seen = set(parent)
    for method in ("fork", "spawn"):
        context = multiprocessing.get_context(method)
        queue = context.Queue()
        child = context.Process(target=_child_ids, args=(queue,))
        child.start()
        ids = queue.get(timeout=60)
        child.join(60)
        assert child.exitcode == 0
        assert not seen & set(ids), method  # a forked child reseeds: same counter, other prefix
        assert ids[0][:16] != parent[0][:16], method
        seen |= set(ids)
