"""The Redis layer's pub/sub readers: the broadcasts of the groups with members here (and
the pub/sub layer's process topic), read on the home loop.

One reader per Redis host keeps one pub/sub connection subscribed to the topics of that
host (on a Redis Cluster, redis-py's sharded pub/sub client, which keeps a connection to
each shard it needs and follows its slots through failovers and migrations), reconnects
when it drops, and hands each message back to the layer, held until this process's inbox
has delivered what was sent before it (``inbox_order``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from . import redis_cluster, stopping
from .exceptions import LayerUnavailable
from .inbox_order import SEQ_FIELD, split_marks
from .redis_health import UNAVAILABLE, Health
from .redis_hosts import RedisHost, ShardRing

if TYPE_CHECKING:
    from .redis_connections import LayerCallbacks, LoopState, ProcessInbox

logger = logging.getLogger("channels_layer.redis")

BATCH = 500  # broadcasts handled together at most (one read of the inbox's number)
BLOCK_SECONDS = 1  # a reader's longest wait, so it sees that it should stop


class SubscriptionReaders:
    """Keeps each home loop's topics subscribed and reads them (see the module docstring)."""

    def __init__(
        self,
        hosts: list[RedisHost],
        ring: ShardRing,
        retry_timeout: float,
        inbox: ProcessInbox,
        callbacks: LayerCallbacks,
        health: list[Health],
    ) -> None:
        self.hosts = hosts
        self.ring = ring
        self.retry_timeout = retry_timeout
        self.inbox = inbox
        self.callbacks = callbacks
        self.health = health

    async def subscribe(self, state: LoopState, topic: str) -> None:
        """Subscribe to ``topic``; returns once Redis confirms, so a message published
        after that is never missed."""
        confirmed = state.subscribed.get(topic) or self.start(state, topic)
        # Not asyncio.wait_for: on Python 3.11 it returns instead of raising when the
        # caller is cancelled in the turn the confirmation comes (CPython gh-86296).
        if not confirmed.done():
            await asyncio.wait([confirmed], timeout=self.retry_timeout)
        if not confirmed.done():
            label = self.hosts[self.shard(topic)].label
            raise LayerUnavailable(
                f"Redis {label} did not confirm the subscription to {topic!r} within "
                f"{self.retry_timeout} s; it will be made when Redis is reachable"
            )

    def start(self, state: LoopState, topic: str) -> asyncio.Future[None]:
        """Subscribe to ``topic`` without waiting: resolved once Redis confirms."""
        shard = self.shard(topic)
        confirmed = state.subscribed[topic] = state.loop.create_future()
        reader = state.subscription_readers.get(shard)
        if reader is None or reader.done():
            state.subscription_readers[shard] = asyncio.ensure_future(self.read(state, shard))
        elif shard in state.pubsubs:
            state.spawn(quietly(redis_cluster.subscribe(state.pubsubs[shard], topic)))
        # else: the reader is reconnecting and subscribes to everything in state.subscribed
        return confirmed

    async def unsubscribe(self, state: LoopState, topic: str) -> None:
        if state.subscribed.pop(topic, None) is not None:
            pubsub = state.pubsubs.get(self.shard(topic))
            if pubsub is not None:
                await quietly(redis_cluster.unsubscribe(pubsub, topic))

    def shard(self, topic: str) -> int:
        """Topics are ``{prefix}:{kind}:{name}`` and live on the shard of ``name``."""
        return self.ring.shard(topic.split(":", 2)[2])

    async def read(self, state: LoopState, shard: int) -> None:
        """Keep one pub/sub connection to ``shard`` subscribed to each of its topics and
        hand messages to the layer; reconnect when it drops, stop when no topic is left."""
        while not state.closing:
            stopping.raise_if_cancelled()
            wanted = [topic for topic in state.subscribed if self.shard(topic) == shard]
            if not wanted:
                return
            pubsub = state.clients[shard].pubsub()
            state.open_pubsubs.add(pubsub)  # closed by the state if this task is cancelled
            try:
                # Shared only once connected: a second subscribe during the first would
                # open a second connection that nobody reads.
                await redis_cluster.subscribe(pubsub, *wanted)
                state.pubsubs[shard] = pubsub
                late = [t for t in state.subscribed if self.shard(t) == shard and t not in wanted]
                if late:
                    await redis_cluster.subscribe(pubsub, *late)
                while not state.closing and any(self.shard(t) == shard for t in state.subscribed):
                    stopping.raise_if_cancelled()
                    message = await redis_cluster.next_message(pubsub, BLOCK_SECONDS)
                    self.health[shard].up()
                    unmarked = []
                    while message is not None and not state.closing:  # else the new state's
                        topic = message["channel"].decode()
                        if message["type"] in ("message", "smessage"):
                            held = self._hold(state, shard, topic, message["data"])
                            unmarked += [held] if held else []
                        elif message["type"] in ("subscribe", "ssubscribe"):
                            confirmed = state.subscribed.get(topic)
                            if confirmed is not None and not confirmed.done():
                                confirmed.set_result(None)
                        # Whatever else has arrived joins this batch (no waiting).
                        more = len(unmarked) < BATCH
                        message = await redis_cluster.next_message(pubsub, 0) if more else None
                    if unmarked:
                        state.inbox_progress.settle(unmarked, await self._inbox_latest(state))
            except UNAVAILABLE as error:
                if not state.closing:
                    await self.callbacks.unavailable(shard, error)
                    await quietly(redis_cluster.refresh_slots(state.clients[shard]))
            finally:
                state.pubsubs.pop(shard, None)
            # Not in ``finally``: a cancelled reader awaits nothing (its loop may be ending).
            state.open_pubsubs.discard(pubsub)
            await quietly(pubsub.aclose())

    def _hold(self, state: LoopState, shard: int, topic: str, data: bytes) -> list[Any] | None:
        """Hold a pub/sub message for delivery in order with the inbox (see inbox_order);
        the held item if the inbox's number must still be read, else None."""
        mark: int | None = None
        if topic.startswith(self.inbox.broadcast_prefix):
            with contextlib.suppress(ValueError):  # unmarked: from an older version
                marks, data = split_marks(data)
                if shard == self.inbox.shard:  # else another server's number
                    mark = marks.get(self.inbox.owner)
        if state.inbox_reader is None or state.inbox_reader.done():
            mark = 0  # no consumer channel receives here
        deliver = functools.partial(self.callbacks.deliver, topic, data)
        held = state.inbox_progress.hold(mark, deliver)
        return held if mark is None else None

    async def _inbox_latest(self, state: LoopState) -> int | None:
        """The sequence number of the latest entry queued in this process's inbox."""
        if state.inbox_reader is None or state.inbox_reader.done():
            return None  # no consumer channel receives here
        client = state.clients[self.inbox.shard]
        try:
            latest = await client.hget(self.inbox.pending, SEQ_FIELD)
        except UNAVAILABLE:
            return None  # the inbox is unreachable too: nothing can come from it now
        return int(latest) if latest else None


async def quietly(awaitable: Awaitable[Any]) -> None:
    try:
        await awaitable
    except Exception as error:  # best effort: the connection is going away anyway
        logger.debug("Ignoring %r while tidying a Redis connection", error)
