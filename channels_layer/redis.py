"""The Redis channel layer: many processes, on one machine or many, over one or more Redis.

How it works, in the Phoenix.PubSub manner:

- Every process has an id (``client_prefix``). Its consumers' channels
  (``specific.<id>!<suffix>``) share one Redis list, the process inbox, which one reader
  task drains in batches into in-memory mailboxes. Capacity still holds per channel: a Lua
  script counts each channel's pending messages in a hash and refuses a send at capacity,
  and the count drops when the consumer takes the message.
- Named channels (``runworker`` channels, for instance) are one Redis list each, so any
  process may receive from them; each message goes to one receiver.
- A group is a Redis pub/sub channel. A process subscribes while it has members in the
  group and fans each broadcast out to them in memory, so ``group_send`` is one PUBLISH,
  encoded once, whatever the number of members. A process that dies loses its
  subscriptions with its connection: its members leave the group at once, not after
  ``group_expiry``. Channels added to a group by a process that does not own them (a worker
  channel, say) are kept in a sorted set and sent to one by one, as channels_redis does.
- Keys are spread over several hosts by consistent hashing of the channel, process or group.
- All Redis I/O runs on one event loop, the "home" loop: the main thread's loop when it is
  running (Daphne, Uvicorn, ``runworker``), else a background thread of this layer. Calls
  from other threads and loops (``async_to_sync`` in a view, a management command or a
  Celery task) are handed to it, so they reuse its connections and never meet "Event loop
  is closed".
- A Redis that goes away is retried with backoff; each outage is logged once per host, and
  readers resubscribe and resume on their own when it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar, cast

import msgpack
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import serializers, stopping
from .base import MAX_MESSAGE_SIZE, BaseChannelLayer, CapacityPattern, Message
from .exceptions import ChannelFull, LayerUnavailable
from .inbox_order import SEQ_FIELD, SEQUENCE_LUA, InboxProgress, split_entry, split_marks
from .mailbox import GroupMembers, Mailboxes
from .redis_hosts import RedisHost, ShardRing, parse_hosts
from .redis_scripts import ScriptBatcher

logger = logging.getLogger(__name__)

T = TypeVar("T")

UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)
# Retries back off up to half a second, and all wake as soon as one gets through.
BACKOFF_FIRST, BACKOFF_MAX = 0.05, 0.5
INBOX_BATCH = 500
BLOCK_SECONDS = 1

# Each script takes its ARGV as consecutive groups, one per batched call (see
# redis_scripts), and returns one result per group.

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

# Queue messages on a named channel unless it holds its capacity already.
# ARGV groups: envelope, capacity, ttl. Result: 1 queued, 0 full.
SEND_TO_NAMED = """
local results = {}
for i = 1, #ARGV, 3 do
  if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[i + 1]) then
    results[#results + 1] = 0
  else
    redis.call('RPUSH', KEYS[1], ARGV[i])
    redis.call('EXPIRE', KEYS[1], ARGV[i + 2])
    results[#results + 1] = 1
  end
end
return results
"""

# At-least-once channels: take the next message under a lease that ends at a deadline,
# first putting back (in front) every message whose lease has run out. KEYS: the channel's
# list, its leases (a sorted set by deadline). ARGV groups: now, deadline, ttl.
# Result: the envelope, or 0 if the channel is empty.
CLAIM_LEASE = """
local results = {}
for i = 1, #ARGV, 3 do
  local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[i])
  for _, envelope in ipairs(expired) do
    redis.call('ZREM', KEYS[2], envelope)
    redis.call('LPUSH', KEYS[1], envelope)
  end
  local envelope = redis.call('LPOP', KEYS[1])
  if envelope then
    redis.call('ZADD', KEYS[2], ARGV[i + 1], envelope)
    redis.call('EXPIRE', KEYS[2], ARGV[i + 2])
    results[#results + 1] = envelope
  else
    results[#results + 1] = 0
  end
end
return results
"""

# Extend a lease that is still held. KEYS: leases. ARGV groups: envelope, deadline.
# Result: 1 extended, 0 lost (it ran out and went back to the channel).
RENEW_LEASE = """
local results = {}
for i = 1, #ARGV, 2 do
  results[#results + 1] = redis.call('ZADD', KEYS[1], 'XX', 'CH', ARGV[i + 1], ARGV[i])
end
return results
"""

# End a lease: the job is done, or (give_back = 1) it goes back in front of the channel.
# KEYS: the channel's list, leases. ARGV groups: envelope, give_back, ttl.
END_LEASE = """
local results = {}
for i = 1, #ARGV, 3 do
  local held = redis.call('ZREM', KEYS[2], ARGV[i])
  if held == 1 and ARGV[i + 1] == '1' then
    redis.call('LPUSH', KEYS[1], ARGV[i])
    redis.call('EXPIRE', KEYS[1], ARGV[i + 2])
  end
  results[#results + 1] = held
end
return results
"""

# Broadcast to the subscribed processes, with the marks of their inboxes (see
# inbox_order), drop expired direct members and processes, and return the live members.
# KEYS: direct members, topic, member processes.
# ARGV groups: envelope, oldest live membership time, the pending hashes' key prefix.
GROUP_SEND = (
    SEQUENCE_LUA
    + """
local results = {}
for i = 1, #ARGV, 3 do
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[i + 1])
  redis.call('PUBLISH', KEYS[2], marks(KEYS[3], ARGV[i + 2]) .. ARGV[i])
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[i + 1])
  results[#results + 1] = redis.call('ZRANGE', KEYS[1], 0, -1)
end
return results
"""
)

# A channel this process does not own joins a group directly, for group_expiry seconds.
# ARGV groups: channel, now, ttl.
ADD_MEMBER = """
local results = {}
for i = 1, #ARGV, 3 do
  redis.call('ZADD', KEYS[1], ARGV[i + 1], ARGV[i])
  redis.call('EXPIRE', KEYS[1], ARGV[i + 2])
  results[#results + 1] = 0
end
return results
"""

# A channel leaves a group's direct members. ARGV groups: channel.
DISCARD_MEMBER = """
local results = {}
for i = 1, #ARGV do
  results[#results + 1] = redis.call('ZREM', KEYS[1], ARGV[i])
end
return results
"""

SCRIPTS = {
    "add_member": ADD_MEMBER,
    "discard_member": DISCARD_MEMBER,
    "send_to_process": SEND_TO_PROCESS,
    "taken_by_process": TAKEN_BY_PROCESS,
    "send_to_named": SEND_TO_NAMED,
    "group_send": GROUP_SEND,
    "claim_lease": CLAIM_LEASE,
    "renew_lease": RENEW_LEASE,
    "end_lease": END_LEASE,
}


class RedisChannelLayer(BaseChannelLayer):
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
    """

    extensions = ["groups", "flush"]

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
    ) -> None:
        super().__init__(
            expiry=expiry,
            group_expiry=group_expiry,
            capacity=capacity,
            channel_capacity=channel_capacity,
            max_message_size=max_message_size,
        )
        self.require_valid_group_name(prefix)
        self.hosts = parse_hosts(hosts)
        self.prefix = prefix
        self.client_prefix = secrets.token_hex(max(random_prefix_length, 8) // 2)
        self.retry_timeout = retry_timeout
        # Names this process's connections in Redis's CLIENT LIST.
        self.connection_name = f"channels-layer-{self.client_prefix}"
        self._ring = ShardRing(len(self.hosts))
        self._mailboxes = Mailboxes(on_discard=self._taken)
        self._members = GroupMembers()
        self._home = _Home(self)
        self._health = [_Health(host.label) for host in self.hosts]
        self._leased = self.compile_patterns(
            at_least_once or {}, "at_least_once", self._require_seconds
        )
        # Envelopes keep messages apart, so no random prefix; an encrypted message is
        # refused once older than the longest a message may wait here.
        self._serializer = serializers.registry.get_serializer(
            serializer_format,
            symmetric_encryption_keys=symmetric_encryption_keys,
            random_prefix_length=0,
            expiry=self.group_expiry if self._leased else self.expiry,
        )

    # The spec -------------------------------------------------------------------------

    async def send(self, channel: str, message: Message) -> None:
        """Queue ``message`` on ``channel``; ``ChannelFull`` if it holds its capacity."""
        self.require_valid_channel_name(channel)
        payload = self.serialize(message)
        if not await self._home.run(self._send, channel, payload):
            capacity = self.get_capacity(channel)
            raise ChannelFull(f"Channel {channel!r} is at its capacity of {capacity} messages")

    async def receive(self, channel: str) -> Message:
        """The next unexpired message on ``channel``; each message reaches one receiver.
        A message that cannot be decrypted or decoded is logged and skipped."""
        self.require_valid_channel_name(channel)
        local = "!" in channel
        if local and self._owner(channel) != self.client_prefix:
            raise ValueError(
                f"Channel {channel!r} belongs to another process: only the process that "
                "made it with new_channel() can receive from it"
            )
        while True:
            if local:
                await self._home.run(self._start_process_reader)
                payload, counted = await self._mailboxes.get(channel)
                self._taken(channel, counted)
            else:
                payload = await self._home.run(self._receive_named, channel)
            try:
                return self.deserialize(payload)
            except ValueError as error:
                logger.error("Dropped a message on %r: %s", channel, error)

    async def when_ready(self, channel: str) -> asyncio.Future[None] | None:
        """See ``BaseChannelLayer.when_ready``: for this process's own channels."""
        if not self._is_local(channel):
            return None
        await self._home.run(self._start_process_reader)
        return self._mailboxes.when_ready(channel)

    async def new_channel(self, prefix: str = "specific") -> str:
        """``{prefix}.{client_prefix}!{random}``: a channel only this process receives."""
        return self._new_channel_name(prefix, self.client_prefix)

    def lease_timeout(self, channel: str) -> float | None:
        """The visibility timeout of an ``at_least_once`` channel; None for the others."""
        if "!" in channel:
            return None
        return next((seconds for pattern, seconds in self._leased if pattern.match(channel)), None)

    async def receive_leased(self, channel: str) -> tuple[Message, Lease]:
        """The next message of an ``at_least_once`` channel and its lease: call
        ``lease.finish()`` once the job is done (or ``give_back()`` to run it elsewhere)."""
        self.require_valid_channel_name(channel)
        timeout = self.lease_timeout(channel)
        if timeout is None:
            raise ValueError(f"Channel {channel!r} is not configured as at_least_once")
        while True:
            lease = await self._home.run(self._claim, channel, timeout)
            try:
                return self.deserialize(_named_envelope(lease.envelope)[1]), lease
            except ValueError as error:
                logger.error("Dropped a message on %r: %s", channel, error)
                await lease.finish()

    async def group_add(self, group: str, channel: str) -> None:
        """Add ``channel`` to ``group`` (or renew it); returns once broadcasts reach it."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        if self._is_local(channel):
            self._members.add(group, channel, self.group_expiry)
            # Its inbox is read from now on, and broadcasts bring its mark (inbox_order).
            await self._home.run(self._start_process_reader)
            args = [self.client_prefix, time.time(), int(self.group_expiry) + 1]
            key, shard = self._key("procs", group), self._ring.shard(group)
            await self._home.run(self._script, shard, "add_member", [key], args)
            await self._home.run(self._home.subscribe, self._key("broadcast", group))
        else:
            key, args = (
                self._key("group", group),
                [channel, time.time(), int(self.group_expiry) + 1],
            )
            await self._home.run(self._script, self._ring.shard(group), "add_member", [key], args)

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group``; not an error if it was not a member."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        key, shard = self._key("group", group), self._ring.shard(group)
        if self._is_local(channel) and self._members.discard(group, channel):
            await self._home.run(self._home.unsubscribe, self._key("broadcast", group))
            procs = [self._key("procs", group)]
            await self._home.run(self._script, shard, "discard_member", procs, [self.client_prefix])
        await self._home.run(self._script, shard, "discard_member", [key], [channel])

    async def group_send(self, group: str, message: Message) -> None:
        """Broadcast ``message`` to every member; full members miss it, without an error."""
        self.require_valid_group_name(group)
        payload = self.serialize(message)
        await self._home.run(self._group_send, group, payload)

    async def flush(self) -> None:
        """Delete every key under this layer's prefix, on every host, and local state."""
        self._members.clear()
        self._mailboxes.clear()
        await self._home.run(self._flush)

    async def close(self) -> None:
        """Stop the readers and close the connections, within about 1.5 s; the layer
        reconnects if used again, from any loop."""
        await self._home.run(self._home.close)

    async def close_pools(self) -> None:
        """channels_redis's name for ``close()``."""
        await self.close()

    # Work done on the home loop ----------------------------------------------------------

    async def _send(self, channel: str, payload: bytes) -> bool:
        if "!" in channel:
            return await self._send_to_process(channel, payload)
        # The token keeps equal messages apart in an at_least_once channel's leases.
        envelope = msgpack.packb([time.time(), payload, secrets.token_bytes(8)])
        keys = [self._key("channel", channel)]
        args = [envelope, self.get_capacity(channel), self._named_ttl(channel)]
        return bool(await self._script(self._ring.shard(channel), "send_to_named", keys, args))

    def _named_ttl(self, channel: str) -> int:
        kept = self.group_expiry if self.lease_timeout(channel) is not None else self.expiry
        return int(kept) + 1

    async def _claim(self, channel: str, timeout: float) -> Lease:
        key, shard = self._key("channel", channel), self._ring.shard(channel)
        keys = [key, self._key("leases", channel)]
        while True:
            now = time.time()
            try:
                envelope = await self._script(
                    shard, "claim_lease", keys, [now, now + timeout, self._named_ttl(channel)]
                )
                if envelope:
                    return Lease(self, channel, envelope, timeout)
                # Wait for a message (a blocking no-op move), or a second for a lease to
                # run out; then claim again.
                await (
                    self._home.state()
                    .clients[shard]
                    .blmove(key, key, BLOCK_SECONDS, "LEFT", "LEFT")
                )
            except UNAVAILABLE as error:
                await self._unavailable(shard, error)

    async def _end_lease(self, lease: Lease, give_back: bool) -> bool:
        lease.stop_renewing()
        keys = [self._key("channel", lease.channel), self._key("leases", lease.channel)]
        args = [lease.envelope, int(give_back), self._named_ttl(lease.channel)]
        return bool(await self._script(self._ring.shard(lease.channel), "end_lease", keys, args))

    async def _renew_lease(self, lease: Lease) -> bool:
        keys = [self._key("leases", lease.channel)]
        args = [lease.envelope, time.time() + lease.timeout]
        return bool(await self._script(self._ring.shard(lease.channel), "renew_lease", keys, args))

    async def _send_to_process(self, channel: str, payload: bytes) -> bool:
        owner = self._owner(channel)
        envelope = msgpack.packb([channel, time.time(), payload])
        keys = [self._key("inbox", owner), self._key("pending", owner)]
        args = [channel, envelope, self.get_capacity(channel), int(self.expiry) + 1]
        return bool(await self._script(self._ring.shard(owner), "send_to_process", keys, args))

    async def _start_process_reader(self) -> None:
        await self._home.start_inbox_reader()

    async def _receive_named(self, channel: str) -> bytes:
        key, shard = self._key("channel", channel), self._ring.shard(channel)
        while True:
            state = self._home.state()
            popping = asyncio.ensure_future(
                state.clients[shard].blpop([key], timeout=BLOCK_SECONDS)
            )
            try:
                popped = await asyncio.shield(popping)
            except asyncio.CancelledError:
                # The pop may still succeed after we stop waiting: put it back in front.
                popping.add_done_callback(functools.partial(_requeue, state, shard, key))
                raise
            except UNAVAILABLE as error:
                await self._unavailable(shard, error)
                continue
            self._health[shard].up()
            if popped is None:
                continue
            try:
                sent_at, payload = _named_envelope(popped[1])
            except ValueError as error:
                logger.error("Dropped a malformed entry on %r: %s", channel, error)
                continue
            if time.time() - sent_at < self.expiry:
                return payload

    async def _group_send(self, group: str, payload: bytes) -> None:
        envelope = msgpack.packb([time.time(), payload])
        keys = [self._key("group", group), self._key("broadcast", group)]
        keys.append(self._key("procs", group))
        args = [envelope, time.time() - self.group_expiry, self._key("pending", "")]
        direct = await self._script(self._ring.shard(group), "group_send", keys, args)
        for member in direct:
            channel = member.decode() if isinstance(member, bytes) else member
            if not await self._send(channel, payload):
                self.skipped_members.skipped(group, channel)

    async def _flush(self) -> None:
        for topic in self._home.topics():
            await self._home.unsubscribe(topic)
        for shard in range(len(self.hosts)):

            async def delete_all(state: _LoopState, shard: int = shard) -> None:
                client = state.clients[shard]
                batch = [key async for key in client.scan_iter(match=f"{self.prefix}:*")]
                for start in range(0, len(batch), 1000):
                    await client.unlink(*batch[start : start + 1000])

            await self._call(shard, delete_all)

    async def _script(self, shard: int, name: str, keys: list[str], args: list[Any]) -> Any:
        """Run a Lua script by SHA, batched with the other calls of this loop turn."""
        return await self._call(shard, lambda state: state.scripts[shard].call(name, keys, args))

    async def _call(self, shard: int, operation: Callable[[_LoopState], Awaitable[T]]) -> T:
        """Run ``operation`` against one shard, retrying with backoff while it is
        unreachable, for at most ``retry_timeout`` seconds."""
        deadline = time.monotonic() + self.retry_timeout
        while True:
            try:
                result = await operation(self._home.state())
            except UNAVAILABLE as error:
                if time.monotonic() >= deadline:
                    label = self.hosts[shard].label
                    raise LayerUnavailable(
                        f"Redis {label} unreachable for {self.retry_timeout} s: {error}"
                    ) from error
                await self._unavailable(shard, error)
                continue
            self._health[shard].up()
            return result

    async def _unavailable(self, shard: int, error: BaseException) -> None:
        """Wait before retrying: the backoff, or less if another caller gets through."""
        await self._health[shard].wait(error)

    # Process inbox and broadcasts (called by the home loop's readers) --------------------

    def _deliver(self, topic: str, data: bytes) -> None:
        """Handle a pub/sub message: a group broadcast (or, for the pub/sub layer, a
        message for one of this process's channels)."""
        group = topic.removeprefix(self._key("broadcast", ""))
        if not self._deliver_broadcast(group, data):
            self._home.state().spawn(self._home.unsubscribe(topic))  # its members all expired

    def _deliver_from_inbox(self, entry: bytes, progress: InboxProgress) -> None:
        """Deliver an inbox entry to its mailbox, in order with held broadcasts."""
        try:
            seq, envelope = split_entry(entry)
            channel, sent_at, payload = msgpack.unpackb(envelope)
        except (ValueError, TypeError) as error:
            logger.error("Dropped a malformed entry in this process's inbox: %s", error)
            return
        progress.before(seq)
        remaining = self.expiry - (time.time() - sent_at)
        if remaining <= 0:
            self._taken(channel, 1)
        else:
            self._mailboxes.put(channel, payload, remaining, capacity=None, receipt=1)
        progress.advanced(seq)

    def _deliver_broadcast(self, group: str, envelope: bytes) -> bool:
        """Fan a broadcast out to the local members; False if the group has none left."""
        try:
            sent_at, payload = msgpack.unpackb(envelope)
        except (ValueError, TypeError) as error:
            logger.error("Dropped a malformed broadcast to group %r: %s", group, error)
            return True
        remaining = self.expiry - (time.time() - sent_at)
        members = self._members.live_members(group)
        for channel in members if remaining > 0 else ():
            if not self._mailboxes.put(channel, payload, remaining, self.get_capacity(channel)):
                self.skipped_members.skipped(group, channel)
        return bool(members)

    def _topics(self) -> list[str]:
        """The pub/sub topics this process needs: one per group with local members."""
        return [self._key("broadcast", group) for group in self._members.groups()]

    def _taken(self, channel: str, receipt: Any) -> None:
        """A counted message left this process's inbox: lower its channel's count."""
        if receipt:
            self._home.count_taken(channel)

    # Helpers ---------------------------------------------------------------------------

    def _key(self, kind: str, name: str) -> str:
        return f"{self.prefix}:{kind}:{name}"

    def _owner(self, channel: str) -> str:
        return channel.partition("!")[0].rpartition(".")[2]

    def _is_local(self, channel: str) -> bool:
        return "!" in channel and self._owner(channel) == self.client_prefix

    def serialize(self, message: Message) -> bytes:
        """Check and encode ``message`` with the ``serializer_format``'s serializer
        (encrypted when keys are set), as channels_redis's layer does."""
        return serializers.encode(self, self._serializer, message)

    def deserialize(self, data: bytes) -> Message:
        """Decode ``serialize`` output; ``ValueError`` for anything else."""
        return serializers.decode(self._serializer, data)


class Lease:
    """A message taken from an ``at_least_once`` channel, held by one worker.

    While held it is renewed in the background every third of the visibility timeout, so
    no other worker takes it; if the holder dies, renewals stop and the message returns to
    the channel when the lease runs out.
    """

    def __init__(self, layer: RedisChannelLayer, channel: str, envelope: bytes, timeout: float):
        self.layer = layer
        self.channel = channel
        self.envelope = envelope
        self.timeout = timeout
        self._renewing = asyncio.get_running_loop().create_task(self._renew())

    async def finish(self) -> None:
        """The job is done: the message leaves Redis."""
        await self.layer._home.run(self.layer._end_lease, self, False)

    async def give_back(self) -> None:
        """The job did not run: the message goes back to the front of its channel now."""
        await self.layer._home.run(self.layer._end_lease, self, True)

    def abandon(self) -> None:
        """Stop renewing, as if the holder had died: another worker gets the message once
        the lease runs out (after a crash, that spaces out the retries)."""
        self._renewing.get_loop().call_soon_threadsafe(self._renewing.cancel)

    def stop_renewing(self) -> None:
        self._renewing.cancel()

    async def _renew(self) -> None:
        while True:
            stopping.raise_if_cancelled()
            await asyncio.sleep(self.timeout / 3)
            try:
                held = await self.layer._renew_lease(self)
            except UNAVAILABLE:
                continue  # Redis is down: the outage is logged; try again next time
            if not held:
                logger.warning(
                    "A job on %r outlived its lease (Redis was unreachable for longer than "
                    "the visibility timeout): it may run again elsewhere",
                    self.channel,
                )
                return


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _named_envelope(envelope: bytes | str) -> tuple[float, bytes]:
    """A named channel's entry: ``[sent_at, payload, token]``; ValueError if malformed."""
    try:
        sent_at, payload = msgpack.unpackb(envelope)[:2]
        return float(sent_at), bytes(payload)
    except (ValueError, TypeError, IndexError) as error:
        raise ValueError(f"not a channel layer entry ({error})") from None


def _requeue(state: _LoopState, shard: int, key: str, done: asyncio.Future[Any]) -> None:
    if not done.cancelled() and done.exception() is None and done.result() is not None:
        state.spawn(_quietly(state.clients[shard].lpush(key, done.result()[1])))


class _Health:
    """Logs one line when a host becomes unreachable and one when it is back."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.down_since: float | None = None
        self.backoff = BACKOFF_FIRST
        self._waiting: set[asyncio.Future[None]] = set()

    async def wait(self, error: BaseException) -> None:
        """Record a failure and sleep the backoff, or until ``up()``."""
        back = asyncio.get_running_loop().create_future()
        self._waiting.add(back)
        try:
            # Not asyncio.wait_for, which can swallow a cancellation on Python 3.11.
            await asyncio.wait([back], timeout=self.down(error))
        finally:
            self._waiting.discard(back)

    def down(self, error: BaseException) -> float:
        """Record a failure; the seconds to wait before trying again."""
        if self.down_since is None:
            self.down_since = time.monotonic()
            self.backoff = BACKOFF_FIRST
            logger.warning("Redis %s is unreachable (%s); retrying", self.label, error)
        wait = self.backoff
        self.backoff = min(self.backoff * 2, BACKOFF_MAX)
        return wait

    def up(self) -> None:
        if self.down_since is not None:
            logger.warning(
                "Redis %s is reachable again after %.1f s",
                self.label,
                time.monotonic() - self.down_since,
            )
            self.down_since = None
            for back in self._waiting:
                if not back.done():
                    back.get_loop().call_soon_threadsafe(_resolve, back)


class _LoopState:
    """The clients, scripts and reader tasks of one home loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, hosts: list[RedisHost], name: str) -> None:
        self.loop = loop
        self.clients = [host.client(name) for host in hosts]
        self.scripts = [ScriptBatcher(client, SCRIPTS) for client in self.clients]
        self.inbox_reader: asyncio.Task[None] | None = None
        self.inbox_client: Redis | None = None
        self.inbox_client_id: int | None = None
        self.inbox_progress = InboxProgress()
        # Set when this state is closed or replaced (a new home loop): its readers stop
        # at their next turn and deliver nothing more, even if their loop runs again.
        self.closing = False
        self.pubsubs: dict[int, PubSub] = {}
        # Every pub/sub connection a reader opened and has not closed itself.
        self.open_pubsubs: set[PubSub] = set()
        self.subscription_readers: dict[int, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        # pub/sub topic -> resolved when Redis confirms the SUBSCRIBE
        self.subscribed: dict[str, asyncio.Future[None]] = {}
        # What a new home loop waits for before working: its topics subscribed again,
        # and the replaced loop's inbox reader unblocked.
        self.resubscribing: list[asyncio.Future[None]] = []

    def reading(self) -> bool:
        """Whether readers (inbox or pub/sub) run in this state."""
        return self.inbox_reader is not None or bool(self.subscribed)

    async def shut(self) -> None:
        """Stop every task of this state and close every connection, in bounded time."""
        self.closing = True
        tasks = [self.inbox_reader, *self.subscription_readers.values(), *self._background]
        await stopping.stop([task for task in tasks if task], self._close_connections, "layer")

    async def _close_connections(self) -> None:
        # Pools too: disconnecting a connection ends a read a cancellation did not end.
        clients = [*self.clients, *([self.inbox_client] if self.inbox_client else [])]
        await asyncio.gather(
            *(_quietly(pubsub.aclose()) for pubsub in self.open_pubsubs),
            *(_quietly(client.aclose(close_connection_pool=True)) for client in clients),
        )

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run a fire-and-forget coroutine, keeping a reference so it is not collected."""
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


class _Home:
    """Runs the layer's Redis work on one loop and owns that loop's state (see module
    docstring). Also batches the "message taken" count updates."""

    def __init__(self, layer: RedisChannelLayer) -> None:
        self.layer = layer
        self._lock = threading.Lock()
        self._main_loop: asyncio.AbstractEventLoop | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._state: _LoopState | None = None
        self._taken: dict[str, int] = defaultdict(int)
        self._taken_flush_scheduled = False
        self._retiring: set[asyncio.Task[None]] = set()

    # Choosing the loop -------------------------------------------------------------

    async def run(self, function: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """Await ``function(*args)`` on the home loop, from whatever loop calls."""
        running = asyncio.get_running_loop()
        if threading.current_thread() is threading.main_thread():
            self._main_loop = running
        home = self._home_loop()
        if home is running:
            state = self._state
            if state is not None and state.loop is running and not state.resubscribing:
                return await function(*args)  # the usual case, kept short
            return await self._settled(function(*args))
        future = asyncio.run_coroutine_threadsafe(self._settled(function(*args)), home)
        return await asyncio.wrap_future(future)

    async def _settled(self, work: Coroutine[Any, Any, T]) -> T:
        """Await ``work`` once a new home loop has its subscriptions back, so nothing this
        process publishes (to itself, or to a group it is in) goes to a connection that
        is not subscribed yet."""
        state = self.state()
        if state.resubscribing:
            pending = [confirmed for confirmed in state.resubscribing if not confirmed.done()]
            if pending:
                await asyncio.wait(pending, timeout=self.layer.retry_timeout)
            else:
                state.resubscribing = []
        return await work

    def _home_loop(self) -> asyncio.AbstractEventLoop:
        main, state = self._main_loop, self._state
        # Readers already running on this layer's thread stay there: moving them to the
        # main loop could lose what is in flight to the old connections.
        if (
            main is not None
            and main.is_running()
            and (state is None or state.loop is not self._thread_loop or not state.reading())
        ):
            return main
        with self._lock:
            if self._thread_loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(
                    target=loop.run_forever, name="channels-layer-redis", daemon=True
                ).start()
                self._thread_loop = loop
            return self._thread_loop

    def state(self) -> _LoopState:
        """This loop's state, made anew when the home loop changed (a new test's loop)."""
        loop = asyncio.get_running_loop()
        state = self._state
        if state is None or state.loop is not loop:
            old = state
            state = self._state = _LoopState(loop, self.layer.hosts, self.layer.connection_name)
            state.resubscribing = [
                self._start_subscription(state, topic) for topic in self.layer._topics()
            ]
            if old is not None:
                self._retire(old)
                if old.inbox_reader is not None:  # this process's channels still receive
                    state.inbox_reader = asyncio.ensure_future(self._read_inbox(state))
                if old.inbox_client_id is not None:
                    # Its BLMPOP would take entries it cannot deliver while its loop waits.
                    unblock = self._unblock(state, old.inbox_client_id)
                    state.resubscribing.append(asyncio.ensure_future(unblock))
        return state

    async def _unblock(self, state: _LoopState, client_id: int) -> None:
        shard = self.layer._ring.shard(self.layer.client_prefix)
        await _quietly(state.clients[shard].client_unblock(client_id))

    def _retire(self, old: _LoopState) -> None:
        """The home loop changed: the old state's readers must not deliver too (that
        would duplicate broadcasts); shut it on its own loop, now or when it runs again."""
        old.closing = True

        def shut() -> None:
            task = asyncio.ensure_future(old.shut())
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

        with contextlib.suppress(RuntimeError):  # its loop is closed: nothing runs there
            old.loop.call_soon_threadsafe(shut)

    # The process inbox ---------------------------------------------------------------

    async def start_inbox_reader(self) -> None:
        state = self.state()
        if state.inbox_reader is None or state.inbox_reader.done():
            state.inbox_reader = asyncio.ensure_future(self._read_inbox(state))

    async def _read_inbox(self, state: _LoopState) -> None:
        layer = self.layer
        owner = layer.client_prefix
        key, shard = layer._key("inbox", owner), layer._ring.shard(owner)
        # A connection of its own, which BLMPOP holds while waiting; the state closes it.
        client = state.inbox_client = layer.hosts[shard].client(
            layer.connection_name, dedicated=True
        )
        with contextlib.suppress(*UNAVAILABLE):  # for a later home loop to unblock it
            state.inbox_client_id = await client.client_id()
        next_sweep = time.monotonic() + layer.expiry
        while not state.closing:
            stopping.raise_if_cancelled()
            try:
                popped = await client.blmpop(
                    BLOCK_SECONDS, 1, key, direction="LEFT", count=INBOX_BATCH
                )
            except UNAVAILABLE as error:
                if not state.closing:
                    await layer._unavailable(shard, error)
                continue
            layer._health[shard].up()
            # Delivered even when closing: they have left Redis, and would be lost.
            for entry in cast(list[bytes], popped[1]) if popped else ():
                layer._deliver_from_inbox(entry, state.inbox_progress)
            if not popped:
                state.inbox_progress.drained()
            if time.monotonic() >= next_sweep:
                layer._mailboxes.sweep()
                next_sweep = time.monotonic() + layer.expiry

    def count_taken(self, channel: str) -> None:
        """Note that a counted message was taken; flushed to Redis in batches."""
        with self._lock:
            self._taken[channel] += 1
            if self._taken_flush_scheduled:
                return
            self._taken_flush_scheduled = True
        home = self._home_loop()
        home.call_soon_threadsafe(lambda: self.state().spawn(self._flush_taken()))

    async def _flush_taken(self) -> None:
        with self._lock:
            taken, self._taken = self._taken, defaultdict(int)
            self._taken_flush_scheduled = False
        layer = self.layer
        owner = layer.client_prefix
        shard, keys = layer._ring.shard(owner), [layer._key("pending", owner)]
        with contextlib.suppress(*UNAVAILABLE):  # the counts went with the Redis that lost them
            await asyncio.gather(
                *(layer._script(shard, "taken_by_process", keys, [c, n]) for c, n in taken.items())
            )

    # Broadcast subscriptions ---------------------------------------------------------

    async def subscribe(self, topic: str) -> None:
        """Subscribe to a pub/sub ``topic``; returns once Redis confirms, so a message
        published after that is never missed."""
        state = self.state()
        confirmed = state.subscribed.get(topic) or self._start_subscription(state, topic)
        try:
            await asyncio.wait_for(asyncio.shield(confirmed), self.layer.retry_timeout)
        except TimeoutError:
            label = self.layer.hosts[self._shard(topic)].label
            raise LayerUnavailable(
                f"Redis {label} did not confirm the subscription to {topic!r} within "
                f"{self.layer.retry_timeout} s; it will be made when Redis is reachable"
            ) from None

    def _start_subscription(self, state: _LoopState, topic: str) -> asyncio.Future[None]:
        shard = self._shard(topic)
        confirmed = state.subscribed[topic] = state.loop.create_future()
        reader = state.subscription_readers.get(shard)
        if reader is None or reader.done():
            state.subscription_readers[shard] = asyncio.ensure_future(
                self._read_subscriptions(state, shard)
            )
        elif shard in state.pubsubs:
            state.spawn(_quietly(state.pubsubs[shard].subscribe(topic)))
        # else: the reader is reconnecting and subscribes to everything in state.subscribed
        return confirmed

    async def unsubscribe(self, topic: str) -> None:
        state = self.state()
        if state.subscribed.pop(topic, None) is not None:
            pubsub = state.pubsubs.get(self._shard(topic))
            if pubsub is not None:
                await _quietly(pubsub.unsubscribe(topic))

    def topics(self) -> list[str]:
        return list(self._state.subscribed) if self._state else []

    def _shard(self, topic: str) -> int:
        """Topics are ``{prefix}:{kind}:{name}`` and live on the shard of ``name``."""
        return self.layer._ring.shard(topic.split(":", 2)[2])

    async def _read_subscriptions(self, state: _LoopState, shard: int) -> None:
        """Keep one pub/sub connection to ``shard`` subscribed to each of its topics and
        hand messages to the layer; reconnect when it drops, stop when no topic is left."""
        layer = self.layer
        while not state.closing:
            stopping.raise_if_cancelled()
            wanted = [topic for topic in state.subscribed if self._shard(topic) == shard]
            if not wanted:
                return
            pubsub = state.clients[shard].pubsub()
            state.open_pubsubs.add(pubsub)  # closed by the state if this task is cancelled
            try:
                # Shared only once connected: a second subscribe during the first would
                # open a second connection that nobody reads.
                await pubsub.subscribe(*wanted)
                state.pubsubs[shard] = pubsub
                late = [t for t in state.subscribed if self._shard(t) == shard and t not in wanted]
                if late:
                    await pubsub.subscribe(*late)
                while not state.closing and any(self._shard(t) == shard for t in state.subscribed):
                    stopping.raise_if_cancelled()
                    message = await pubsub.get_message(timeout=BLOCK_SECONDS)
                    layer._health[shard].up()
                    unmarked = []
                    while message is not None and not state.closing:  # else the new state's
                        topic = message["channel"].decode()
                        if message["type"] == "message":
                            held = self._hold(state, shard, topic, message["data"])
                            unmarked += [held] if held else []
                        elif message["type"] == "subscribe":
                            confirmed = state.subscribed.get(topic)
                            if confirmed is not None and not confirmed.done():
                                confirmed.set_result(None)
                        # Whatever else has arrived joins this batch (no waiting).
                        more = len(unmarked) < INBOX_BATCH
                        message = await pubsub.get_message(timeout=0) if more else None
                    if unmarked:
                        state.inbox_progress.settle(unmarked, await self._inbox_latest(state))
            except UNAVAILABLE as error:
                if not state.closing:
                    await layer._unavailable(shard, error)
            finally:
                state.pubsubs.pop(shard, None)
            # Not in ``finally``: a cancelled reader awaits nothing (its loop may be ending).
            state.open_pubsubs.discard(pubsub)
            await _quietly(pubsub.aclose())

    def _hold(self, state: _LoopState, shard: int, topic: str, data: bytes) -> list[Any] | None:
        """Hold a pub/sub message for delivery in order with the inbox (see inbox_order);
        the held item if the inbox's number must still be read, else None."""
        layer = self.layer
        owner = layer.client_prefix
        mark: int | None = None
        if topic.startswith(layer._key("broadcast", "")):
            with contextlib.suppress(ValueError):  # unmarked: from an older version
                marks, data = split_marks(data)
                if shard == layer._ring.shard(owner):  # else another server's number
                    mark = marks.get(owner)
        if state.inbox_reader is None or state.inbox_reader.done():
            mark = 0  # no consumer channel receives here
        deliver = functools.partial(layer._deliver, topic, data)
        held = state.inbox_progress.hold(mark, deliver)
        return held if mark is None else None

    async def _inbox_latest(self, state: _LoopState) -> int | None:
        """The sequence number of the latest entry queued in this process's inbox."""
        if state.inbox_reader is None or state.inbox_reader.done():
            return None  # no consumer channel receives here
        layer = self.layer
        owner = layer.client_prefix
        client = state.clients[layer._ring.shard(owner)]
        try:
            latest = await client.hget(layer._key("pending", owner), SEQ_FIELD)
        except UNAVAILABLE:
            return None  # the inbox is unreachable too: nothing can come from it now
        return int(latest) if latest else None

    async def close(self) -> None:
        state = self._state
        if state is None or state.loop is not asyncio.get_running_loop():
            return
        self._state = None
        await state.shut()


async def _quietly(awaitable: Awaitable[Any]) -> None:
    try:
        await awaitable
    except Exception as error:  # best effort: the connection is going away anyway
        logger.debug("Ignoring %r while tidying a Redis connection", error)
