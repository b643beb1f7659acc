"""A consumer's turn between its connection and its layer channel (``consumers.consumer``)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from consumers.consumer import AsyncConsumer


class Turn:
    """The consumer's turn between its connection and its layer channel: a FIFO lock taken
    without a coroutine when free (``asyncio.Lock.acquire`` is one, and on Python 3.11 it
    also walks its waiters through a generator once anyone has waited: 0.4 us a frame).
    A release hands the turn straight to the first waiter. The waiters are a list made at
    the first wait, not a deque: at most the consumer's two sides wait, and most idle
    connections never do (an empty deque is 700 B a connection).

    Called with the layer's ready future, it starts its consumer's layer side: the done
    callback of ``_idle``, instead of a bound method each idle connection would keep."""

    __slots__ = ("_consumer", "_waiters", "held")

    def __init__(self, consumer: AsyncConsumer | None = None) -> None:
        self.held = False
        self._waiters: list[asyncio.Future[None]] | None = None
        self._consumer = consumer

    def __call__(self, ready: asyncio.Future[None]) -> None:
        consumer = self._consumer
        if consumer is not None:  # None once the consumer has ended
            consumer._start_reading(ready)

    def take_now(self) -> bool:
        """Take the turn if it is free."""
        if self.held:
            return False
        self.held = True
        return True

    async def take(self) -> None:
        """Take the turn, waiting for it after those already waiting."""
        if self.take_now():
            return
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed the turn, then cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)  # still held: the waiter has it now
                return
        self.held = False
