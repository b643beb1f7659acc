"""``Outbox``: what sync handler code sends, carried back to the event loop in order.

The invariants it keeps are ``consumers.threads``' (one handler at a time per connection,
its messages out in order and all of them before the next message): the pool runs the
handler there, the outbox carries its sends and its end back here.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from consumers.threads import Outcome, SyncPool, hand_back, restore_context
from consumers.types import Message, Send

# A failed send is the consumer's: it logs under the consumer's name.
logger = logging.getLogger("consumers.consumer")

R = TypeVar("R")


class _Run:
    """One handler call of an ``Outbox.run``: how it ended, and the future its consumer
    waits on (woken by the end and by what the handler sends)."""

    __slots__ = ("outcome", "waiter")

    def __init__(self, waiter: asyncio.Future[None]) -> None:
        self.waiter: asyncio.Future[None] | None = waiter
        self.outcome: Outcome | None = None

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def ended(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self.wake()


class Outbox:
    """The messages sync handler code sends, delivered in order on the event loop.

    A handler thread only queues a message and wakes the loop once per batch. While the
    consumer waits for its handler (``run``), its task sends them; otherwise (a thread of
    the application's own, a cancelled consumer) a drain task does. A failed send is
    logged, once; once the client has gone (``OSError`` from the server), or the loop has
    closed, later messages are dropped.
    """

    def __init__(self, send: Send) -> None:
        self._send = send
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        self._queued: deque[Message] = deque()
        self._draining: asyncio.Task[None] | None = None
        self._wake_scheduled = False
        self._run: _Run | None = None
        self.gone = False

    def put(self, message: Message) -> None:
        """Queue a message from any thread."""
        lock = self._lock
        lock.acquire()  # not ``with`` (here and in ``run``): 0.2 us less a message
        try:
            if self.gone:
                return
            self._queued.append(message)
            if self._wake_scheduled:
                return
            self._wake_scheduled = True
        finally:
            lock.release()
        if not hand_back(self._loop, Outbox._woken, self, None):
            with self._lock:  # the loop has closed: nothing will ever send these
                self.gone = True
                self._queued.clear()

    async def run(self, pool: SyncPool, func: Callable[..., R], *args: Any) -> R:
        """Run ``func(*args)`` on ``pool``, sending what it queues here from this task as
        it queues it; return (or raise) what it did once it has ended and all it sent is
        out."""
        if self._queued or self._draining is not None:
            await self.flush()  # what was queued before goes first
        context = contextvars.copy_context()
        waiter = self._loop.create_future()
        run = self._run = _Run(waiter)
        lock, queued = self._lock, self._queued
        try:
            pool.submit(_Run.ended, run, context, func, args, {})
            while True:
                await waiter
                while True:  # _send_queued's lines, in place: one coroutine less a call
                    lock.acquire()
                    try:
                        if not queued:
                            self._wake_scheduled = False
                            break
                        message = queued.popleft()
                    finally:
                        lock.release()
                    try:
                        await self._send(message)
                    except OSError:
                        self._client_gone()
                    except Exception:
                        logger.exception("Could not send %r to the client", message.get("type"))
                outcome = run.outcome
                if outcome is not None:
                    break
                waiter = run.waiter = self._loop.create_future()
        except BaseException:
            run.waiter = self._run = None
            self._settle()  # a cancelled run: what its handler queued goes out from a drain
            restore_context(context)
            raise
        # Ended: all it queued is out, and what another thread queues from now on wakes a
        # drain of its own (no run to wake), so there is nothing to settle.
        run.waiter = self._run = None
        restore_context(context)
        ok, value = outcome
        if ok:
            return value
        try:
            raise value
        finally:
            del value, outcome, run  # no cycle through this frame's traceback

    async def send_now(self, message: Message) -> None:
        """Send from the event loop, after everything already queued."""
        await self.flush()
        await self._send(message)

    @property
    def idle(self) -> bool:
        """Nothing queued or being sent (read on the loop)."""
        return not self._queued and self._draining is None

    async def flush(self) -> None:
        """Return once every queued message has been sent."""
        while self._queued or self._draining is not None:
            if self._draining is None:
                self._start_draining()
            assert self._draining is not None  # noqa: S101  for mypy: set just above
            await self._draining

    def _woken(self, _: None) -> None:
        if self._run is not None:
            self._run.wake()  # the consumer's task sends them
        else:
            self._start_draining()

    def _settle(self) -> None:
        """After a run: what a cancelled run left queued goes out from a drain task."""
        with self._lock:
            if not self._queued:
                self._wake_scheduled = False
                return
        self._start_draining()

    def _start_draining(self) -> None:
        if self._draining is None:
            self._draining = self._loop.create_task(self._drain())

    async def _drain(self) -> None:
        try:
            await self._send_queued()
        finally:
            self._draining = None

    async def _send_queued(self) -> None:
        while True:
            with self._lock:
                if not self._queued:
                    self._wake_scheduled = False
                    return
                message = self._queued.popleft()
            try:
                await self._send(message)
            except OSError:
                self._client_gone()
            except Exception:
                logger.exception("Could not send %r to the client", message.get("type"))

    def _client_gone(self) -> None:
        with self._lock:
            self.gone = True
            self._queued.clear()
