"""Shared history reads: the consumers of one process that recover the same group from the
same position share one read of each batch.

A thousand clients that dropped together come back together, each asking for the same
missed messages; reading them once per process instead of once per client is what keeps
Redis idle through it. A consumer may only use a read that started after it subscribed to
the group (anything sent later reaches it live), so at most two reads of a key exist: the
one running and the next one, which every consumer that came too late for the running one
waits for.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from channels_layer.history import Position

Key = tuple[int, int, str, str, int, int]


@dataclass
class _Read:
    future: asyncio.Future[list[dict[str, Any]]]
    started: float | None = None  # loop time at which it was asked of the layer


@dataclass
class _Slot:
    running: _Read | None = None
    waiting: _Read | None = None  # starts when the running one ends
    args: tuple[Any, ...] = field(default_factory=tuple)


_slots: dict[Key, _Slot] = {}


async def read_history(
    layer: Any, group: str, since: Position, limit: int, subscribed_at: float
) -> list[dict[str, Any]]:
    """``layer.group_history(group, since, limit)``, shared with the other consumers of this
    loop that ask for the same batch and subscribed before it was asked. Each caller gets
    its own copies of the messages; ``HistoryLost`` reaches every caller."""
    loop = asyncio.get_running_loop()
    key = (id(loop), id(layer), group, since.epoch, since.offset, limit)
    slot = _slots.get(key)
    if slot is None:
        slot = _slots[key] = _Slot(args=(layer, group, since, limit))
    running = slot.running
    if running is not None and running.started is not None and running.started >= subscribed_at:
        read = running
    elif running is None:
        read = slot.running = _start(key, slot)
    else:
        if slot.waiting is None:
            slot.waiting = _Read(loop.create_future())
        read = slot.waiting
    # Shielded: a consumer that leaves while waiting must not cancel the others' read.
    messages = await asyncio.shield(read.future)
    return [dict(message) for message in messages]


def _start(key: Key, slot: _Slot, read: _Read | None = None) -> _Read:
    loop = asyncio.get_running_loop()
    read = read or _Read(loop.create_future())
    read.started = loop.time()
    task = loop.create_task(_run(slot, read))
    task.add_done_callback(lambda _: _next(key, slot))
    return read


async def _run(slot: _Slot, read: _Read) -> None:
    layer, group, since, limit = slot.args
    try:
        read.future.set_result(await layer.group_history(group, since, limit=limit))
    except asyncio.CancelledError:
        read.future.cancel()
        raise
    except Exception as error:  # HistoryLost, an outage: every waiter gets it
        read.future.set_exception(error)
        read.future.exception()  # retrieved: the waiters may all have left


def _next(key: Key, slot: _Slot) -> None:
    slot.running, waiting, slot.waiting = None, slot.waiting, None
    if waiting is not None:
        slot.running = _start(key, slot, waiting)
    elif _slots.get(key) is slot:
        del _slots[key]
