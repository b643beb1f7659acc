"""Named channels on Redis (``runworker`` channels, say): one list per channel, which any
process may pop, so each message reaches one receiver.

A receiver cancelled while its pop is in flight puts what the pop still brought back in
front of the list, so a cancellation loses nothing. ``at_least_once`` channels are read
with leases instead (``redis_leases``). Every method runs on the home loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from . import metrics
from . import redis_envelopes as envelopes
from .redis_connections import BLOCK_SECONDS, LoopState, RedisConnections, quietly
from .redis_health import UNAVAILABLE

logger = logging.getLogger("channels_layer.redis")

# Queue messages on a named channel unless it holds its capacity already.
# ARGV groups (see script_batcher): envelope, capacity, ttl. Result: 1 queued, 0 full.
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

NAMED_SCRIPTS = {"send_to_named": SEND_TO_NAMED}


class NamedChannels:
    """Sends to and receives from named channels' lists."""

    def __init__(
        self,
        connections: RedisConnections,
        key: Callable[[str], str],  # channel -> its list's key
        capacity: Callable[[str], int],
        ttl: Callable[[str], int],  # seconds a channel's list is kept after a send
        expiry: float,
        unavailable: Callable[[int, BaseException], Awaitable[None]],  # wait before a retry
    ) -> None:
        self.connections = connections
        self.key = key
        self.capacity = capacity
        self.ttl = ttl
        self.expiry = expiry
        self.unavailable = unavailable

    async def send(self, channel: str, payload: bytes) -> bool:
        """Queue ``payload``; False if the channel holds its capacity."""
        # The entry's token keeps equal messages apart in an at_least_once channel's leases.
        args = [envelopes.named_entry(payload), self.capacity(channel), self.ttl(channel)]
        shard = self.connections.ring.shard(channel)
        return bool(
            await self.connections.script(shard, "send_to_named", [self.key(channel)], args)
        )

    async def receive(self, channel: str) -> bytes:
        """The payload of the next unexpired entry; waits (and retries) for ever."""
        key, shard = self.key(channel), self.connections.ring.shard(channel)
        while True:
            state = self.connections.state()
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
                await self.unavailable(shard, error)
                continue
            self.connections.health[shard].up()
            if popped is None:
                continue
            try:
                sent_at, payload = envelopes.read_named_entry(popped[1])
            except ValueError as error:
                logger.error("Dropped a malformed entry on %r: %s", channel, error)
                continue
            metrics.received("redis", sent_at)
            if time.time() - sent_at < self.expiry:
                return payload
            metrics.dropped_expired["redis"]()


def _requeue(state: LoopState, shard: int, key: str, done: asyncio.Future[Any]) -> None:
    """A pop that succeeded after its receiver was cancelled: put the entry back in front."""
    if not done.cancelled() and done.exception() is None and done.result() is not None:
        state.spawn(quietly(state.clients[shard].lpush(key, done.result()[1])))
