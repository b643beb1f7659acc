"""Leases: how an ``at_least_once`` named channel keeps a message until its job is done.

A worker claims the next message under a lease with a deadline; the message stays in Redis
(in the channel's leases, a sorted set by deadline) until the worker finishes it or gives it
back. While the worker lives the lease is renewed; when it dies, the lease runs out and the
next claim puts the message back in front of the channel for another worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from . import stopping
from .redis_connections import BLOCK_SECONDS, RedisConnections
from .redis_health import UNAVAILABLE
from .wakeups import call_soon_on

logger = logging.getLogger("channels_layer.redis")

# Each script takes its ARGV as consecutive groups, one per batched call (see
# script_batcher), and returns one result per group.

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


LEASE_SCRIPTS = {"claim_lease": CLAIM_LEASE, "renew_lease": RENEW_LEASE, "end_lease": END_LEASE}


class Leases:
    """Claims, renews and ends the leases of named channels, on the home loop."""

    def __init__(
        self,
        connections: RedisConnections,
        channel_key: Callable[[str], str],
        leases_key: Callable[[str], str],
        ttl: Callable[[str], int],
    ) -> None:
        self.connections = connections
        self.channel_key = channel_key
        self.leases_key = leases_key
        self.ttl = ttl

    async def claim(self, channel: str, timeout: float) -> Lease:
        """The next message of ``channel`` under a lease, waiting for one if need be."""
        return await self.connections.run(self._claim, channel, timeout)

    async def end(self, lease: Lease, give_back: bool) -> bool:
        return await self.connections.run(self._end, lease, give_back)

    async def renew(self, lease: Lease) -> bool:
        """False if the lease was lost (it ran out and the message went back)."""
        keys = [self.leases_key(lease.channel)]
        args = [lease.envelope, time.time() + lease.timeout]
        shard = self.connections.ring.shard(lease.channel)
        return bool(await self.connections.script(shard, "renew_lease", keys, args))

    async def _claim(self, channel: str, timeout: float) -> Lease:
        connections = self.connections
        key, shard = self.channel_key(channel), connections.ring.shard(channel)
        keys = [key, self.leases_key(channel)]
        while True:
            now = time.time()
            try:
                envelope = await connections.script(
                    shard, "claim_lease", keys, [now, now + timeout, self.ttl(channel)]
                )
                if envelope:
                    return Lease(self, channel, envelope, timeout)
                # Wait for a message (a blocking no-op move), or a second for a lease to
                # run out; then claim again.
                client = connections.state().clients[shard]
                await client.blmove(key, key, BLOCK_SECONDS, "LEFT", "LEFT")
            except UNAVAILABLE as error:
                await connections.callbacks.unavailable(shard, error)

    async def _end(self, lease: Lease, give_back: bool) -> bool:
        lease.stop_renewing()
        keys = [self.channel_key(lease.channel), self.leases_key(lease.channel)]
        args = [lease.envelope, int(give_back), self.ttl(lease.channel)]
        shard = self.connections.ring.shard(lease.channel)
        return bool(await self.connections.script(shard, "end_lease", keys, args))


class Lease:
    """A message taken from an ``at_least_once`` channel, held by one worker.

    While held it is renewed in the background every third of the visibility timeout, so
    no other worker takes it; if the holder dies, renewals stop and the message returns to
    the channel when the lease runs out.
    """

    def __init__(self, leases: Leases, channel: str, envelope: bytes, timeout: float) -> None:
        self.leases = leases
        self.channel = channel
        self.envelope = envelope
        self.timeout = timeout
        self._renewing = asyncio.get_running_loop().create_task(self._renew())

    async def finish(self) -> None:
        """The job is done: the message leaves Redis."""
        await self.leases.end(self, give_back=False)

    async def give_back(self) -> None:
        """The job did not run: the message goes back to the front of its channel now."""
        await self.leases.end(self, give_back=True)

    def abandon(self) -> None:
        """Stop renewing, as if the holder had died: another worker gets the message once
        the lease runs out (after a crash, that spaces out the retries). Any thread may
        call it; once the worker's loop has closed, nothing renews the lease anyway."""
        call_soon_on(self._renewing.get_loop(), self._renewing.cancel)

    def stop_renewing(self) -> None:
        self._renewing.cancel()

    async def _renew(self) -> None:
        while True:
            stopping.raise_if_cancelled()
            await asyncio.sleep(self.timeout / 3)
            try:
                held = await self.leases.renew(self)
            except UNAVAILABLE:
                continue  # Redis is down: the outage is logged; try again next time
            if not held:
                logger.warning(
                    "A job on %r outlived its lease (Redis was unreachable for longer than "
                    "the visibility timeout): it may run again elsewhere",
                    self.channel,
                )
                return
