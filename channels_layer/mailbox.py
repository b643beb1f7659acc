"""Channel queues held in this process's memory (the way the layer wakes code on another
thread's event loop is ``wakeups``'s; the futures consumers wait on, ``ready``'s).

The in-memory layer is just these and its group memberships (``group_members``, also
importable from here); the Redis layer uses them for the channels and
group members that live in this process, so that a broadcast crosses Redis once per process
and is fanned out here (the Phoenix.PubSub model). The layer side's concurrency lives here;
the consumer side's is in ``consumers.threads``.

Invariants:

- Any thread and any event loop may call these at once (``async_to_sync(layer.send)`` from
  a worker thread, a consumer on the server's loop, the Redis layer's own loop). State is
  guarded by a ``threading.Lock`` that is never held across an ``await``.
- Each message reaches exactly one receiver, in the order it was queued. A wake-up only
  says "try again": the message stays queued until a receiver pops it, so a receiver
  cancelled after it was woken loses nothing, and its wake-up passes to the next one.
- A future belongs to the loop that made it and is resolved only on that loop:
  from elsewhere through ``call_soon_on`` (``wake`` for futures), which every module of the
  layer uses and which gives up quietly on a loop that has closed or a future already
  done (a receiver that has gone).
- Eager hand-over (``EagerReceiver``): a message for an idle receiver waiting on the
  sender's own loop, with nothing queued before it, is handled in the sender's call instead
  of being queued; it still reaches that one receiver, in order. Never from another thread,
  never nested more than one level, never under this module's lock.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from .handover import Decode, Handing, hand_over, handing_over
from .ready import _idle_receiver, _Ready
from .wakeups import running_loop as _running_loop
from .wakeups import wake

logger = logging.getLogger(__name__)

# Called, under the lock, with (channel, receipt) for every message dropped unread.
OnDiscard = Callable[[str, Any], None]
# Members a fan-out queues to under one hold of the lock: few enough that a thread
# waiting for it (a sync consumer's send) waits a fraction of a millisecond.
FAN_OUT_BATCH = 256
# A queued message: (time.monotonic() deadline, payload, receipt).
Entry = tuple[float, bytes, Any]


class _Queue(list["asyncio.Future[None]"]):
    """One channel's pending messages, and, as the list it is, the receivers waiting for one
    (oldest first): an idle consumer's channel is this one object, not a queue and a list of
    waiters, one object less per connection for the cyclic collector to scan.

    Lists, not deques: an idle connection's queue is empty most of its life, and an empty
    deque costs over 600 bytes against 56; a queue holds at most ``capacity`` messages,
    so taking from the front stays cheap. Messages are a list, or a tuple that is never
    changed, only replaced: every new queue shares one empty tuple until its first
    message (an idle consumer's queue never holds a list, 56 bytes a connection), and
    a fan-out's members with nothing queued before share one tuple of its entry (no
    list a member). A queue ``take`` empties is kept for the next receiver to park, so
    a broadcast to 10,000 ``receive()`` loops makes neither a list nor a queue a member,
    nothing for the collector to count or promote. (No dataclass: this ``__init__`` is
    the cheapest.)
    """

    __slots__ = ("messages",)

    def __init__(self) -> None:
        # (time.monotonic() deadline, payload, receipt); deadlines only grow, so expired
        # messages are always at the front.
        self.messages: list[Entry] | tuple[Entry, ...] = ()

    @property
    def waiters(self) -> list[asyncio.Future[None]]:
        """The receivers waiting, oldest first: the queue itself."""
        return self


class Mailboxes:
    """Bounded FIFO queues by channel name; each message reaches exactly one receiver.

    A ``receipt`` travels with each message and comes back with it (or to ``on_discard``
    if it expires or is flushed), so a backend can account for messages it counted
    elsewhere.
    """

    def __init__(
        self,
        on_discard: OnDiscard | None = None,
        decode: Decode | None = None,
        decode_once: bool = False,
    ) -> None:
        """``decode``: how the layer's ``receive()`` makes a message of a payload and its
        receipt; without it, no receiver is handed a message eagerly. ``decode_once``
        (also settable later): for a fan-out's one payload and receipt it gives the same
        message and does nothing per channel, so the members handed it may each get a copy
        of one decoding (``copy_if_flat``)."""
        self._lock = threading.Lock()
        self._channels: dict[str, _Queue] = {}
        self._on_discard = on_discard
        self._decode = decode
        self.decode_once = decode_once
        self._spare: _Queue | None = None  # a queue ``take`` emptied, kept for the next

    def put(
        self,
        channel: str,
        payload: bytes,
        expiry: float,
        capacity: int | None,
        receipt: Any = None,
        deferred: list[Handing] | None = None,
    ) -> bool:
        """Queue ``payload`` for ``expiry`` seconds and wake one receiver; False if the
        channel already holds ``capacity`` messages (None: no limit).

        An idle eager receiver (nothing queued before, waiting with ``offer_eagerly`` on
        this thread's loop) handles the message in this call instead (with ``deferred``:
        see ``put_many``)."""
        loop = _running_loop()
        eager = self._eager_list(loop, deferred)
        with self._lock:
            queued = self._put(channel, payload, expiry, capacity, receipt, loop, None, eager)
        if eager and deferred is None:
            self.hand_over(eager)
        return queued

    def put_many(
        self,
        channels: list[str],
        payload: bytes,
        expiry: float,
        capacity: Callable[[str], int | None],
        receipt: Any = None,
        deferred: list[Handing] | None = None,
    ) -> list[str]:
        """``put`` the same ``payload`` to each of ``channels`` (a group's fan-out); the
        channels that were full. One pass: the lock, the clock and the running loop are
        read once per ``FAN_OUT_BATCH`` channels, not per member. With ``deferred``, the
        idle eager receivers are only claimed, into that list: the caller hands them
        their messages (``hand_over``) once it holds no lock a handler might want."""
        full = []
        loop = _running_loop()
        eager = self._eager_list(loop, deferred)
        try:
            queues = self._channels
            for start in range(0, len(channels), FAN_OUT_BATCH):
                with self._lock:
                    now = time.monotonic()
                    # One entry for the batch's members: a tuple, never changed, so they
                    # may share it (a tuple and a float less a member); and as the only
                    # message of an empty queue, one tuple of it (a list less a member).
                    entry = (now + expiry, payload, receipt)
                    alone = (entry,)
                    for channel in channels[start : start + FAN_OUT_BATCH]:
                        queue = queues.get(channel)
                        if queue is None or queue.messages:
                            limit = capacity(channel)
                            if not self._put(
                                channel, payload, expiry, limit, receipt, loop, now, eager
                            ):
                                full.append(channel)
                            continue
                        # _put's usual case, less its calls: no capacity to check
                        first = queue[0] if queue else None
                        if (
                            first is not None
                            and type(first) is not _Ready  # a receive() waits: _wake_one's
                            and first.get_loop() is loop
                            and not first.done()
                        ):
                            queue.messages = alone
                            del queue[0]
                            first.set_result(None)
                            continue
                        if eager is not None:
                            # _idle_receiver's usual case, less its call: the first waiter
                            # a live eager _Ready on this loop
                            if (
                                type(first) is _Ready
                                and first.eager is not None
                                and first.get_loop() is loop
                                and not first.done()
                            ):
                                ready = first if first.eager.claim() else None
                            else:
                                ready = _idle_receiver(queue, loop)
                            if ready is not None:
                                eager += (channel, ready, payload, receipt)
                                continue
                        queue.messages = alone
                        _wake_one(queue, loop)
        finally:
            # Once every member has it: what a handler sends comes after it everywhere
            # (and, should a pass fail, what was claimed is still handled).
            if eager and deferred is None:
                self.hand_over(eager)
        return full

    def _put(
        self,
        channel: str,
        payload: bytes,
        expiry: float,
        capacity: int | None,
        receipt: Any,
        loop: asyncio.AbstractEventLoop | None,
        now: float | None = None,
        eager: list[Handing] | None = None,
    ) -> bool:
        """``put`` under the lock; ``loop`` is the running loop (None: none here). With
        ``eager``, a message for an idle eager receiver is added there, not queued."""
        if now is None:
            now = time.monotonic()
        queue = self._channels.get(channel)
        if queue is None:
            queue = self._channels[channel] = _Queue()
        elif queue.messages:
            self._drop_expired(channel, queue, now)  # expired messages must not count
            if capacity is not None and len(queue.messages) >= capacity:
                return False
        if eager is not None and not queue.messages:
            ready = _idle_receiver(queue, loop)
            if ready is not None:
                eager += (channel, ready, payload, receipt)
                return True
        _append(queue, (now + expiry, payload, receipt))
        _wake_one(queue, loop)
        return True

    def _eager_list(
        self, loop: asyncio.AbstractEventLoop | None, deferred: list[Handing] | None
    ) -> list[Handing] | None:
        """Where ``_put`` notes the messages it hands over; None: none may be."""
        if self._decode is None or loop is None or handing_over.running:
            return None
        if sys.exc_info()[1] is not None:  # a sender in an except block: not the handlers'
            return None
        return [] if deferred is None else deferred

    def hand_over(self, eager: list[Handing]) -> None:
        """Have the claimed receivers handle their messages (``handover.hand_over``)."""
        if eager and self._decode is not None:
            hand_over(eager, self._decode, self.decode_once)

    def take(self, channel: str) -> tuple[bytes, Any] | asyncio.Future[None]:
        """The next unexpired message on ``channel``, ``(payload, receipt)``; or, if none,
        a waiter (on the running loop) to await before taking again. A receiver that
        stops waiting (cancelled, say) must call ``abandon`` with it. What ``get()`` does,
        without a coroutine of its own: a ``receive()`` that parks for each message (a
        broadcast's 10,000 members) makes one coroutine, not two."""
        with self._lock:
            queue = self._channels.get(channel)
            if queue is not None and queue.messages:
                if queue.messages[0][0] <= time.monotonic():
                    self._drop_expired(channel, queue, time.monotonic())
                messages = queue.messages
                if messages:
                    if type(messages) is list:  # _pop_first's, inline
                        _, payload, receipt = messages.pop(0)
                    else:
                        _, payload, receipt = messages[0]
                        queue.messages = messages[1:]
                    if not queue.messages and not queue:  # _forget_if_idle's case
                        del self._channels[channel]
                        # Most often its receiver comes back for the next at once.
                        self._spare = queue
                    return payload, receipt
            if queue is None:
                queue = self._spare
                if queue is None:
                    queue = _Queue()
                else:  # emptied, and no longer anyone's: the same as a new one
                    self._spare = None
                self._channels[channel] = queue
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            queue.append(waiter)
            return waiter

    def abandon(self, channel: str, waiter: asyncio.Future[None]) -> None:
        """``take``'s ``waiter`` is no longer awaited (its receiver was cancelled)."""
        with self._lock:
            queue = self._channels.get(channel)
            if queue is None:
                return  # emptied since: no message for a wake-up to be about
            try:
                queue.remove(waiter)
            except ValueError:
                # A sender already chose us; hand its wake-up to the next receiver.
                _wake_one(queue, _running_loop())
            self._forget_if_idle(channel, queue)

    async def get(self, channel: str) -> tuple[bytes, Any]:
        """Wait for the next unexpired message on ``channel``: ``(payload, receipt)``."""
        while True:
            got = self.take(channel)
            if isinstance(got, tuple):
                return got
            try:
                # A wake-up only says "try again": the message stays queued until a receiver
                # pops it, so a receiver cancelled after waking loses nothing.
                await got
            except BaseException:
                self.abandon(channel, got)
                raise

    def when_ready(self, channel: str) -> asyncio.Future[None]:
        """A future resolved once ``channel`` has a message for ``get()`` to take.

        A consumer waits for its first message with this instead of a parked ``get()``: a
        future instead of a task and its coroutine frames, about 2 KiB less per connection.
        Like a ``get()`` wake-up it only says "try now"; cancel it to stop waiting.
        """
        ready = _Ready(self, channel)
        with self._lock:
            queue = self._queue(channel)
            self._drop_expired(channel, queue, time.monotonic())
            if queue.messages:
                ready.set_result(None)
                return ready
            _add_waiter(queue, ready)
        return ready

    def _withdraw(self, channel: str, ready: asyncio.Future[None]) -> None:
        """A ``when_ready`` future was cancelled: it waits no more."""
        with self._lock:
            queue = self._channels.get(channel)
            if queue is not None:
                if ready in queue:
                    queue.remove(ready)
                else:  # a sender chose it as it was cancelled: pass the wake-up on
                    _wake_one(queue, _running_loop())
                self._forget_if_idle(channel, queue)

    def _queue(self, channel: str) -> _Queue:
        queue = self._channels.get(channel)
        if queue is None:
            queue = self._channels[channel] = _Queue()
        return queue

    def __contains__(self, channel: str) -> bool:
        return channel in self._channels

    def __len__(self) -> int:
        return len(self._channels)

    # Enough of a read-only mapping for tests looking into Channels' ``layer.channels``.

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def keys(self) -> list[str]:
        """The channels with messages or receivers (a snapshot)."""
        with self._lock:
            return list(self._channels)

    def waiting(self, channel: str) -> int:
        """How many receivers are parked on ``channel`` (for tests and diagnostics)."""
        queue = self._channels.get(channel)
        return 0 if queue is None else len(queue)

    def sweep(self) -> None:
        """Drop expired messages everywhere, so channels nobody reads do not grow forever.
        Only the channels with something to drop are visited twice: a pair made for each of
        10,000 idle consumers' channels, each second, set off a dozen garbage collections."""
        with self._lock:
            now = time.monotonic()
            stale = [
                channel
                for channel, queue in self._channels.items()
                if not queue or (queue.messages and queue.messages[0][0] <= now)
            ]
            for channel in stale:
                queue = self._channels[channel]
                self._drop_expired(channel, queue, now)
                self._forget_if_idle(channel, queue)

    def clear(self) -> None:
        """Drop every queued message; receivers already waiting keep waiting."""
        with self._lock:
            for channel, queue in list(self._channels.items()):
                while queue.messages:
                    self._discard(channel, _pop_first(queue)[2])
                self._forget_if_idle(channel, queue)

    def _drop_expired(self, channel: str, queue: _Queue, now: float) -> None:
        while queue.messages and queue.messages[0][0] <= now:
            self._discard(channel, _pop_first(queue)[2])

    def _discard(self, channel: str, receipt: Any) -> None:
        if self._on_discard is not None:
            self._on_discard(channel, receipt)

    def _forget_if_idle(self, channel: str, queue: _Queue) -> None:
        """Drop an empty channel nobody waits on, so departed consumers leave no trace."""
        if not queue.messages and not queue and self._channels.get(channel) is queue:
            del self._channels[channel]


def _add_waiter(queue: _Queue, waiter: asyncio.Future[None]) -> None:
    """Append ``waiter``; hold the lock."""
    queue.append(waiter)


def _append(queue: _Queue, entry: Entry) -> None:
    """Queue ``entry`` after the others; hold the lock."""
    messages = queue.messages
    if type(messages) is list:
        messages.append(entry)
    else:  # a tuple, never changed (see _Queue)
        queue.messages = [*messages, entry]


def _pop_first(queue: _Queue) -> Entry:
    """Take the first entry; hold the lock and check there is one."""
    messages = queue.messages
    if type(messages) is list:
        return messages.pop(0)
    queue.messages = messages[1:]  # a tuple, never changed: a shorter one
    return messages[0]


def _wake_one(queue: _Queue, running: asyncio.AbstractEventLoop | None) -> None:
    """Wake the longest-waiting live receiver if a message is queued. Hold the lock;
    ``running`` is the running loop (None: none in this thread), read once by the caller:
    a broadcast wakes up to thousands of receivers in one go."""
    if not queue.messages:
        return
    waiters = queue
    while waiters:
        waiter = waiters.pop(0)
        if waiter.done():
            continue  # its receiver is gone (cancelled): try the next
        if waiter.get_loop() is running:  # the usual case: no need to ask the loop
            waiter.set_result(None)
            return
        if wake(waiter):
            return
        # else its loop has ended: try the next
