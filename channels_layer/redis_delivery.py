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
from .redis_connections import RedisConnections
from .redis_health import UNAVAILABLE

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
# own. Each entry carries a sequence number (see inbox_order).
# ARGV groups: channel, envelope, capacity, ttl. Result: 1 queued, 0 full.
SEND_TO_PROCESS = (
    SEQUENCE_LUA
    + """
local results = {}
for i = 1, #ARGV, 4 do
  local pending = tonumber(redis.call('HGET', KEYS[2], ARGV[i]) or '0')
  if pending >= tonumber(ARGV[i + 2]) then
    results[#results + 1] = 0
  else
    redis.call('HINCRBY', KEYS[2], ARGV[i], 1)
    redis.call('RPUSH', KEYS[1], next_entry(KEYS[2], ARGV[i + 1]))
    redis.call('EXPIRE', KEYS[1], ARGV[i + 3])
    redis.call('EXPIRE', KEYS[2], ARGV[i + 3])
    results[#results + 1] = 1
  end
end
save_seq(KEYS[2])
return results
"""
)

# Forget messages a process has taken out of its inbox (delivered or expired).
# ARGV groups: channel, count.
TAKEN_BY_PROCESS = """
local results = {}
for i = 1, #ARGV, 2 do
  if redis.call('HINCRBY', KEYS[1], ARGV[i], -tonumber(ARGV[i + 1])) <= 0 then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
  results[#results + 1] = 0
end
return results
"""


class InboxDelivery:
    """Messages wait in the process's inbox list, counted per channel against its capacity."""

    scripts: ClassVar[dict[str, str]] = {
        "send_to_process": SEND_TO_PROCESS,
        "taken_by_process": TAKEN_BY_PROCESS,
    }
    reads_from_new_channel: ClassVar[bool] = False

    def __init__(self, context: DeliveryContext) -> None:
        self.context = context
        self._taken_counts = _TakenCounts(context.connections, self._flush_taken)

    async def send(self, channel: str, owner: str, payload: bytes) -> bool:
        context = self.context
        keys = [context.key("inbox", owner), context.key("pending", owner)]
        entry = envelopes.process_entry(channel, payload)
        args = [channel, entry, context.capacity(channel), int(context.expiry) + 1]
        shard = context.connections.ring.shard(owner)
        return bool(await context.connections.script(shard, "send_to_process", keys, args))

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

    async def _flush_taken(self, taken: dict[str, int]) -> None:
        context = self.context
        keys = [context.key("pending", context.owner)]
        shard = context.connections.ring.shard(context.owner)
        with contextlib.suppress(*UNAVAILABLE):  # the counts went with the Redis that lost them
            await asyncio.gather(
                *(
                    context.connections.script(shard, "taken_by_process", keys, [channel, count])
                    for channel, count in taken.items()
                )
            )


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

    async def _flush_all(self) -> None:
        with self._lock:
            counts, self._counts = self._counts, defaultdict(int)
            self._scheduled = False
        await self._flush(counts)
