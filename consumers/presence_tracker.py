"""The machinery behind ``consumers.presence``: one ``Tracker`` per topic per process.

A tracker holds its own process's entries and a copy of every other process's. Trackers talk
through the channel layer (the topic's peer group): a change goes out once as a versioned
delta; every ``interval`` a heartbeat carries the version. A tracker that misses a delta,
hears of an unknown peer or comes back after a partition asks that peer for its full state
and replaces its copy with it, so a healed partition leaves neither ghosts nor lost members.
A peer silent for ``timeout`` is dropped with its members. Each tracker tells only its own
process's subscribers (through a process-local group), so every change reaches each
subscriber exactly once, in the order this tracker saw it.

Messages between trackers: ``presence.state`` (full state; ``ask`` wants the receiver's in
return), ``presence.delta``, ``presence.beat``, ``presence.ask``, ``presence.bye``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from channels_layer import BaseChannelLayer, stopping
from consumers import metrics

logger = logging.getLogger(__name__)

DIFF = "presence.diff"
DEFAULT_INTERVAL = 5.0
TOPIC = re.compile(r"[A-Za-z0-9_.\-]{1,60}")

Entries = dict[str, dict[str, dict[str, Any]]]  # key -> ref -> meta
Members = dict[str, dict[str, list[dict[str, Any]]]]  # key -> {"metas": [meta + ref]}


def _setting(name: str, default: float | None) -> float | None:
    return getattr(settings, name, default) if settings.configured else default


def check_topic(topic: str) -> str:
    if not isinstance(topic, str) or not TOPIC.fullmatch(topic):
        raise ValueError(
            f"presence topic {topic!r}: 1 to 60 ASCII letters, digits, '_', '.' or '-' expected"
        )
    return topic


def as_members(pairs: Any) -> Members:
    """``{key: {"metas": [...]}}`` from ``(key, ref, meta)`` triples."""
    members: Members = {}
    for key, ref, meta in pairs:
        members.setdefault(key, {"metas": []})["metas"].append({**meta, "ref": ref})
    return members


def apply_diff(members: Members, diff: dict[str, Any]) -> Members:
    """Merge a ``presence.diff`` into a listing (joins, then leaves; idempotent)."""
    for key, entry in diff["joins"].items():
        metas = members.setdefault(key, {"metas": []})["metas"]
        refs = {meta["ref"] for meta in entry["metas"]}
        metas[:] = [m for m in metas if m["ref"] not in refs] + entry["metas"]
    for key, entry in diff["leaves"].items():
        gone = {meta["ref"] for meta in entry["metas"]}
        if key in members:
            members[key]["metas"] = [m for m in members[key]["metas"] if m["ref"] not in gone]
            if not members[key]["metas"]:
                del members[key]
    return members


@dataclass
class Peer:
    """What this process knows of another process's tracker for the same topic."""

    entries: Entries = field(default_factory=dict)
    version: int = 0
    heard: float = field(default_factory=time.monotonic)


class Changes:
    """Joins and leaves not yet sent; a join followed by its leave cancels out, unless
    that join replaced a leave of an entry subscribers show: then that leave stands."""

    def __init__(self) -> None:
        self.joins: dict[tuple[str, str], dict[str, Any]] = {}
        self.leaves: dict[tuple[str, str], dict[str, Any]] = {}
        # Leaves a later join of the same entry replaced (a meta changed), kept for its leave.
        self.replaced: dict[tuple[str, str], dict[str, Any]] = {}
        self.count = 0  # changes ever made: how far a sender got is told by this

    def __bool__(self) -> bool:
        return bool(self.joins or self.leaves)

    def join(self, key: str, ref: str, meta: dict[str, Any]) -> None:
        self.count += 1
        # A leave then a join of one entry: it stays (a diff's joins are applied first).
        left = self.leaves.pop((key, ref), None)
        if left is not None:
            self.replaced[key, ref] = left
        self.joins[key, ref] = meta

    def leave(self, key: str, ref: str, meta: dict[str, Any]) -> None:
        self.count += 1
        if self.joins.pop((key, ref), None) is None:
            self.leaves[key, ref] = meta
        elif (left := self.replaced.pop((key, ref), None)) is not None:
            self.leaves[key, ref] = left  # what subscribers show must still go

    def take(self) -> tuple[dict, dict]:
        joins, leaves = self.joins, self.leaves
        self.joins, self.leaves, self.replaced = {}, {}, {}
        return joins, leaves


class Tracker:
    """One topic's presence in this process; its task does all the layer traffic."""

    def __init__(
        self,
        layer: BaseChannelLayer,
        topic: str,
        interval: float | None = None,
        timeout: float | None = None,
    ) -> None:
        self.layer = layer
        self.topic = check_topic(topic)
        interval = interval or _setting("CONSUMERS_PRESENCE_INTERVAL", DEFAULT_INTERVAL)
        self.interval = float(interval or DEFAULT_INTERVAL)
        timeout = timeout or _setting("CONSUMERS_PRESENCE_TIMEOUT", None)
        self.timeout = float(timeout or 3 * self.interval)
        self.token = secrets.token_hex(6)
        self.peers_group = f"presence-peers.{topic}"
        self.local_group = f"presence-local.{self.token}.{topic}"
        self.local: Entries = {}
        self.peers: dict[str, Peer] = {}
        self.subscribers: set[str] = set()
        self.version = 0
        self.source: str | None = None
        self._outgoing = Changes()  # to the other processes
        self._diff = Changes()  # to this process's subscribers
        self._replies: set[str] = set()  # peers that asked for the full state
        self._asked: dict[str, float] = {}  # peers asked for theirs, and when
        self._asks: set[str] = set()  # peers to ask, at the next flush
        self._discards: set[str] = set()  # subscribers gone, still in the local group
        self._wake = asyncio.Event()
        self._diffs_sent = 0  # the diff's count when its last batch had gone out
        self._sent = asyncio.Event()
        self._failing = False
        self.on_stop: Any = None
        self.retired = False
        self.task = asyncio.get_running_loop().create_task(self._run())
        metrics.watch_presence(self)

    # Changes from this process (synchronous: safe in a ``finally`` while cancelled)

    def track(self, key: str, meta: dict[str, Any] | None = None) -> str:
        if self.retired:
            raise RuntimeError(f"the tracker of {self.topic} has stopped: use tracker_for()")
        ref = secrets.token_hex(8)
        meta = dict(meta or {})
        self.local.setdefault(key, {})[ref] = meta
        self._outgoing.join(key, ref, meta)
        self._diff.join(key, ref, meta)
        self._wake.set()
        return ref

    def untrack(self, key: str, ref: str) -> None:
        refs = self.local.get(key, {})
        meta = refs.pop(ref, None)
        if meta is None:
            return
        if not refs:
            del self.local[key]
        self._outgoing.leave(key, ref, meta)
        self._diff.leave(key, ref, meta)
        self._wake.set()

    def unsubscribe(self, channel: str) -> None:
        if channel in self.subscribers:
            self.subscribers.discard(channel)
            self._discards.add(channel)
            self._wake.set()

    def members(self) -> Members:
        """Every key of every process, with each connection's metadata."""
        sources = [self.local, *(peer.entries for peer in self.peers.values())]
        return as_members(
            (key, ref, meta)
            for entries in sources
            for key, refs in entries.items()
            for ref, meta in refs.items()
        )

    async def settled(self) -> None:
        """Wait until the changes made so far have gone out to this process's subscribers
        (at most one interval): a subscriber added now gets only later ones."""
        target = self._diff.count
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.interval):
                while self._diffs_sent < target and not self.task.done():
                    self._sent.clear()
                    await self._sent.wait()

    @property
    def idle(self) -> bool:
        return not self.local and not self.subscribers and not self._discards

    # The task

    async def _run(self) -> None:
        try:
            while True:
                try:
                    return await self._serve()
                except Exception as error:  # a layer outage: log once, start over
                    if not self._failing:
                        logger.warning("Presence of %s interrupted: %r", self.topic, error)
                    self._failing = True
                    await asyncio.sleep(self.interval)
        finally:
            self._retire()

    def _retire(self) -> None:
        """Leave the registry at once, so that a new ``track`` starts a new tracker."""
        self.retired = True
        if self.on_stop is not None:
            self.on_stop(self)
            self.on_stop = None

    async def _serve(self) -> None:
        if self.source is None:
            self.source = await self.layer.new_channel("presence")
        source = self.source
        reader = asyncio.create_task(self._read(source))
        try:
            await self.layer.group_add(self.peers_group, source)
            # Tell everyone (again, after an outage) and ask them for their state.
            await self.layer.group_send(self.peers_group, self._state(ask=True))
            self._failing = False
            next_beat = time.monotonic() + self.interval
            while True:
                # A layer call may have swallowed our cancellation (asyncio.wait_for on
                # Python 3.11, CPython gh-86296): the tracker must still end.
                stopping.raise_if_cancelled()
                self._wake.clear()
                if reader.done():
                    await reader  # the layer failed under it: raise, and start over
                await self._flush()
                if self.idle:
                    self._retire()
                    await self.layer.group_send(
                        self.peers_group, {"type": "presence.bye", "source": source}
                    )
                    return
                now = time.monotonic()
                if now >= next_beat:
                    await self._beat()
                    next_beat = now + self.interval
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, next_beat - time.monotonic())):
                        await self._wake.wait()
        finally:
            reader.cancel()
            with contextlib.suppress(Exception):
                await self.layer.group_discard(self.peers_group, source)

    async def _flush(self) -> None:
        """Send what changed: one delta to the peers, one diff to local subscribers."""
        if self._outgoing:
            joins, leaves = self._outgoing.take()
            self.version += 1
            delta: dict[str, Any] = {"joins": {}, "leaves": {}}
            for key, ref in joins:
                delta["joins"].setdefault(key, {})[ref] = joins[key, ref]
            for key, ref in leaves:
                delta["leaves"].setdefault(key, []).append(ref)
            await self.layer.group_send(
                self.peers_group,
                {"type": "presence.delta", "source": self.source, "version": self.version} | delta,
            )
        while self._replies:
            await self.layer.send(self._replies.pop(), self._state(ask=False))
        while self._asks:  # a lost ask is repeated after the next heartbeat
            ask = {"type": "presence.ask", "source": self.source}
            await self.layer.send(self._asks.pop(), ask)
        if self._diff:
            upto = self._diff.count
            joins, leaves = self._diff.take()
            await self.layer.group_send(
                self.local_group,
                {
                    "type": DIFF,
                    "topic": self.topic,
                    "joins": as_members((k, r, m) for (k, r), m in joins.items()),
                    "leaves": as_members((k, r, m) for (k, r), m in leaves.items()),
                },
            )
            self._diffs_sent = upto
            self._sent.set()
        while self._discards:
            await self.layer.group_discard(self.local_group, self._discards.pop())

    async def _beat(self) -> None:
        # Renewed, since a layer may expire memberships (Redis: group_expiry).
        await self.layer.group_add(self.peers_group, self.source)  # type: ignore[arg-type]
        await self.layer.group_send(
            self.peers_group,
            {"type": "presence.beat", "source": self.source, "version": self.version},
        )
        silent = time.monotonic() - self.timeout
        for source in [s for s, peer in self.peers.items() if peer.heard < silent]:
            logger.info("Presence of %s: peer %s silent, its members dropped", self.topic, source)
            self._replace(source, None)

    def _state(self, ask: bool) -> dict[str, Any]:
        return {
            "type": "presence.state",
            "source": self.source,
            "version": self.version,
            "entries": self.local,
            "ask": ask,
        }

    # From the other processes

    async def _read(self, source: str) -> None:
        while True:
            stopping.raise_if_cancelled()  # as in _serve
            try:
                message = await self.layer.receive(source)
            except Exception:
                self._wake.set()  # the loop sees this task done and starts over
                raise
            if message.get("source") != source:
                try:
                    self._handle(message)
                except (KeyError, TypeError, ValueError, AttributeError) as error:
                    logger.warning("Presence of %s: bad message ignored (%r)", self.topic, error)
                self._wake.set()

    def _handle(self, message: dict[str, Any]) -> None:
        kind, source = message["type"], message["source"]
        peer = self.peers.get(source)
        if kind == "presence.state":
            # A state may arrive after a newer one (a direct reply can overtake a
            # broadcast): the older is only an ask.
            if peer is None or message["version"] >= peer.version:
                self._replace(source, message["entries"])
                self.peers[source].version = message["version"]
                self._asked.pop(source, None)
            if message.get("ask"):
                self._replies.add(source)
        elif kind == "presence.delta":
            if peer is not None and message["version"] == peer.version + 1:
                self._apply(source, peer, message)
            elif peer is None or message["version"] > peer.version:
                self._ask(source)  # a delta went missing: start again from its state
        elif kind == "presence.beat":
            if peer is not None:
                peer.heard = time.monotonic()
            if peer is None or message["version"] != peer.version:
                self._ask(source)
        elif kind == "presence.ask":
            self._replies.add(source)
        elif kind == "presence.bye":
            self._replace(source, None)
        else:
            raise ValueError(f"unknown presence message type {kind!r}")

    def _ask(self, source: str) -> None:
        now = time.monotonic()
        if now - self._asked.get(source, -self.interval) >= self.interval:
            self._asked[source] = now
            self._asks.add(source)

    def _apply(self, source: str, peer: Peer, delta: dict[str, Any]) -> None:
        peer.version, peer.heard = delta["version"], time.monotonic()
        for key, refs in delta["joins"].items():
            held = peer.entries.setdefault(key, {})
            for ref, meta in refs.items():
                # A state sent just before this delta may have carried the entry already.
                if held.get(ref) != meta:
                    held[ref] = meta
                    self._diff.join(key, ref, meta)
        for key, refs in delta["leaves"].items():
            held = peer.entries.get(key, {})
            for ref in refs:
                if ref in held:
                    self._diff.leave(key, ref, held.pop(ref))
            if key in peer.entries and not held:
                del peer.entries[key]

    def _replace(self, source: str, entries: Entries | None) -> None:
        """Make ``source``'s entries ``entries`` (None: forget the peer), telling the diff."""
        old = self.peers.pop(source).entries if source in self.peers else {}
        if entries is None:
            self._asked.pop(source, None)
        new = entries or {}
        for key, refs in old.items():
            for ref, meta in refs.items():
                if new.get(key, {}).get(ref) != meta:
                    self._diff.leave(key, ref, meta)
        for key, refs in new.items():
            for ref, meta in refs.items():
                if old.get(key, {}).get(ref) != meta:
                    self._diff.join(key, ref, meta)
        if entries is not None:
            self.peers[source] = Peer(entries={k: dict(v) for k, v in new.items()})
