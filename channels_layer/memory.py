"""A channel layer kept in this process's memory: for development, tests and single-process sites.

Messages are stored msgpack-encoded, exactly as the Redis layer sends them, so a message
that works here works there and every receiver decodes its own copy.

It is safe to use from several threads and event loops at once (for example
``async_to_sync(layer.send)`` from a worker thread): state is guarded by a
``threading.Lock`` that is never held across an ``await``, and a receiver waiting on
another loop is woken with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from .base import BaseChannelLayer, CapacityPattern, Message
from .exceptions import ChannelFull

logger = logging.getLogger(__name__)


@dataclass
class _Queue:
    """One channel's pending messages and the receivers waiting for one."""

    # (time.monotonic() deadline, msgpack payload); deadlines only grow, so expired
    # messages are always at the left end.
    messages: deque[tuple[float, bytes]] = field(default_factory=deque)
    waiters: deque[asyncio.Future[None]] = field(default_factory=deque)


class InMemoryChannelLayer(BaseChannelLayer):
    """Channel layer for one process; see the module docstring for thread/loop safety."""

    extensions = ["groups", "flush"]

    def __init__(
        self,
        *,
        expiry: float = 60,
        group_expiry: float = 86400,
        capacity: int = 100,
        channel_capacity: Mapping[CapacityPattern, int] | None = None,
    ) -> None:
        super().__init__(
            expiry=expiry,
            group_expiry=group_expiry,
            capacity=capacity,
            channel_capacity=channel_capacity,
        )
        self._lock = threading.Lock()
        self._channels: dict[str, _Queue] = {}
        # group -> {channel: membership deadline on time.monotonic()}
        self._groups: dict[str, dict[str, float]] = {}

    async def send(self, channel: str, message: Message) -> None:
        """Queue ``message``; raise ``ChannelFull`` when ``channel`` holds ``capacity`` messages."""
        self.require_valid_channel_name(channel)
        payload = self.serialize(message)
        with self._lock:
            if not self._enqueue(channel, payload):
                capacity = self.get_capacity(channel)
                raise ChannelFull(f"Channel {channel!r} is at its capacity of {capacity} messages")

    async def receive(self, channel: str) -> Message:
        """Wait for the next unexpired message on ``channel``; each message reaches one receiver."""
        self.require_valid_channel_name(channel)
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                queue = self._channels.setdefault(channel, _Queue())
                _drop_expired(queue)
                if queue.messages:
                    _, payload = queue.messages.popleft()
                    self._forget_if_idle(channel, queue)
                    break
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
        return self.deserialize(payload)

    async def new_channel(self, prefix: str = "specific") -> str:
        """Return ``f"{prefix}.inmemory!{16 random hex digits}"``, a name no one else uses."""
        suffix = f".inmemory!{secrets.token_hex(8)}"
        self.require_valid_prefix(prefix, room=len(suffix))
        return prefix + suffix

    async def group_add(self, group: str, channel: str) -> None:
        """Add ``channel`` to ``group``, or renew its membership for another ``group_expiry``."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        with self._lock:
            self._groups.setdefault(group, {})[channel] = time.monotonic() + self.group_expiry

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group``; not an error if it was not a member."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        with self._lock:
            members = self._groups.get(group)
            if members is not None:
                members.pop(channel, None)
                if not members:
                    del self._groups[group]

    async def group_send(self, group: str, message: Message) -> None:
        """Deliver ``message`` to every live member; a full member misses it, no error."""
        self.require_valid_group_name(group)
        payload = self.serialize(message)  # once: every member gets the same bytes
        with self._lock:
            members = self._groups.get(group)
            if members is None:
                return
            now = time.monotonic()
            for channel, deadline in list(members.items()):
                if deadline <= now:
                    del members[channel]
                elif not self._enqueue(channel, payload):
                    logger.debug("group_send to %r skipped full channel %r", group, channel)
            if not members:
                del self._groups[group]

    async def flush(self) -> None:
        """Drop every queued message and group; receivers already waiting keep waiting."""
        with self._lock:
            self._groups.clear()
            for channel, queue in list(self._channels.items()):
                queue.messages.clear()
                self._forget_if_idle(channel, queue)

    async def close(self) -> None:
        """Do nothing: there is no connection to release, and the registry shares this
        instance across the process, so emptying it here would lose other consumers' messages.
        """

    def _enqueue(self, channel: str, payload: bytes) -> bool:
        """Queue ``payload`` and wake one receiver; False if the channel is full. Hold the lock."""
        queue = self._channels.setdefault(channel, _Queue())
        _drop_expired(queue)  # expired messages must not count against capacity
        if len(queue.messages) >= self.get_capacity(channel):
            return False
        queue.messages.append((time.monotonic() + self.expiry, payload))
        _wake_one(queue)
        return True

    def _forget_if_idle(self, channel: str, queue: _Queue) -> None:
        """Drop an empty channel nobody waits on, so departed consumers leave no trace."""
        if not queue.messages and not queue.waiters and self._channels.get(channel) is queue:
            del self._channels[channel]


def _drop_expired(queue: _Queue) -> None:
    now = time.monotonic()
    while queue.messages and queue.messages[0][0] <= now:
        queue.messages.popleft()


def _wake_one(queue: _Queue) -> None:
    """Wake the longest-waiting live receiver if a message is queued. Hold the lock."""
    if not queue.messages:
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    while queue.waiters:
        waiter = queue.waiters.popleft()
        loop = waiter.get_loop()
        if waiter.done() or loop.is_closed():
            continue  # its receiver is gone (cancelled, or its loop ended)
        if loop is running:
            waiter.set_result(None)
            return
        try:
            loop.call_soon_threadsafe(_resolve, waiter)
        except RuntimeError:  # the loop closed since we checked
            continue
        return


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():  # it may have been cancelled while the wake-up was in flight
        waiter.set_result(None)
