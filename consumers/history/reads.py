"""Shared reads: the consumers of one process that need the same read at the same moment
share one.

A thousand clients that dropped together come back together, each asking for the same
missed messages (and, when those are gone, each reloading the same state from the
database); reading once per process instead of once per client is what keeps Redis and the
database idle through it. A caller may only use a read that started after a moment of its
choosing (for a history read: after it subscribed, since anything sent later reaches it
live; for a reload: after its position was fixed), so at most two reads of a key exist:
the one running and the next one, which every caller that came too late for the running
one waits for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from channels_layer.history import Position

T = TypeVar("T")


@dataclass
class _Read(Generic[T]):
    future: asyncio.Future[T]
    started: float | None = None  # loop time at which it was asked


@dataclass
class _Slot(Generic[T]):
    make: Callable[[], Awaitable[T]]
    running: _Read[T] | None = None
    waiting: _Read[T] | None = None  # starts when the running one ends


class SharedReads(Generic[T]):
    """Reads by key, each shared by the callers that may use it."""

    def __init__(self) -> None:
        self._slots: dict[tuple[int, Hashable], _Slot[T]] = {}

    async def read(self, key: Hashable, make: Callable[[], Awaitable[T]], after: float) -> T:
        """``await make()``, or the result of the same key's read that started at loop time
        ``after`` or later, shared; its exception, if it fails, reaches every caller."""
        loop = asyncio.get_running_loop()
        slot_key = (id(loop), key)
        slot = self._slots.get(slot_key)
        if slot is None:
            slot = self._slots[slot_key] = _Slot(make)
        running = slot.running
        if running is not None and running.started is not None and running.started >= after:
            read = running
        elif running is None:
            read = slot.running = self._start(slot_key, slot, _Read(loop.create_future()))
        else:
            if slot.waiting is None:
                slot.waiting = _Read(loop.create_future())
            read = slot.waiting
        # Shielded: a caller that leaves while waiting must not cancel the others' read.
        return await asyncio.shield(read.future)

    def _start(self, slot_key: tuple[int, Hashable], slot: _Slot[T], read: _Read[T]) -> _Read[T]:
        loop = asyncio.get_running_loop()
        read.started = loop.time()
        task = loop.create_task(_run(slot.make, read))
        task.add_done_callback(lambda _: self._next(slot_key, slot))
        return read

    def _next(self, slot_key: tuple[int, Hashable], slot: _Slot[T]) -> None:
        slot.running, waiting, slot.waiting = None, slot.waiting, None
        if waiting is not None:
            slot.running = self._start(slot_key, slot, waiting)
        elif self._slots.get(slot_key) is slot:
            del self._slots[slot_key]


async def _run(make: Callable[[], Awaitable[T]], read: _Read[T]) -> None:
    try:
        read.future.set_result(await make())
    except asyncio.CancelledError:
        read.future.cancel()
        raise
    except Exception as error:  # HistoryLost, an outage: every waiter gets it
        read.future.set_exception(error)
        read.future.exception()  # retrieved: the waiters may all have left


_history_reads: SharedReads[list[dict[str, Any]]] = SharedReads()


async def read_history(
    layer: Any, group: str, since: Position, limit: int, subscribed_at: float
) -> list[dict[str, Any]]:
    """``layer.group_history(group, since, limit)``, shared with the other consumers of this
    loop that ask for the same batch and subscribed before it was asked. Each caller gets
    its own copies of the messages."""
    key = (id(layer), group, since.epoch, since.offset, limit)

    def make() -> Awaitable[list[dict[str, Any]]]:
        return layer.group_history(group, since, limit=limit)

    messages = await _history_reads.read(key, make, subscribed_at)
    return [dict(message) for message in messages]
