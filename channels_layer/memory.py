"""A channel layer kept in this process's memory: for development, tests and single-process sites.

Messages are stored msgpack-encoded, exactly as the Redis layer sends them, so a message
that works here works there and every receiver decodes its own copy. Safe to use from
several threads and event loops at once (see ``channels_layer.mailbox``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from . import metrics
from .base import WHEN_READY, BaseChannelLayer, Message
from .exceptions import ChannelFull
from .mailbox import GroupMembers, Mailboxes

logger = logging.getLogger(__name__)

SWEEP_EVERY = 1.0  # seconds


class InMemoryChannelLayer(BaseChannelLayer):
    """Channel layer for one process; see the module docstring for thread/loop safety."""

    extensions = ["groups", "flush", WHEN_READY]

    def __init__(self, **config: Any) -> None:
        """Takes ``BaseChannelLayer``'s keywords: expiry, group_expiry, capacity,
        channel_capacity, max_message_size."""
        super().__init__(**config)
        self._mailboxes = Mailboxes(on_discard=metrics.counting_expiries("memory"))
        self._groups = GroupMembers()
        self._next_sweep = 0.0
        metrics.watch_layer("memory", self._mailboxes, self._groups)

    @metrics.timed("memory", "send")
    async def send(self, channel: str, message: Message) -> None:
        """Queue ``message``; raise ``ChannelFull`` when ``channel`` holds ``capacity`` messages."""
        self.require_valid_channel_name(channel)
        payload = self.serialize(message)
        capacity = self.get_capacity(channel)
        if not self._mailboxes.put(channel, payload, self.expiry, capacity):
            metrics.dropped_full["memory"]()
            raise ChannelFull(f"Channel {channel!r} is at its capacity of {capacity} messages")

    async def receive(self, channel: str) -> Message:
        """Wait for the next unexpired message on ``channel``; each message reaches one receiver."""
        self.require_valid_channel_name(channel)
        self._sweep_now_and_then()
        payload, _ = await self._mailboxes.get(channel)
        return self.deserialize(payload)

    def _sweep_now_and_then(self) -> None:
        """Drop expired messages of every channel, at most once per ``SWEEP_EVERY`` (or
        ``expiry``): a channel nobody reads any more would otherwise keep them for ever."""
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + min(SWEEP_EVERY, self.expiry)
            self._mailboxes.sweep()

    async def when_ready(self, channel: str) -> asyncio.Future[None] | None:
        """See ``BaseChannelLayer.when_ready``."""
        self.require_valid_channel_name(channel)
        return self._mailboxes.when_ready(channel)

    async def new_channel(self, prefix: str = "specific") -> str:
        """Return ``f"{prefix}.inmemory!{16 random hex digits}"``, a name no one else uses."""
        return self._new_channel_name(prefix, "inmemory")

    async def group_add(self, group: str, channel: str) -> None:
        """Add ``channel`` to ``group``, or renew its membership for another ``group_expiry``."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        self._groups.add(group, channel, self.group_expiry)

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group``; not an error if it was not a member."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        self._groups.discard(group, channel)

    @metrics.timed("memory", "group_send")
    async def group_send(self, group: str, message: Message) -> None:
        """Deliver ``message`` to every live member; a full member misses it, no error."""
        self.require_valid_group_name(group)
        payload = self.serialize(message)  # once: every member gets the same bytes
        for channel in self._groups.live_members(group):
            if not self._mailboxes.put(channel, payload, self.expiry, self.get_capacity(channel)):
                self.skipped_members.skipped(group, channel)
                metrics.dropped_full["memory"]()

    async def flush(self) -> None:
        """Drop every queued message and group; receivers already waiting keep waiting."""
        self._groups.clear()
        self._mailboxes.clear()

    # Channels' in-memory layer keeps these as public dicts, and tests look inside them.

    @property
    def channels(self) -> Mailboxes:
        """The channels holding messages or receivers: ``in``, ``len``, iteration and
        ``keys()`` work as on Channels' dict (read-only: ``flush()`` empties it)."""
        return self._mailboxes

    @property
    def groups(self) -> dict[str, dict[str, float]]:
        """A copy of ``{group: {channel: membership deadline}}``; empty groups are gone."""
        return self._groups.snapshot()

    async def close(self) -> None:
        """Do nothing: there is no connection to release, and the registry shares this
        instance across the process, so emptying it here would lose other consumers' messages.
        """
