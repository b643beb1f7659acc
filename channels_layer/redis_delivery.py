"""How a message reaches the process of a consumer channel: a delivery strategy.

``RedisChannelLayer`` queues it in the process's inbox, a Redis list (``InboxDelivery``):
it waits there while the process is busy or reconnecting, and ``capacity`` holds per
channel. ``RedisPubSubChannelLayer`` publishes it to the process's topic
(``PubSubDelivery``): nothing is stored, so it is the fastest, and at-most-once. Both end in
the process's mailboxes (``mailbox.Mailboxes``), where ``receive()`` takes it.

A ``send()`` to one of the sending process's own channels goes straight into its mailbox
(``send_here``), never to Redis: nothing is counted there for it, and it carries the
``SENT_HERE`` receipt, so its taking is not reported to Redis either.
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
from .inbox_order import QUEUE_LUA, REFRESH_SECONDS, InboxProgress, split_entry
from .mailbox import Handing, Mailboxes
from .redis_connections import LoopState, RedisConnections
from .redis_health import UNAVAILABLE
from .script_batcher import ScriptBatcher

logger = logging.getLogger("channels_layer.redis")

# Processes whose inbox keys an ``InboxDelivery`` keeps at most.
KNOWN_PROCESSES = 1024

# The mailbox receipt of a message counted in its process's pending hash.
COUNTED = 1
# The mailbox receipt of a message its own process sent (``send_here``): not counted in
# Redis, and not sealed (see ``serializers.encode``).
SENT_HERE = "here"


@dataclass(frozen=True)
class DeliveryContext:
    """What a strategy needs of its layer."""

    connections: RedisConnections
    mailboxes: Mailboxes
    key: Callable[[str, str], str]  # (kind, name) -> Redis key, see the key table in redis_hosts
    owner: str  # this process's id
    expiry: float
    capacity: Callable[[str], int]  # a channel's capacity


class ProcessDelivery(Protocol):
    """A strategy: called by the layer, on the home loop for the ``async`` methods."""

    scripts: ClassVar[dict[str, str]]  # the Lua scripts it runs, by name
    # Whether ``send`` may be called from any loop (it gets to the home loop itself);
    # else the layer calls it on the home loop, once its subscriptions are settled.
    sends_from_any_loop: ClassVar[bool]
    # Whether a new consumer channel starts reading at once (else at its first receive).
    reads_from_new_channel: ClassVar[bool]

    def __init__(self, context: DeliveryContext) -> None: ...

    async def send(self, channel: str, owner: str, payload: bytes) -> bool:
        """Queue ``payload`` for ``channel`` of process ``owner``; False if it is full.
        From any loop if ``sends_from_any_loop``, else on the home loop."""
        ...

    def send_here(self, channel: str, payload: bytes, handing: list[Handing]) -> bool:
        """Put ``payload`` (not sealed) straight into the mailbox of ``channel``, one of
        this process's; from any thread. False if the sender must get ``ChannelFull``.
        An idle eager receiver's claim goes to ``handing`` (``Mailboxes.put``)."""
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
# own. Each entry carries a sequence number (see inbox_order's ``queue``, which also keeps
# the keys' expiry). One RPUSH for the whole batch.
# ARGV groups: channel, envelope, capacity, ttl (ms). Result: the entry's sequence number
# if queued, 0 if full.
SEND_TO_PROCESS = (
    QUEUE_LUA
    + """
local results, entries = {}, {}
for i = 1, #ARGV, 4 do
  if redis.call('HINCRBY', KEYS[2], ARGV[i], 1) > tonumber(ARGV[i + 2]) then
    redis.call('HINCRBY', KEYS[2], ARGV[i], -1)  -- it was full: as it was
    results[#results + 1] = 0
  else
    entries[#entries + 1] = ARGV[i + 1]
    results[#results + 1] = #entries
  end
end
if #entries > 0 then
  local first = queue(KEYS[1], KEYS[2], entries, ARGV[4]) - 1
  for r = 1, #results do
    if results[r] > 0 then
      results[r] = first + results[r]
    end
  end
end
return results
"""
)


def inbox_ttl_ms(expiry: float) -> int:
    """The inbox's and pending hash's time to live, refreshed as ``QUEUE_LUA`` says: the
    ``expiry`` of its messages and 1 s more, from the last send, as when every send
    refreshed them, plus the refresh interval."""
    return int((int(expiry) + 1 + REFRESH_SECONDS) * 1000)


# Forget, in this process's pending hash, the messages it has taken out of its inbox or
# mailboxes (delivered or expired). ARGV groups: channel, messages taken. Result: 0.
FORGET_TAKEN = """
local results = {}
for i = 1, #ARGV, 2 do
  local channel = ARGV[i]
  local pending = tonumber(redis.call('HGET', KEYS[1], channel) or '0') - tonumber(ARGV[i + 1])
  if pending > 0 then
    redis.call('HSET', KEYS[1], channel, pending)
  else
    redis.call('HDEL', KEYS[1], channel)
  end
  results[#results + 1] = 0
end
return results
"""


class InboxDelivery:
    """Messages wait in the process's inbox list, counted per channel against its capacity.

    A message for one of this process's own channels does not go to Redis: ``send_here``
    puts it into its mailbox, refused once the mailbox holds the channel's capacity
    (whatever sent what it holds). The two counts are apart: other processes are refused
    once ``capacity`` of theirs are pending in Redis (queued in the inbox, or in the
    mailbox and not yet received), this process once its mailbox is full, so a channel
    filled from both sides may hold up to twice its capacity, never more.
    """

    scripts: ClassVar[dict[str, str]] = {
        "send_to_process": SEND_TO_PROCESS,
        "forget_taken": FORGET_TAKEN,
    }
    reads_from_new_channel: ClassVar[bool] = False
    sends_from_any_loop: ClassVar[bool] = True

    def __init__(self, context: DeliveryContext) -> None:
        self.context = context
        self._ttl = inbox_ttl_ms(context.expiry)
        # Each process's inbox keys and shard, found once (bounded: cleared when full).
        self._routes: dict[str, tuple[list[str], int]] = {}
        self._taken_counts = _TakenCounts(context.connections, self._flush_taken)
        # Every batch to this process's shard carries the counts taken since the last.
        context.connections.before_batch(
            context.connections.ring.shard(context.owner), self._add_taken_to
        )

    async def send(self, channel: str, owner: str, payload: bytes) -> bool:
        context = self.context
        route = self._routes.get(owner)
        if route is None:
            if len(self._routes) >= KNOWN_PROCESSES:
                self._routes.clear()
            keys = [context.key("inbox", owner), context.key("pending", owner)]
            route = self._routes[owner] = (keys, context.connections.ring.shard(owner))
        keys, shard = route
        entry = envelopes.process_entry(channel, payload)
        args = [channel, entry, context.capacity(channel), self._ttl]
        return bool(await context.connections.run_script(shard, "send_to_process", keys, args))

    def send_here(self, channel: str, payload: bytes, handing: list[Handing]) -> bool:
        return _put_here(self.context, channel, payload, handing)

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
        for channel, n in self._taken_counts.take_all().items():
            batch.call("forget_taken", keys, [channel, n]).add_done_callback(_lost)

    async def _flush_taken(self, taken: dict[str, int]) -> None:
        context = self.context
        keys = [context.key("pending", context.owner)]
        shard = context.connections.ring.shard(context.owner)

        async def count(state: LoopState) -> None:
            # One future per channel, all in the same EVALSHA: no coroutine or task each.
            batcher = state.scripts[shard]
            await asyncio.gather(
                *(batcher.call("forget_taken", keys, [channel, n]) for channel, n in taken.items())
            )

        with contextlib.suppress(*UNAVAILABLE):  # the counts went with the Redis that lost them
            await context.connections.call(shard, count)


class PubSubDelivery:
    """Messages are published to the process's topic: nothing waits in Redis, so a process
    that is down or reconnecting misses them; each channel's queue here is bounded by its
    capacity, beyond which messages are dropped and logged."""

    scripts: ClassVar[dict[str, str]] = {}
    reads_from_new_channel: ClassVar[bool] = True
    sends_from_any_loop: ClassVar[bool] = False

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
            _dropped_full(channel, capacity)
        return True

    def send_here(self, channel: str, payload: bytes, handing: list[Handing]) -> bool:
        """As a message published to this process would be: dropped and logged if full."""
        if not _put_here(self.context, channel, payload, handing):
            _dropped_full(channel, self.context.capacity(channel))
        return True

    def deliver_from_inbox(self, entry: bytes, progress: InboxProgress) -> None:
        raise RuntimeError("the pub/sub delivery has no inbox reader")

    def taken(self, channel: str, receipt: Any) -> None:
        """Nothing is counted in Redis for a published message."""


pubsub_logger = logging.getLogger("channels_layer.pubsub")


def _put_here(
    context: DeliveryContext, channel: str, payload: bytes, handing: list[Handing]
) -> bool:
    """``send_here``: into the mailbox for ``expiry`` seconds, up to the capacity."""
    capacity = context.capacity(channel)
    mailboxes = context.mailboxes
    if not mailboxes.put(channel, payload, context.expiry, capacity, SENT_HERE, handing):
        return False
    metrics.received("redis", time.time())  # reached its process: at once
    return True


def _dropped_full(channel: str, capacity: int) -> None:
    metrics.dropped_full["redis"]()
    pubsub_logger.warning(
        "Dropped a message for %r: its queue holds its capacity of %d", channel, capacity
    )


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
