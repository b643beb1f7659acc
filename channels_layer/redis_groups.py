"""Groups on Redis: a group is a pub/sub topic, plus the members Redis must send to.

A process subscribes to a group's topic while it has members in the group and fans each
broadcast out to them in memory, so ``group_send`` is one PUBLISH, encoded once, whatever
the number of members. A process that dies loses its subscriptions with its connection:
its members leave the group at once, not after ``group_expiry``. Channels added to a group
by a process that does not own them (a worker channel, say) are kept in a sorted set and
sent to one by one, as channels_redis does. On a Redis Cluster the topic is a shard
channel (SPUBLISH/SSUBSCRIBE) in the group's slot, so a broadcast reaches only the nodes of
that shard, not every node. Every method runs on the home loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from . import metrics
from . import redis_envelopes as envelopes
from .base import SkippedMembers
from .group_members import GroupMembers
from .history import Stamp
from .inbox_order import SEQUENCE_LUA
from .mailbox import Mailboxes
from .redis_connections import RedisConnections
from .redis_hosts import KeyScheme

logger = logging.getLogger("channels_layer.redis")

# Each script takes its ARGV as consecutive groups, one per batched call (see
# script_batcher), and returns one result per group.

# Lua's ``broadcast(members, topic, procs, data, oldest, pending_prefix)``: publish ``data``
# to the subscribed processes, with the marks of their inboxes (see inbox_order), drop
# expired direct members and processes, and return the live direct members.
BROADCAST_LUA = (
    SEQUENCE_LUA
    + """
local function broadcast(members, topic, procs, data, oldest, pending_prefix)
  redis.call('ZREMRANGEBYSCORE', procs, '-inf', oldest)
  redis.call('PUBLISH', topic, marks(procs, pending_prefix) .. data)
  redis.call('ZREMRANGEBYSCORE', members, '-inf', oldest)
  return redis.call('ZRANGE', members, 0, -1)
end
"""
)

# KEYS: direct members, topic, member processes.
# ARGV groups: envelope, oldest live membership time, the pending hashes' key prefix.
GROUP_SEND = (
    BROADCAST_LUA
    + """
local results = {}
for i = 1, #ARGV, 3 do
  results[#results + 1] = broadcast(KEYS[1], KEYS[2], KEYS[3], ARGV[i], ARGV[i + 1], ARGV[i + 2])
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


GROUP_SCRIPTS = {
    "add_member": ADD_MEMBER,
    "discard_member": DISCARD_MEMBER,
    "group_send": GROUP_SEND,
}

_PUBLISH = "redis.call('PUBLISH', "


def sharded_publish(scripts: dict[str, str]) -> dict[str, str]:
    """The scripts for a Redis Cluster: broadcasts go by SPUBLISH, to the group's shard."""
    return {
        name: source.replace(_PUBLISH, "redis.call('SPUBLISH', ")
        for name, source in scripts.items()
    }


class RedisGroups:
    """This process's group memberships, kept in Redis, and the broadcasts they bring."""

    def __init__(
        self,
        connections: RedisConnections,
        key: Callable[[str, str], str],
        owner: str,
        mailboxes: Mailboxes,
        capacity: Callable[[str], int],
        skipped: SkippedMembers,
        send: Callable[[str, bytes], Awaitable[bool]],
        expiry: float,
        group_expiry: float,
    ) -> None:
        self.connections = connections
        self.key = key
        self.owner = owner
        self.mailboxes = mailboxes
        self.capacity = capacity
        self.skipped = skipped
        self.send_to_channel = send  # a direct member's send, False when it is full
        self.expiry = expiry
        self.group_expiry = group_expiry
        self.members = GroupMembers()  # this process's channels, by group

    async def join_here(self, group: str) -> None:
        """This process has a member in ``group``: list it and subscribe to the topic."""
        args = [self.owner, time.time(), int(self.group_expiry) + 1]
        await self._script(group, "add_member", [self.key("procs", group)], args)
        await self.connections.subscribe(self.key("broadcast", group))

    async def join_directly(self, group: str, channel: str) -> None:
        """Another process's channel (or a named one) joins ``group`` by name."""
        args = [channel, time.time(), int(self.group_expiry) + 1]
        await self._script(group, "add_member", [self.key("group", group)], args)

    async def leave_here(self, group: str) -> None:
        """This process's last member of ``group`` left."""
        await self.connections.unsubscribe(self.key("broadcast", group))
        await self._script(group, "discard_member", [self.key("procs", group)], [self.owner])

    async def leave_directly(self, group: str, channel: str) -> None:
        await self._script(group, "discard_member", [self.key("group", group)], [channel])

    async def send(self, group: str, payload: bytes) -> None:
        """Publish to the member processes and send to each direct member."""
        args = [envelopes.broadcast(payload), *self.broadcast_args()]
        direct = await self._script(group, "group_send", self.broadcast_keys(group), args)
        await self.send_directly(group, direct, payload)

    def broadcast_keys(self, group: str) -> list[str]:
        """The KEYS of Lua's ``broadcast``: direct members, topic, member processes."""
        return [self.key("group", group), self.key("broadcast", group), self.key("procs", group)]

    def broadcast_args(self) -> list[Any]:
        """Lua ``broadcast``'s arguments after the data: oldest live membership, the
        pending hashes' key prefix."""
        # No marks on a Cluster: the pending hashes are in other slots (see inbox_order).
        pending_prefix = "" if self.connections.cluster else self.key("pending", "")
        return [time.time() - self.group_expiry, pending_prefix]

    async def send_directly(self, group: str, members: list[Any], payload: bytes) -> None:
        """Send to each of the direct ``members`` the script returned."""
        for member in members:
            channel = member.decode() if isinstance(member, bytes) else member
            if not await self.send_to_channel(channel, payload):
                self.skipped.skipped(group, channel)
                metrics.dropped_full["redis"]()

    def topics(self) -> list[str]:
        """One topic per group with members here."""
        return [self.key("broadcast", group) for group in self.members.groups()]

    def deliver(self, topic: str, data: bytes) -> None:
        """Fan a broadcast out to the members here; unsubscribe if none is left."""
        group = KeyScheme.name_of(topic)
        try:
            sent_at, payload, position = envelopes.read_broadcast(data)
        except (ValueError, TypeError) as error:
            logger.error("Dropped a malformed broadcast to group %r: %s", group, error)
            return
        # A history group's position travels beside the payload; receive() adds it.
        stamp = None if position is None else Stamp(group, position[1], position[0])
        remaining = self.expiry - (time.time() - sent_at)
        members = self.members.live_members(group)
        metrics.received("redis", sent_at)
        if remaining > 0:
            for channel in self.mailboxes.put_many(
                members, payload, remaining, self.capacity, stamp
            ):
                self.skipped.skipped(group, channel)
                metrics.dropped_full["redis"]()
        if not members:  # they all expired
            self.connections.state().spawn(self.connections.unsubscribe(topic))

    async def _script(self, group: str, name: str, keys: list[str], args: list[Any]) -> Any:
        return await self.connections.script(self.connections.ring.shard(group), name, keys, args)
