"""Channel queues and group memberships held in this process's memory.

The in-memory layer is just these two pieces; the Redis layer uses them for the channels and
group members that live in this process, so that a broadcast crosses Redis once per process
and is fanned out here (the Phoenix.PubSub model).

Both are safe to use from several threads and event loops at once (for example
``async_to_sync(layer.send)`` from a worker thread): state is guarded by a
``threading.Lock`` that is never held across an ``await``, and a receiver waiting on another
loop is woken with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

# Called, under the lock, with (channel, receipt) for every message dropped unread.
OnDiscard = Callable[[str, Any], None]


@dataclass(slots=True)
class _Queue:
    """One channel's pending messages and the receivers waiting for one.

    Lists, not deques: an idle connection's queue is empty most of its life, and an empty
    deque costs over 600 bytes against 56; a queue holds at most ``capacity`` messages,
    so taking from the front stays cheap.
    """

    # (time.monotonic() deadline, payload, receipt); deadlines only grow, so expired
    # messages are always at the front.
    messages: list[tuple[float, bytes, Any]] = field(default_factory=list)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)


class Mailboxes:
    """Bounded FIFO queues by channel name; each message reaches exactly one receiver.

    A ``receipt`` travels with each message and comes back with it (or to ``on_discard``
    if it expires or is flushed), so a backend can account for messages it counted
    elsewhere.
    """

    def __init__(self, on_discard: OnDiscard | None = None) -> None:
        self._lock = threading.Lock()
        self._channels: dict[str, _Queue] = {}
        self._on_discard = on_discard

    def put(
        self, channel: str, payload: bytes, expiry: float, capacity: int | None, receipt: Any = None
    ) -> bool:
        """Queue ``payload`` for ``expiry`` seconds and wake one receiver; False if the
        channel already holds ``capacity`` messages (None: no limit)."""
        with self._lock:
            queue = self._queue(channel)
            self._drop_expired(channel, queue)  # expired messages must not count
            if capacity is not None and len(queue.messages) >= capacity:
                self._forget_if_idle(channel, queue)
                return False
            queue.messages.append((time.monotonic() + expiry, payload, receipt))
            _wake_one(queue)
            return True

    async def get(self, channel: str) -> tuple[bytes, Any]:
        """Wait for the next unexpired message on ``channel``: ``(payload, receipt)``."""
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                queue = self._queue(channel)
                self._drop_expired(channel, queue)
                if queue.messages:
                    _, payload, receipt = queue.messages.pop(0)
                    self._forget_if_idle(channel, queue)
                    return payload, receipt
                waiter: asyncio.Future[None] = loop.create_future()
                queue.waiters.append(waiter)
            try:
                # A wake-up only says "try again": the message stays queued until a receiver
                # pops it here, so a receiver cancelled after waking loses nothing.
                await waiter
            except BaseException:
                with self._lock:
                    try:
                        queue.waiters.remove(waiter)
                    except ValueError:
                        # A sender already chose us; hand its wake-up to the next receiver.
                        _wake_one(queue)
                    self._forget_if_idle(channel, queue)
                raise

    def when_ready(self, channel: str) -> asyncio.Future[None]:
        """A future resolved once ``channel`` has a message for ``get()`` to take.

        A consumer waits for its first message with this instead of a parked ``get()``: a
        future instead of a task and its coroutine frames, about 2 KiB less per connection.
        Like a ``get()`` wake-up it only says "try now"; cancel it to stop waiting.
        """
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            queue = self._queue(channel)
            self._drop_expired(channel, queue)
            if queue.messages:
                ready.set_result(None)
                return ready
            queue.waiters.append(ready)
        ready.add_done_callback(functools.partial(self._withdraw, channel))
        return ready

    def _withdraw(self, channel: str, ready: asyncio.Future[None]) -> None:
        if not ready.cancelled():
            return
        with self._lock:
            queue = self._channels.get(channel)
            if queue is not None:
                if ready in queue.waiters:
                    queue.waiters.remove(ready)
                else:  # a sender chose it as it was cancelled: pass the wake-up on
                    _wake_one(queue)
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
        return 0 if queue is None else len(queue.waiters)

    def sweep(self) -> None:
        """Drop expired messages everywhere, so channels nobody reads do not grow forever."""
        with self._lock:
            for channel, queue in list(self._channels.items()):
                self._drop_expired(channel, queue)
                self._forget_if_idle(channel, queue)

    def clear(self) -> None:
        """Drop every queued message; receivers already waiting keep waiting."""
        with self._lock:
            for channel, queue in list(self._channels.items()):
                while queue.messages:
                    self._discard(channel, queue.messages.pop(0)[2])
                self._forget_if_idle(channel, queue)

    def _drop_expired(self, channel: str, queue: _Queue) -> None:
        now = time.monotonic()
        while queue.messages and queue.messages[0][0] <= now:
            self._discard(channel, queue.messages.pop(0)[2])

    def _discard(self, channel: str, receipt: Any) -> None:
        if self._on_discard is not None:
            self._on_discard(channel, receipt)

    def _forget_if_idle(self, channel: str, queue: _Queue) -> None:
        """Drop an empty channel nobody waits on, so departed consumers leave no trace."""
        if not queue.messages and not queue.waiters and self._channels.get(channel) is queue:
            del self._channels[channel]


def _wake_one(queue: _Queue) -> None:
    """Wake the longest-waiting live receiver if a message is queued. Hold the lock."""
    if not queue.messages:
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    while queue.waiters:
        waiter = queue.waiters.pop(0)
        loop = waiter.get_loop()
        if waiter.done() or loop.is_closed():
            continue  # its receiver is gone (cancelled, or its loop ended)
        if loop is running:
            waiter.set_result(None)
            return
        try:
            loop.call_soon_threadsafe(resolve, waiter)
        except RuntimeError:  # the loop closed since we checked
            continue
        return


def resolve(waiter: asyncio.Future[None]) -> None:
    """Wake ``waiter`` (run on its loop); shared by every waker in this package."""
    if not waiter.done():  # it may have been cancelled while the wake-up was in flight
        waiter.set_result(None)


class GroupMembers:
    """Which channels belong to which group, each membership with its own deadline."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # group -> {channel: membership deadline on time.monotonic()}
        self._groups: dict[str, dict[str, float]] = {}

    def add(self, group: str, channel: str, expiry: float) -> bool:
        """Add or renew a membership; True if the group had no members before."""
        with self._lock:
            members = self._groups.get(group)
            first = members is None
            if members is None:
                members = self._groups[group] = {}
            members[channel] = time.monotonic() + expiry
            return first

    def discard(self, group: str, channel: str) -> bool:
        """Remove a membership; True if that left the group empty."""
        with self._lock:
            members = self._groups.get(group)
            if members is None or members.pop(channel, None) is None:
                return False
            if members:
                return False
            del self._groups[group]
            return True

    def live_members(self, group: str) -> list[str]:
        """The group's unexpired members, forgetting the expired ones."""
        with self._lock:
            members = self._groups.get(group)
            if members is None:
                return []
            now = time.monotonic()
            for channel in [c for c, deadline in members.items() if deadline <= now]:
                del members[channel]
            if not members:
                del self._groups[group]
            return list(members)

    def groups(self) -> list[str]:
        with self._lock:
            return list(self._groups)

    def snapshot(self) -> dict[str, dict[str, float]]:
        """``{group: {channel: membership deadline on time.monotonic()}}``, copied."""
        with self._lock:
            return {group: dict(members) for group, members in self._groups.items()}

    def clear(self) -> None:
        with self._lock:
            self._groups.clear()
