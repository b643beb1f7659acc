"""How a message reaches the process of a consumer channel: a delivery strategy.

``RedisChannelLayer`` queues it in the process's inbox, a Redis list (``InboxDelivery``):
it waits there while the process is busy or reconnecting, and ``capacity`` holds per
channel. ``RedisPubSubChannelLayer`` publishes it to the process's topic
(``PubSubDelivery``): nothing is stored, so it is the fastest, and at-most-once. Both end in
the process's mailboxes (``mailbox.Mailboxes``), where ``receive()`` takes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from . import metrics
from . import redis_envelopes as envelopes
from .inbox_order import SEQUENCE_LUA, InboxProgress, split_entry
from .mailbox import Mailboxes
from .redis_connections import LoopState, RedisConnections
from .redis_health import UNAVAILABLE
from .script_batcher import ScriptBatcher

logger = logging.getLogger("channels_layer.redis")

# The mailbox receipt of a message counted in its process's pending hash.
COUNTED = 1


@dataclass(frozen=True)
class DeliveryContext:
    """What a strategy needs of its layer."""

    connections: RedisConnections
    mailboxes: Mailboxes
    key: Callable[[str, str], str]  # (kind, name) -> Redis key, see the layer's key table
    owner: str  # this process's id
    expiry: float
    capacity: Callable[[str], int]  # a channel's capacity


class ProcessDelivery(Protocol):
    """A strategy: called by the layer, on the home loop for the ``async`` methods."""

    scripts: ClassVar[dict[str, str]]  # the Lua scripts it runs, by name
    # Whether a new consumer channel starts reading at once (else at its first receive).
    reads_from_new_channel: ClassVar[bool]

    def __init__(self, context: DeliveryContext) -> None: ...

    async def send(self, channel: str, owner: str, payload: bytes) -> bool:
        """Queue ``payload`` for ``channel`` of process ``owner``; False if it is full."""
        ...

    async def start_reading(self) -> None:
        """Make sure messages for this process's channels reach its mailboxes."""
        ...

    def reading(self) -> bool:
        """True if ``start_reading`` would do nothing now (seen from the calling loop), so
        a ``receive`` need not hop to the home loop to call it."""
        ...

    def topics(self) -> list[str]:
        """The pub/sub topics it needs subscribed."""
        ...

    def deliver(self, topic: str, data: bytes) -> bool:
        """Handle a pub/sub message if ``topic`` is this strategy's; False otherwise."""
        ...

    def deliver_from_inbox(self, entry: bytes, progress: InboxProgress) -> None:
        """Handle an entry the inbox reader took from this process's inbox."""
        ...

    def taken(self, channel: str, receipt: Any) -> None:
        """A message left the mailboxes (received, or expired) with this receipt."""
        ...


# Each script takes its ARGV as consecutive groups, one per batched call (see
# script_batcher), and returns one result per group.

# Queue messages for process-local channels, refusing any whose channel already has its
# capacity pending; the count in KEYS[2] is per channel, so a slow consumer fills only its
# own. Each entry carries a sequence number (see inbox_order). One RPUSH and one expiry
# per key for the whole batch.
# ARGV groups: channel, envelope, capacity, ttl. Result: the entry's sequence number if
# queued, 0 if full.
SEND_TO_PROCESS = (
    SEQUENCE_LUA
    + """
local results, entries = {}, {}
for i = 1, #ARGV, 4 do
  local pending = tonumber(redis.call('HGET', KEYS[2], ARGV[i]) or '0')
  if pending >= tonumber(ARGV[i + 2]) then
    results[#results + 1] = 0
  else
    redis.call('HINCRBY', KEYS[2], ARGV[i], 1)
    entries[#entries + 1] = next_entry(KEYS[2], ARGV[i + 1])
    results[#results + 1] = seq
  end
end
if #entries > 0 then
  redis.call('RPUSH', KEYS[1], unpack(entries))
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  redis.call('EXPIRE', KEYS[2], ARGV[4])
  save_seq(KEYS[2])
end
return results
"""
)

# The counts of this process's own pending hash: forget messages it has taken out of its
# inbox or mailboxes (delivered or expired), and count messages for its own channels, which
# go straight to their mailboxes, against their capacity as SEND_TO_PROCESS counts the
# others. Both in one script, so they share one EVALSHA when they meet in a batch.
# ARGV groups: channel, messages taken, capacity (-1: count nothing), ttl.
# Result: 1 counted, else 0 (full, or nothing to count).
COUNT_HERE = """
local results, counted = {}, false
for i = 1, #ARGV, 4 do
  local channel, capacity = ARGV[i], tonumber(ARGV[i + 2])
  local pending = tonumber(redis.call('HGET', KEYS[1], channel) or '0') - tonumber(ARGV[i + 1])
  if capacity >= 0 and pending < capacity then
    pending = pending + 1
    counted = true
    results[#results + 1] = 1
  else
    results[#results + 1] = 0
  end
  if pending > 0 then
    redis.call('HSET', KEYS[1], channel, pending)
  else
    redis.call('HDEL', KEYS[1], channel)
  end
end
if counted then
  redis.call('EXPIRE', KEYS[1], ARGV[4])
end
return results
"""


class InboxDelivery:
    """Messages wait in the process's inbox list, counted per channel against its capacity.

    A message for one of this process's own channels is counted the same way (one round
    trip) but put straight into its mailbox: it does not travel through the inbox, so the
    inbox reader is not woken for it. That is done only while nothing this process sent
    itself through the inbox can still be on its way (after the reader has delivered it,
    or found the inbox empty), so a sender's messages keep their order.
    """

    scripts: ClassVar[dict[str, str]] = {
        "send_to_process": SEND_TO_PROCESS,
        "count_here": COUNT_HERE,
    }
    reads_from_new_channel: ClassVar[bool] = False

    def __init__(self, context: DeliveryContext) -> None:
        self.context = context
        self._taken_counts = _TakenCounts(context.connections, self._flush_taken)
        # Every batch to this process's shard carries the counts taken since the last.
        context.connections.before_batch(
            context.connections.ring.shard(context.owner), self._add_taken_to
        )
        # The last entry this process queued in its own inbox: number, and when queued.
        self._queued_here_seq = 0
        self._queued_here_at = -math.inf

    async def send(self, channel: str, owner: str, payload: bytes) -> bool:
        context = self.context
        here = owner == context.owner
        if here and self._nothing_queued_here():
            return await self._send_here(channel, payload)
        keys = [context.key("inbox", owner), context.key("pending", owner)]
        entry = envelopes.process_entry(channel, payload)
        args = [channel, entry, context.capacity(channel), int(context.expiry) + 1]
        shard = context.connections.ring.shard(owner)
        seq = await context.connections.script(shard, "send_to_process", keys, args)
        if here and seq:
            self._queued_here_seq = max(self._queued_here_seq, int(seq))
            self._queued_here_at = time.monotonic()
        return bool(seq)

    def _nothing_queued_here(self) -> bool:
        """Whether the inbox reader runs on this loop and nothing this process queued in
        its own inbox is still to be delivered (see the class docstring)."""
        progress = self.context.connections.inbox_progress_here()
        return progress is not None and (
            progress.delivered >= self._queued_here_seq
            or progress.empty_since > self._queued_here_at
        )

    async def _send_here(self, channel: str, payload: bytes) -> bool:
        context = self.context
        sent_at = time.time()

        def counted(result: Any) -> None:
            # Run as the reply arrives, even if the sender was cancelled meanwhile.
            if result:
                metrics.received("redis", sent_at)
                remaining = context.expiry - (time.time() - sent_at)
                context.mailboxes.put(channel, payload, remaining, capacity=None, receipt=COUNTED)

        keys = [context.key("pending", context.owner)]
        args = [channel, 0, context.capacity(channel), int(context.expiry) + 1]
        shard = context.connections.ring.shard(context.owner)
        return bool(await context.connections.script(shard, "count_here", keys, args, counted))

    async def start_reading(self) -> None:
        await self.context.connections.start_inbox_reader()

    def reading(self) -> bool:
        return self.context.connections.inbox_reader_runs_here()

    def topics(self) -> list[str]:
        return []

    def deliver(self, topic: str, data: bytes) -> bool:
        return False

    def deliver_from_inbox(self, entry: bytes, progress: InboxProgress) -> None:
        """Deliver an inbox entry to its mailbox, in order with held broadcasts."""
        try:
            seq, envelope = split_entry(entry)
            channel, sent_at, payload = envelopes.read_process_entry(envelope)
        except (ValueError, TypeError) as error:
            logger.error("Dropped a malformed entry in this process's inbox: %s", error)
            return
        progress.before(seq)
        remaining = self.context.expiry - (time.time() - sent_at)
        metrics.received("redis", sent_at)
        if remaining <= 0:
            metrics.dropped_expired["redis"]()
            self.taken(channel, COUNTED)
        else:
            self.context.mailboxes.put(channel, payload, remaining, capacity=None, receipt=COUNTED)
        progress.advanced(seq)

    def taken(self, channel: str, receipt: Any) -> None:
        """A counted message left this process's inbox: lower its channel's count."""
        if receipt == COUNTED:
            self._taken_counts.add(channel)

    def _add_taken_to(self, batch: ScriptBatcher) -> None:
        context = self.context
        keys = [context.key("pending", context.owner)]
        ttl = int(context.expiry) + 1
        for channel, n in self._taken_counts.take_all().items():
            batch.call("count_here", keys, [channel, n, -1, ttl]).add_done_callback(_lost)

    async def _flush_taken(self, taken: dict[str, int]) -> None:
        context = self.context
        keys = [context.key("pending", context.owner)]
        shard = context.connections.ring.shard(context.owner)
        ttl = int(context.expiry) + 1

        async def count(state: LoopState) -> None:
            # One future per channel, all in the same EVALSHA: no coroutine or task each.
            batcher = state.scripts[shard]
            await asyncio.gather(
                *(
                    batcher.call("count_here", keys, [channel, n, -1, ttl])
                    for channel, n in taken.items()
                )
            )

        with contextlib.suppress(*UNAVAILABLE):  # the counts went with the Redis that lost them
            await context.connections.call(shard, count)


class PubSubDelivery:
    """Messages are published to the process's topic: nothing waits in Redis, so a process
    that is down or reconnecting misses them; each channel's queue here is bounded by its
    capacity, beyond which messages are dropped and logged."""

    scripts: ClassVar[dict[str, str]] = {}
    reads_from_new_channel: ClassVar[bool] = True

    def __init__(self, context: DeliveryContext) -> None:
        self.context = context
        self.topic = context.key("process", context.owner)
        # Set once a consumer channel exists here; the topic is then kept subscribed.
        self._needed = False

    async def send(self, channel: str, owner: str, payload: bytes) -> bool:
        connections = self.context.connections
        topic = self.context.key("process", owner)
        entry = envelopes.process_entry(channel, payload)
        shard = connections.ring.shard(owner)
        if connections.cluster:  # the topic's shard only, not every node
            await connections.call(shard, lambda state: state.clients[shard].spublish(topic, entry))
        else:
            await connections.call(shard, lambda state: state.clients[shard].publish(topic, entry))
        return True

    async def start_reading(self) -> None:
        self._needed = True
        await self.context.connections.subscribe(self.topic)

    def reading(self) -> bool:
        return self._needed and self.context.connections.subscribed_here(self.topic)

    def topics(self) -> list[str]:
        return [self.topic] if self._needed else []

    def deliver(self, topic: str, data: bytes) -> bool:
        if topic != self.topic:
            return False
        context = self.context
        channel, sent_at, payload = envelopes.read_process_entry(data)
        remaining = context.expiry - (time.time() - sent_at)
        capacity = context.capacity(channel)
        metrics.received("redis", sent_at)
        if remaining > 0 and not context.mailboxes.put(channel, payload, remaining, capacity):
            metrics.dropped_full["redis"]()
            pubsub_logger.warning(
                "Dropped a message for %r: its queue holds its capacity of %d", channel, capacity
            )
        return True

    def deliver_from_inbox(self, entry: bytes, progress: InboxProgress) -> None:
        raise RuntimeError("the pub/sub delivery has no inbox reader")

    def taken(self, channel: str, receipt: Any) -> None:
        """Nothing is counted in Redis for a published message."""


pubsub_logger = logging.getLogger("channels_layer.pubsub")


def _lost(done: asyncio.Future[Any]) -> None:
    """Counts are lost with the Redis that would have kept them."""
    if not done.cancelled() and done.exception() is not None:
        logger.debug("Lost counts of taken messages: %r", done.exception())


class _TakenCounts:
    """Counts of messages taken from this process's inbox, from any thread, flushed to
    Redis in one batch per turn of the home loop."""

    def __init__(
        self,
        connections: RedisConnections,
        flush: Callable[[dict[str, int]], Coroutine[Any, Any, None]],
    ) -> None:
        self._connections = connections
        self._flush = flush
        self._lock = threading.Lock()
        self._counts: dict[str, int] = defaultdict(int)
        self._scheduled = False

    def add(self, channel: str) -> None:
        with self._lock:
            self._counts[channel] += 1
            if self._scheduled:
                return
            self._scheduled = True
        self._connections.spawn_soon(self._flush_all)

    def take_all(self) -> dict[str, int]:
        """The counts not flushed yet, for the caller to send instead."""
        with self._lock:
            counts, self._counts = self._counts, defaultdict(int)
        return counts

    async def _flush_all(self) -> None:
        with self._lock:
            counts, self._counts = self._counts, defaultdict(int)
            self._scheduled = False
        if counts:
            await self._flush(counts)
