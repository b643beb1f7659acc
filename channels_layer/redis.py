"""The Redis channel layer: many processes, on one machine or many, over one or more Redis.

How it works, in the Phoenix.PubSub manner:

- Every process has an id (``client_prefix``). A message for one of its consumers'
  channels (``specific.<id>!<suffix>``) reaches it by the layer's delivery strategy
  (``redis_delivery``): its inbox, one Redis list drained in batches into in-memory
  mailboxes, with capacity counted per channel; or, for ``RedisPubSubChannelLayer``, its
  pub/sub topic. A process's ``send`` to its own channel goes straight into the mailbox.
- Named channels (``runworker`` channels, for instance) are one Redis list each, so any
  process may receive from them; each message goes to one receiver (``redis_named``).
  ``at_least_once`` ones keep a message under a lease until its job is done
  (``redis_at_least_once``, ``redis_leases``).
- A group is a Redis pub/sub topic, fanned out in memory by each member process
  (``redis_groups``), so ``group_send`` is one PUBLISH whatever the number of members.
  A group with history also keeps its last messages in a stream (``redis_history``).
- Keys are spread over several hosts by consistent hashing of the channel, process or group;
  or, with ``cluster=True``, over a Redis Cluster's slots by hash tags, groups travelling
  over sharded pub/sub (SPUBLISH/SSUBSCRIBE) on the shard that owns them.
- All Redis I/O runs on one event loop, with retries while Redis is away
  (``redis_connections``, ``redis_subscriptions``, ``redis_health``); scripts go out in
  batches, one in flight per host (``script_batcher``). The entries around each payload:
  ``redis_envelopes``.
  ARCHITECTURE.md follows one message from a consumer to a socket.

The Redis keys, all under ``prefix``: the table in ``redis_hosts``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from . import metrics, redis_flush, redis_local, serializers
from .base import (
    AT_LEAST_ONCE,
    CROSS_PROCESS,
    HISTORY,
    MAX_MESSAGE_SIZE,
    WHEN_READY,
    CapacityPattern,
    Message,
)
from .exceptions import ChannelFull
from .history import HistoryConfig, Position, require_limit, require_position
from .mailbox import Handing, Mailboxes
from .redis_at_least_once import AtLeastOnceChannels
from .redis_connections import (
    LayerCallbacks,
    ProcessInbox,
    RedisConnections,
)
from .redis_delivery import DeliveryContext, InboxDelivery, ProcessDelivery
from .redis_groups import GROUP_SCRIPTS, RedisGroups, sharded_publish
from .redis_health import BACKOFF_FIRST, BACKOFF_MAX
from .redis_history import HISTORY_SCRIPTS, RedisHistory
from .redis_hosts import ChannelOwners, KeyScheme, ShardRing, parse_hosts
from .redis_leases import LEASE_SCRIPTS, Lease
from .redis_named import NAMED_SCRIPTS, NamedChannels

__all__ = ["BACKOFF_FIRST", "BACKOFF_MAX", "Lease", "RedisChannelLayer"]

logger = logging.getLogger(__name__)

SCRIPTS = {
    **NAMED_SCRIPTS,
    **GROUP_SCRIPTS,
    **LEASE_SCRIPTS,
    **HISTORY_SCRIPTS,
}


class RedisChannelLayer(AtLeastOnceChannels):
    """Drop-in for ``channels_redis.core.RedisChannelLayer``, with the same keywords, plus
    ``BaseChannelLayer``'s ``max_message_size``, checked on the msgpack bytes before any
    encryption.

    ``retry_timeout`` (seconds) bounds how long ``send``/``group_send``/``group_add`` keep
    retrying while Redis is unreachable before raising; receives retry for ever.

    ``at_least_once``: ``{pattern: visibility_timeout}`` for named channels (globs or
    regexes, as ``channel_capacity``) whose messages must survive a worker dying mid-job.
    ``runworker`` takes them with ``receive_leased()``: a message stays in Redis, leased to
    its worker, until the job is done; the lease is renewed while the worker lives, so the
    job never runs twice at once, and a message whose worker died goes back to the channel
    after ``visibility_timeout`` seconds, for another worker. Such messages do not expire
    (they are kept for ``group_expiry``). Off by default: the spec is at-most-once.

    ``history``: ``{group pattern: {"size": messages, "ttl": seconds}}``, the groups that
    keep their last messages in a Redis stream (``channels_layer.history``, ``redis_history``).

    ``cluster``: ``hosts`` are nodes of a Redis Cluster, its seeds (see ``redis_hosts``).
    """

    extensions = ["groups", "flush", WHEN_READY, AT_LEAST_ONCE, CROSS_PROCESS, HISTORY]
    # How a message reaches a consumer channel's process (see redis_delivery).
    delivery: ClassVar[type[ProcessDelivery]] = InboxDelivery

    def __init__(
        self,
        hosts: Sequence[Any] | None = None,
        prefix: str = "asgi",
        expiry: float = 60,
        group_expiry: float = 86400,
        capacity: int = 100,
        channel_capacity: Mapping[CapacityPattern, int] | None = None,
        symmetric_encryption_keys: Sequence[str | bytes] | None = None,
        random_prefix_length: int = 12,
        serializer_format: str = "msgpack",
        retry_timeout: float = 5.0,
        max_message_size: int = MAX_MESSAGE_SIZE,
        at_least_once: Mapping[CapacityPattern, float] | None = None,
        history: Mapping[Any, Any] | None = None,
        cluster: bool = False,
    ) -> None:
        super().__init__(
            expiry=expiry,
            group_expiry=group_expiry,
            capacity=capacity,
            channel_capacity=channel_capacity,
            max_message_size=max_message_size,
        )
        self.require_valid_group_name(prefix)
        self.hosts = parse_hosts(hosts, cluster)
        self.prefix = prefix
        self.cluster = cluster
        self._key = KeyScheme(prefix, cluster).key
        self.client_prefix = secrets.token_hex(max(random_prefix_length, 8) // 2)
        self.retry_timeout = retry_timeout
        # Names this process's connections in Redis's CLIENT LIST.
        self.connection_name = f"channels-layer-{self.client_prefix}"
        self._ring = ShardRing(len(self.hosts))
        self._owners = ChannelOwners(self.require_valid_channel_name)
        # Set below; the mailboxes report what left them to the delivery strategy.
        self._mailboxes = Mailboxes(
            on_discard=metrics.counting_expiries(
                "redis", lambda channel, receipt: self._delivery.taken(channel, receipt)
            ),
            decode=functools.partial(redis_local.local_message, self),
        )
        inbox = ProcessInbox(
            owner=self.client_prefix,
            key=self._key("inbox", self.client_prefix),
            pending=self._key("pending", self.client_prefix),
            shard=self._ring.shard(self.client_prefix),
            broadcast_prefix=KeyScheme(prefix).kind_prefix("broadcast"),
            sweep_every=self.expiry,
        )
        callbacks = LayerCallbacks(
            topics=self._topics,
            deliver=self._deliver,
            deliver_from_inbox=lambda entry, progress: self._delivery.deliver_from_inbox(
                entry, progress
            ),
            sweep=self._mailboxes.sweep,
            unavailable=self._unavailable,
        )
        scripts = {**SCRIPTS, **self.delivery.scripts}
        self._connections = RedisConnections(
            self.hosts,
            self._ring,
            self.connection_name,
            retry_timeout,
            sharded_publish(scripts) if cluster else scripts,
            cluster,
            inbox,
            callbacks,
        )
        self._health = self._connections.health
        self._delivery: ProcessDelivery = self.delivery(
            DeliveryContext(
                self._connections,
                self._mailboxes,
                self._key,
                self.client_prefix,
                self.expiry,
                self.get_capacity,
            )
        )
        self._groups = RedisGroups(
            self._connections,
            self._key,
            self.client_prefix,
            self._mailboxes,
            self.get_capacity,
            self.skipped_members,
            send=self._send,
            expiry=self.expiry,
            group_expiry=self.group_expiry,
        )
        self._named = NamedChannels(
            self._connections,
            functools.partial(self._key, "channel"),
            self.get_capacity,
            self._named_ttl,
            self.expiry,
            unavailable=lambda shard, error: self._unavailable(shard, error),
        )
        metrics.watch_layer("redis", self._mailboxes, self._groups.members)
        self._lease_channels(self._connections, self._key, at_least_once)
        self.history = HistoryConfig(history)
        # Envelopes keep messages apart, so no random prefix; an encrypted message is
        # refused once older than the longest a message may wait here (or be kept).
        kept = self.group_expiry if self._leased else self.expiry
        self._serializer = serializers.registry.get_serializer(
            serializer_format,
            symmetric_encryption_keys=symmetric_encryption_keys,
            random_prefix_length=0,
            expiry=max(kept, self.history.longest_ttl),
        )
        # A subclass's serialize()/deserialize() see every message, same-process ones too.
        self._own_codec = (
            type(self).serialize is not RedisChannelLayer.serialize
            or type(self).deserialize is not RedisChannelLayer.deserialize
        )
        # A broadcast's members here may share one decoding: local_message's ``taken``
        # counts nothing for a fan-out's receipt, and our own codec is a pure function.
        self._mailboxes.decode_once = not self._own_codec
        # The last broadcast receive() decoded here: its payload, receipt and a copy.
        self._last_broadcast: tuple[bytes, Any, dict[str, Any]] | None = None
        self._history = RedisHistory(
            self._connections,
            self._key,
            self._groups,
            self.serialize,
            functools.partial(serializers.unseal, self._serializer),
            functools.partial(serializers.decode, self._serializer, unsealed=True),
        )

    # The spec -------------------------------------------------------------------------

    async def send(self, channel: str, message: Message) -> None:
        """Queue ``message`` on ``channel``; ``ChannelFull`` if it holds its capacity.
        A channel of this process takes it into its mailbox, without Redis, and an idle
        consumer may handle it in this call (``consumers.eager``), outside the time the
        layer's metrics give the call."""
        handing: list[Handing] = []
        try:
            await self._timed_send(channel, message, handing)
        finally:  # what was claimed must be handled, or its consumer keeps its turn
            self._mailboxes.hand_over(handing)

    @metrics.timed("redis", "send")
    async def _timed_send(self, channel: str, message: Message, handing: list[Handing]) -> None:
        owner = self._owners.checked(channel)
        if owner == self.client_prefix and "!" in channel:
            payload = redis_local.encode_here(self, message)
            # A suspension point, as on the way to Redis: a sender in a loop lets its
            # receivers run; a cancelled send sends nothing.
            await asyncio.sleep(0)
            sent = self._delivery.send_here(channel, payload, handing)
        elif self._delivery.sends_from_any_loop and "!" in channel:
            payload = self.serialize(message)
            sent = await self._delivery.send(channel, owner, payload)  # it gets home itself
        else:
            payload = self.serialize(message)
            sent = await self._connections.run(self._send_to, channel, owner, payload)
        if not sent:
            metrics.dropped_full["redis"]()
            capacity = self.get_capacity(channel)
            raise ChannelFull(f"Channel {channel!r} is at its capacity of {capacity} messages")

    async def receive(self, channel: str) -> Message:
        """The next unexpired message on ``channel``; each message reaches one receiver.
        A message that cannot be decrypted or decoded is logged and skipped."""
        owner = self._owners.checked(channel)
        local = "!" in channel
        if local and owner != self.client_prefix:
            raise ValueError(
                f"Channel {channel!r} belongs to another process: only the process that "
                "made it with new_channel() can receive from it"
            )
        # What comes from Redis must reach the mailbox, even while messages sent here keep
        # it busy: the reader is made sure of once a call (off the home loop reading()
        # stays False: one hop, then wait), and again if woken for nothing.
        if local and not self._delivery.reading():
            await self._connections.run(self._delivery.start_reading)
        woken = False
        while True:
            if local:
                got = self._mailboxes.take(channel)  # Mailboxes.get, one coroutine less
                if isinstance(got, tuple):
                    try:
                        return redis_local.local_message(self, channel, *got)
                    except ValueError:  # logged, dropped: the next one
                        continue
                if woken and not self._delivery.reading():
                    self._mailboxes.abandon(channel, got)
                    await self._connections.run(self._delivery.start_reading)
                    woken = False
                    continue
                try:
                    await got
                except BaseException:
                    self._mailboxes.abandon(channel, got)
                    raise
                woken = True
                continue
            payload = await self._connections.run(self._named.receive, channel)
            try:
                return self.deserialize(payload)
            except ValueError as error:
                logger.error("Dropped a message on %r: %s", channel, error)

    async def when_ready(self, channel: str) -> asyncio.Future[None] | None:
        """See ``BaseChannelLayer.when_ready``: for this process's own channels."""
        if not self._is_local(channel):
            return None
        await self._connections.run(self._delivery.start_reading)
        return self._mailboxes.when_ready(channel)

    async def new_channel(self, prefix: str = "specific") -> str:
        """``{prefix}.{client_prefix}!{random}``: a channel only this process receives."""
        channel = self._new_channel_name(prefix, self.client_prefix)
        if self._delivery.reads_from_new_channel:  # else nothing sent before can be missed
            await self._connections.run(self._delivery.start_reading)
        return channel

    async def group_add(self, group: str, channel: str) -> None:
        """Add ``channel`` to ``group`` (or renew it); returns once broadcasts reach it."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        if self._is_local(channel):
            self._groups.members.add(group, channel, self.group_expiry)
            # Its inbox is read from now on, and broadcasts bring its mark (inbox_order).
            await self._connections.run(self._delivery.start_reading)
            await self._connections.run(self._groups.join_here, group)
        else:
            await self._connections.run(self._groups.join_directly, group, channel)

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group``; not an error if it was not a member."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        if self._is_local(channel) and self._groups.members.discard(group, channel):
            await self._connections.run(self._groups.leave_here, group)
        await self._connections.run(self._groups.leave_directly, group, channel)

    @metrics.timed("redis", "group_send")
    async def group_send(self, group: str, message: Message) -> Position | None:
        """Broadcast ``message`` to every member; full members miss it, without an error.
        A group with history also keeps it, and its ``Position`` is returned (else None)."""
        self.require_valid_group_name(group)
        payload = self.serialize(message)
        rule = self.history.rule(group)
        if rule is None:
            await self._connections.run(self._groups.send, group, payload)
            return None
        return await self._connections.run(self._history.send, group, rule, message, payload)

    async def group_position(self, group: str) -> Position:
        """The epoch of ``group`` and its last offset; ``ValueError`` if it keeps no history."""
        self.require_valid_group_name(group)
        rule = self.history.require(group)
        return await self._connections.run(self._history.position, group, rule)

    async def group_history(
        self, group: str, since: Position, limit: int | None = None
    ) -> list[Message]:
        """The kept messages of ``group`` after ``since``, oldest first (at most ``limit``);
        ``HistoryLost`` if ``since`` is of another epoch or some of them are gone."""
        self.require_valid_group_name(group)
        rule = self.history.require(group)
        since, limit = require_position(since), require_limit(limit)
        entries = await self._connections.run(self._history.read, group, rule, since, limit)
        return self._history.decode(group, since, entries)  # each caller its own copies

    async def flush(self) -> None:
        """Delete every key under this layer's prefix, on every host, and local state."""
        self._groups.members.clear()
        self._mailboxes.clear()
        await self._connections.run(redis_flush.delete_everything, self._connections, self.prefix)

    async def close(self) -> None:
        """Stop the readers and close the connections, within about 1.5 s; the layer
        reconnects if used again, from any loop."""
        await self._connections.run(self._connections.close)

    async def close_pools(self) -> None:
        """channels_redis's name for ``close()``."""
        await self.close()

    # Work done on the home loop ----------------------------------------------------------

    async def _send(self, channel: str, payload: bytes) -> bool:
        return await self._send_to(channel, ChannelOwners.of(channel), payload)

    async def _send_to(self, channel: str, owner: str, payload: bytes) -> bool:
        """``owner``: the process of a consumer channel (``ChannelOwners``)."""
        if "!" in channel:
            return await self._delivery.send(channel, owner, payload)
        return await self._named.send(channel, payload)

    async def _unavailable(self, shard: int, error: BaseException) -> None:
        """Wait before retrying: the backoff, or less if another caller gets through."""
        await self._health[shard].wait(error)

    # Process inbox and broadcasts (called by the home loop's readers) --------------------

    def _deliver(self, topic: str, data: bytes) -> None:
        """Handle a pub/sub message: the delivery strategy's, or a group broadcast."""
        if self._delivery.deliver(topic, data):
            return
        self._groups.deliver(topic, data)

    def _topics(self) -> list[str]:
        """The pub/sub topics this process needs: one per group with local members, and
        the delivery strategy's."""
        return self._groups.topics() + self._delivery.topics()

    # Helpers ---------------------------------------------------------------------------

    def _is_local(self, channel: str) -> bool:
        return "!" in channel and ChannelOwners.of(channel) == self.client_prefix

    def serialize(self, message: Message) -> bytes:
        """Check and encode ``message`` with the ``serializer_format``'s serializer
        (encrypted when keys are set), as channels_redis's layer does."""
        return serializers.encode(self, self._serializer, message)

    def deserialize(self, data: bytes) -> Message:
        """Decode ``serialize`` output; ``ValueError`` for anything else."""
        return serializers.decode(self._serializer, data)
