"""A channel layer kept in this process's memory: for development, tests and single-process sites.

Messages are stored msgpack-encoded, exactly as the Redis layer sends them, so a message
that works here works there and every receiver gets its own copy (the idle members of a
broadcast handed it eagerly: copies of one decoding, see ``Mailboxes``). Safe to use from
several threads and event loops at once (see ``channels_layer.mailbox``). Groups configured
for history keep their last messages here too (``channels_layer.history``), in an epoch
drawn when the group is first used, so a restarted process starts new epochs.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import metrics
from .base import HISTORY, WHEN_READY, BaseChannelLayer, Message
from .exceptions import ChannelFull
from .group_members import GroupMembers
from .history import (
    POSITION_KEY,
    HistoryConfig,
    HistoryRule,
    Position,
    check_kept,
    position_of,
    require_limit,
    require_position,
)
from .mailbox import Handing, Mailboxes

logger = logging.getLogger(__name__)

SWEEP_EVERY = 1.0  # seconds
# Channel names receive() remembers as valid, at most (then it forgets them all): the
# check is a regex match, which a broadcast to thousands of consumers would pay each time.
CHECKED_NAMES_KEPT = 65536


class InMemoryChannelLayer(BaseChannelLayer):
    """Channel layer for one process; see the module docstring for thread/loop safety."""

    extensions = ["groups", "flush", WHEN_READY, HISTORY]

    def __init__(self, history: Mapping[Any, Any] | None = None, **config: Any) -> None:
        """Takes ``BaseChannelLayer``'s keywords: expiry, group_expiry, capacity,
        channel_capacity, max_message_size; and ``history``, ``{group pattern: {"size":
        messages, "ttl": seconds}}`` (see ``channels_layer.history``)."""
        super().__init__(**config)
        self.history = HistoryConfig(history)
        self._mailboxes = Mailboxes(
            on_discard=metrics.counting_expiries("memory"),
            decode=lambda channel, payload, receipt: self.deserialize(payload),
            # A subclass's own deserialize may not be a pure function of the payload.
            decode_once=type(self).deserialize is BaseChannelLayer.deserialize,
        )
        self._groups = GroupMembers()
        self._next_sweep = 0.0
        self._kept = _KeptHistories(self.group_expiry)
        self._checked_names: set[str] = set()  # valid channel names receive() was given
        metrics.watch_layer("memory", self._mailboxes, self._groups)

    async def send(self, channel: str, message: Message) -> None:
        """Queue ``message``; raise ``ChannelFull`` when ``channel`` holds ``capacity`` messages.
        An idle consumer may handle it in this call (``consumers.eager``), outside the time
        the layer's metrics give the call."""
        handing: list[Handing] = []
        try:
            await self._send(channel, message, handing)
        finally:  # what was claimed must be handled, or its consumer keeps its turn
            self._mailboxes.hand_over(handing)

    @metrics.timed("memory", "send")
    async def _send(self, channel: str, message: Message, handing: list[Handing]) -> None:
        self.require_valid_channel_name(channel)
        self._sweep_now_and_then()  # a receiver handed its messages eagerly never sweeps
        payload = self.serialize(message)
        capacity = self.get_capacity(channel)
        if not self._mailboxes.put(channel, payload, self.expiry, capacity, deferred=handing):
            metrics.dropped_full["memory"]()
            raise ChannelFull(f"Channel {channel!r} is at its capacity of {capacity} messages")

    async def receive(self, channel: str) -> Message:
        """Wait for the next unexpired message on ``channel``; each message reaches one receiver."""
        self._check_receiving_name(channel)
        self._sweep_now_and_then()
        while True:  # Mailboxes.get, without a coroutine of its own
            got = self._mailboxes.take(channel)
            if isinstance(got, tuple):
                return self.deserialize(got[0])
            try:
                await got
            except BaseException:
                self._mailboxes.abandon(channel, got)
                raise

    def _check_receiving_name(self, channel: str) -> None:
        """A consumer receives on one name, again and again: check it once."""
        if type(channel) is not str or channel not in self._checked_names:
            self.require_valid_channel_name(channel)
            if len(self._checked_names) >= CHECKED_NAMES_KEPT:
                self._checked_names.clear()
            self._checked_names.add(channel)

    def _sweep_now_and_then(self) -> None:
        """Drop expired messages of every channel, at most once per ``SWEEP_EVERY`` (or
        ``expiry``): a channel nobody reads any more would otherwise keep them for ever."""
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + min(SWEEP_EVERY, self.expiry)
            self._mailboxes.sweep()

    async def when_ready(self, channel: str) -> asyncio.Future[None] | None:
        """See ``BaseChannelLayer.when_ready``."""
        self._check_receiving_name(channel)
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

    async def group_send(self, group: str, message: Message) -> Position | None:
        """Deliver ``message`` to every live member; a full member misses it, no error.
        For a group with history: keep it, and return its ``Position`` (None otherwise).
        Idle members may handle it in this call (``consumers.eager``), once every member
        has it, after the layer's own work (and the time its metrics give the call)."""
        handing: list[Handing] = []
        try:
            return await self._group_send(group, message, handing)
        finally:  # what was claimed must be handled; outside the history's lock
            self._mailboxes.hand_over(handing)

    @metrics.timed("memory", "group_send")
    async def _group_send(
        self, group: str, message: Message, handing: list[Handing]
    ) -> Position | None:
        self.require_valid_group_name(group)
        rule = self.history.rule(group)
        if rule is None:
            self._deliver(group, self.serialize(message), handing)
            return None
        with self._kept.lock:  # so members get a group's messages in the order of offsets
            kept = self._kept.of(group, rule)
            position = Position(kept.epoch, kept.offset + 1)
            # Once: every member, and the history, get the same bytes.
            payload = self.serialize({**message, POSITION_KEY: position_of(group, position)})
            kept.add(payload)
            self._deliver(group, payload, handing)
        return position

    async def group_position(self, group: str) -> Position:
        """The epoch of ``group`` and its last offset; ``ValueError`` if it keeps no history."""
        self.require_valid_group_name(group)
        rule = self.history.require(group)
        with self._kept.lock:
            kept = self._kept.of(group, rule)
            return Position(kept.epoch, kept.offset)

    async def group_history(
        self, group: str, since: Position, limit: int | None = None
    ) -> list[Message]:
        """The kept messages of ``group`` after ``since``, oldest first (at most ``limit``);
        ``HistoryLost`` if ``since`` is of another epoch or some of them are gone."""
        self.require_valid_group_name(group)
        rule = self.history.require(group)
        since, limit = require_position(since), require_limit(limit)
        with self._kept.lock:
            kept = self._kept.of(group, rule)
            kept.trim()
            first = kept.entries[0][0] if kept.entries else None
            check_kept(group, since, Position(kept.epoch, kept.offset), first)
            start = since.offset + 1 - first if first is not None else 0
            stop = None if limit is None else start + limit
            payloads = [payload for _, _, payload in itertools.islice(kept.entries, start, stop)]
        return [self.deserialize(payload) for payload in payloads]

    def _deliver(self, group: str, payload: bytes, handing: list[Handing]) -> None:
        """Queue ``payload`` for the members (``handing``: see ``Mailboxes.put_many``)."""
        self._sweep_now_and_then()
        members = self._groups.live_members(group)
        full = self._mailboxes.put_many(
            members, payload, self.expiry, self.get_capacity, deferred=handing
        )
        for channel in full:
            self.skipped_members.skipped(group, channel)
            metrics.dropped_full["memory"]()

    async def flush(self) -> None:
        """Drop every queued message and group; receivers already waiting keep waiting."""
        self._groups.clear()
        self._mailboxes.clear()
        self._kept.clear()

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


@dataclass(slots=True)
class _Kept:
    """One group's history: its epoch, last offset and kept messages."""

    epoch: str
    rule: HistoryRule
    offset: int = 0
    last_send: float = field(default_factory=time.monotonic)
    # (offset, time.monotonic() when sent, payload), consecutive offsets, oldest first.
    entries: deque[tuple[int, float, bytes]] = field(default_factory=deque)

    def add(self, payload: bytes) -> None:
        self.offset += 1
        self.last_send = time.monotonic()
        self.entries.append((self.offset, self.last_send, payload))
        if len(self.entries) > self.rule.size:
            self.entries.popleft()
        self.trim()

    def trim(self) -> None:
        """Drop what is older than the rule's ttl."""
        oldest = time.monotonic() - self.rule.ttl
        while self.entries and self.entries[0][1] < oldest:
            self.entries.popleft()


class _KeptHistories:
    """Every group's history, under one lock. A group's epoch and offset are forgotten
    ``group_expiry`` seconds after its last send (as the Redis layer's expire), which
    starts a new epoch, so memory is bounded by the groups in use."""

    def __init__(self, group_expiry: float) -> None:
        self.lock = threading.Lock()
        self.group_expiry = group_expiry
        self._groups: dict[str, _Kept] = {}
        self._next_sweep = time.monotonic() + group_expiry

    def of(self, group: str, rule: HistoryRule) -> _Kept:
        """``group``'s history, begun in a new epoch if there is none; call under ``lock``."""
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + min(self.group_expiry, 60.0)
            for name, other in list(self._groups.items()):
                other.trim()
                if now - other.last_send > self.group_expiry:
                    del self._groups[name]
        kept = self._groups.get(group)
        if kept is None or now - kept.last_send > self.group_expiry:
            kept = _Kept(secrets.token_hex(8), rule)
            self._groups[group] = kept
        return kept

    def clear(self) -> None:
        with self.lock:
            self._groups.clear()
