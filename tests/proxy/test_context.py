"""The gateway's request ids (unique within a process, across processes and after a fork) and stage timings."""

from __future__ import annotations

import multiprocessing
import re

from switchyard.proxy.lifecycle.context import CallContext, new_request_id


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


def test_a_stage_is_timed_into_the_spans_and_the_header_also_when_it_fails() -> None:
    ctx = CallContext.start("r", "route", 5.0)
    with ctx.stage("infer"):
        pass
    try:
        with ctx.stage("post"):
            raise ValueError("boom")
    except ValueError:
        pass
    assert [name for name, _, _ in ctx.spans] == ["infer", "post"]
    assert all(begin <= end for _, begin, end in ctx.spans)
    assert re.fullmatch(
        r"infer;start=\d+\.\d{3};dur=\d+\.\d{3}, post;start=\d+\.\d{3};dur=\d+\.\d{3}", ctx.timing_header()
    )
    child = ctx.child(1.0)
    assert child.spans is ctx.spans and child.deadline <= ctx.deadline
