"""The broadcast scenario's app (ours or bare), counting where a member's server CPU goes.

Served by ``bench.bcast9_count`` (``BCAST9_IMPL=ours|bare``, ``BCAST9_OUT=file``). Counts,
written to ``BCAST9_OUT`` after each broadcast: the broadcasts, the members reached, the
thread CPU inside the fan-out (ours: ``group_send``, whose memory layer never suspends, the
eager hand-over included; bare: ``_fan_out``), the process CPU, and for ours the sends
that suspended (``SendDeadline._wait``), the eager handlers handed to their reader task,
the claims refused, the layer wake-ups (``_Ready.wake``) and the turn waits.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import time
from typing import Any

counts: dict[str, float] = {
    "broadcasts": 0,
    "members": 0,
    "fanout_cpu_s": 0.0,
    "suspended_sends": 0,
    "handed": 0,
    "claims": 0,
    "claims_refused": 0,
    "queue_wakes": 0,
    "ready_wakes": 0,
    "turn_waits": 0,
    "suspended_fanouts": 0,
    "fanout_user_s": 0.0,
    "fanout_system_s": 0.0,
    "gc_collections": 0,
    "gc_s": 0.0,
    "gc_fanout_collections": 0,
    "server_send_s": 0.0,
}
_in_fanout = [False]
gen2: list[tuple[float, float, int]] = []
_gc_started = [0.0]


def _gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _gc_started[0] = time.perf_counter()
        return
    spent = time.perf_counter() - _gc_started[0]
    counts["gc_collections"] += 1
    counts["gc_s"] += spent
    counts[f"gc{info['generation']}_s"] = counts.get(f"gc{info['generation']}_s", 0.0) + spent
    counts[f"gc{info['generation']}_n"] = counts.get(f"gc{info['generation']}_n", 0) + 1
    if info["generation"] == 2:  # when: the broadcasts so far, and its ms
        gen2.append((counts["broadcasts"], round(spent * 1e3, 1), info["collected"]))
    if _in_fanout[0]:
        counts["gc_fanout_collections"] += 1


gc.callbacks.append(_gc)


def _usage() -> tuple[float, float, float]:
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return time.thread_time(), usage.ru_utime, usage.ru_stime


def _add(started: tuple[float, float, float], members: int) -> None:
    _in_fanout[0] = False
    ended = _usage()
    counts["fanout_cpu_s"] += ended[0] - started[0]
    counts["fanout_user_s"] += ended[1] - started[1]
    counts["fanout_system_s"] += ended[2] - started[2]
    counts["broadcasts"] += 1
    counts["members"] += members
    _dump()


_out = os.environ["BCAST9_OUT"]  # set by bench.bcast9_count


def _dump() -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    counts["process_user_s"], counts["process_system_s"] = usage.ru_utime, usage.ru_stime
    with open(_out, "w") as file:
        json.dump({**counts, "gen2": gen2}, file)


def _count(name: str, original: Any, *, when: Any = None) -> Any:
    def counted(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        if when is None or when(result):
            counts[name] += 1
        return result

    return counted


if os.environ.get("BCAST9_IMPL") == "bare":
    from bench.apps import bare

    def _fan_out(text: str) -> Any:
        async def fan_out() -> None:
            frame = {"type": "websocket.send", "text": text}
            clock, spent = time.perf_counter, 0.0
            for member in list(bare.members):
                started = clock()
                await member(frame)
                spent += clock() - started
            counts["server_send_s"] += spent

        return fan_out()

    async def _timed_fan_out(text: str) -> None:
        members = len(bare.members)
        started = _usage()
        _in_fanout[0] = True
        step = _fan_out(text).__await__()
        try:
            next(step)
        except StopIteration:
            pass
        else:  # a send suspended: finish it untimed
            counts["suspended_fanouts"] += 1
            from consumers.stepping import resume

            await resume(step, None)
        _add(started, members)

    bare._fan_out = _timed_fan_out
    application = bare.application
else:
    from bench.apps.ours import application  # noqa: F401  (sets Django up)
    from channels_layer import mailbox, memory, ready
    from consumers import eager, send_deadline, turn

    _group_send = memory.InMemoryChannelLayer.group_send

    async def _timed_group_send(self: Any, group: str, message: Any) -> Any:
        members = len(self._groups.live_members(group))
        started = _usage()
        _in_fanout[0] = True
        step = _group_send(self, group, message).__await__()
        try:
            next(step)
        except StopIteration as stop:
            result = stop.value
        else:
            raise AssertionError("the memory layer's group_send suspended")
        _add(started, members)
        return result

    memory.InMemoryChannelLayer.group_send = _timed_group_send  # type: ignore[method-assign]
    _wait = send_deadline.SendDeadline._wait

    def _counted_wait(self: Any, *args: Any) -> Any:
        counts["suspended_sends"] += 1
        return _wait(self, *args)

    send_deadline.SendDeadline._wait = _counted_wait  # type: ignore[method-assign,assignment]
    _init = send_deadline.SendDeadline.__init__

    def _timed_init(self: Any, send: Any, *args: Any, **kwargs: Any) -> None:
        async def timed(message: Any) -> None:
            started = time.perf_counter()
            await send(message)
            counts["server_send_s"] += time.perf_counter() - started

        _init(self, timed, *args, **kwargs)

    send_deadline.SendDeadline.__init__ = _timed_init  # type: ignore[method-assign]
    eager.EagerReader.handle = _count("handed", eager.EagerReader.handle, when=bool)  # type: ignore[method-assign]
    _claim = _count("claims_refused", eager.EagerReader.claim, when=lambda r: not r)
    eager.EagerReader.claim = _count("claims", _claim)  # type: ignore[method-assign]
    mailbox._wake_one = _count("queue_wakes", mailbox._wake_one)
    ready._Ready.wake = _count("ready_wakes", ready._Ready.wake)  # type: ignore[method-assign]
    _take = turn.Turn.take

    def _counted_take(self: Any) -> Any:
        if self.held:
            counts["turn_waits"] += 1
        return _take(self)

    turn.Turn.take = _counted_take  # type: ignore[method-assign]
