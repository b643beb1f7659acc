"""Limits shared by every process: token buckets (rates) and slots (open sockets).

A limit per connection is no limit: twenty sockets, or a reconnect every ten posts, multiply
it. These are kept per user or per client address, in Redis when ``CHAT_LIMITS_REDIS_URL``
is set (every server process sees the same counts; Redis's clock decides, so the servers'
clocks do not matter), otherwise in this process, which is all there is with the in-memory
layer. Both give the same answers. ``CHAT_LIMITS_REDIS_CLUSTER``: that Redis is a Redis
Cluster (``chat.limits_redis``); each script touches one key, so one slot, and the keys are
named as on one server.

- ``allow(key, rate, burst)`` / ``allow_now`` (sync, for views): spend a token of the bucket
  ``key``, refilled at ``rate`` a second up to ``burst``. False: over the limit.
- ``claim(key, member, cap)`` / ``release``: hold one of ``cap`` slots (a socket). Slots
  in Redis expire a minute after their process stops renewing them, so a crashed server's
  sockets do not count for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Sequence
from typing import Any

from chat.conf import setting
from chat.limits_redis import UNAVAILABLE, AsyncClient, SyncClient, async_client, sync_client

logger = logging.getLogger(__name__)

SLOT_TTL = 60  # seconds a slot lives unless renewed; renewed every third of that
# Each script touches only its KEYS[1], so it runs on a Redis Cluster as on one server.

# KEYS[1]: the bucket (a hash). ARGV: rate, burst. 1: allowed, 0: over the limit.
TAKE_TOKEN = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(state[1]) or burst
local stamp = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - stamp) * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', tostring(now))
redis.call('EXPIRE', KEYS[1], math.floor(math.min(86400, burst / rate + 1)))
return allowed
"""  # noqa: S105  a Lua script that takes a rate-limit token, not a secret

# KEYS[1]: the slots (a sorted set, scored by expiry). ARGV: member, cap, ttl.
CLAIM_SLOT = """
local now = tonumber(redis.call('TIME')[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not held and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


def client_address_of(request_or_scope: Any) -> str:
    """The client's address: behind nginx and ``daphne --proxy-headers``, the one nginx saw."""
    if isinstance(request_or_scope, dict):
        client = request_or_scope.get("client") or ("unknown",)
        return str(client[0])
    return str(request_or_scope.META.get("REMOTE_ADDR") or "unknown")


class LocalLimits:
    """The limits of one process (no Redis): exact, since no other process serves clients."""

    def __init__(self) -> None:
        self.buckets: dict[str, tuple[float, float]] = {}
        self.slots: dict[str, set[str]] = {}

    def allow_now(self, key: str, rate: float, burst: int) -> bool:
        now = time.monotonic()
        tokens, stamp = self.buckets.get(key, (float(burst), now))
        tokens = min(float(burst), tokens + (now - stamp) * rate)
        allowed = tokens >= 1
        self.buckets[key] = (tokens - 1 if allowed else tokens, now)
        if len(self.buckets) > 100_000:  # forget buckets that are full again
            self.buckets = {
                name: (left, when)
                for name, (left, when) in self.buckets.items()
                if now - when < 3600
            }
        return allowed

    async def allow(self, key: str, rate: float, burst: int) -> bool:
        return self.allow_now(key, rate, burst)

    async def claim(self, key: str, member: str, cap: int) -> bool:
        held = self.slots.setdefault(key, set())
        if member not in held and len(held) >= cap:
            return False
        held.add(member)
        return True

    async def release(self, key: str, member: str) -> None:
        held = self.slots.get(key)
        if held is not None:
            held.discard(member)
            if not held:
                del self.slots[key]


class RedisLimits:
    """The limits of every process, in Redis; one client per event loop (redis-py's async
    pools belong to one loop) and one for sync callers."""

    def __init__(self, url: str | Sequence[str], prefix: str, cluster: bool = False) -> None:
        self.url = url
        self.prefix = prefix
        self.cluster = cluster
        self._sync: SyncClient | None = None
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClient] = (
            weakref.WeakKeyDictionary()
        )

    def _loop_client(self) -> _LoopClient:
        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is None:
            client = self._async[loop] = _LoopClient(async_client(self.url, self.cluster))
        return client

    def allow_now(self, key: str, rate: float, burst: int) -> bool:
        if self._sync is None:
            self._sync = sync_client(self.url, self.cluster)
        script = self._sync.register_script(TAKE_TOKEN)
        return bool(script(keys=[f"{self.prefix}:{key}"], args=[rate, burst]))

    async def allow(self, key: str, rate: float, burst: int) -> bool:
        client = self._loop_client()
        return bool(await client.take(keys=[f"{self.prefix}:{key}"], args=[rate, burst]))

    async def claim(self, key: str, member: str, cap: int) -> bool:
        client = self._loop_client()
        name = f"{self.prefix}:{key}"
        if not await client.claim(keys=[name], args=[member, cap, SLOT_TTL]):
            return False
        client.held.add((name, member))
        client.keep_renewing()
        return True

    async def release(self, key: str, member: str) -> None:
        client = self._loop_client()
        name = f"{self.prefix}:{key}"
        client.held.discard((name, member))
        await client.redis.zrem(name, member)


class _LoopClient:
    """One loop's Redis client, and the slots its sockets hold, renewed together."""

    def __init__(self, client: AsyncClient) -> None:
        self.redis = client
        self.take = self.redis.register_script(TAKE_TOKEN)
        self.claim = self.redis.register_script(CLAIM_SLOT)
        self.held: set[tuple[str, str]] = set()
        self._renewer: asyncio.Task[None] | None = None

    def keep_renewing(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew())

    async def _renew(self) -> None:
        while self.held:
            await asyncio.sleep(SLOT_TTL / 3)
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    deadline = int(time.time()) + SLOT_TTL
                    for name, member in list(self.held):
                        pipe.zadd(name, {member: deadline}, xx=True)
                        pipe.expire(name, SLOT_TTL)
                    await pipe.execute()
            except UNAVAILABLE as error:  # an outage: try again next round
                unchecked(f"{len(self.held)} socket slots not renewed", error)


_last_warning = 0.0
# While Redis fails, it is asked again only after this moment: meanwhile every limit lets
# traffic through at once, instead of each frame waiting for a connection that fails.
_down_until = 0.0
RETRY_AFTER = 1.0


def unchecked(what: str, error: Exception) -> None:
    """Note that Redis could not be asked. Logged at INFO once a minute at most: the channel
    layer, on the same Redis in this project, reports the outage itself as a warning."""
    global _last_warning, _down_until
    _down_until = time.monotonic() + RETRY_AFTER
    if time.monotonic() - _last_warning > 60:
        _last_warning = time.monotonic()
        logger.info("Chat limits not enforced while Redis fails (%s): %s", what, error)


def redis_down() -> bool:
    return time.monotonic() < _down_until


_backends: dict[tuple[Any, str, bool], LocalLimits | RedisLimits] = {}


def backend() -> LocalLimits | RedisLimits:
    """The limits store the settings name (one per distinct setting, made on first use)."""
    url, prefix = setting("CHAT_LIMITS_REDIS_URL"), setting("CHAT_LIMITS_PREFIX")
    cluster = bool(setting("CHAT_LIMITS_REDIS_CLUSTER"))
    name = (url if isinstance(url, str | None) else tuple(url), prefix, cluster)
    found = _backends.get(name)
    if found is None:
        found = _backends[name] = RedisLimits(url, prefix, cluster) if url else LocalLimits()
    return found


def reset() -> None:
    """Forget every process-local count and any Redis failure (tests)."""
    global _down_until
    _backends.clear()
    _down_until = 0.0


def allow_now(key: str, rate: float, burst: int) -> bool:
    """Spend a token of ``key`` (sync callers: views). Fails open when Redis is down: a
    limit must not take the site down with it."""
    if redis_down():
        return True
    try:
        return backend().allow_now(key, rate, burst)
    except UNAVAILABLE as error:
        unchecked(key, error)
        return True


async def allow(key: str, rate: float, burst: int) -> bool:
    """Spend a token of ``key``; see ``allow_now``."""
    if redis_down():
        return True
    try:
        return await backend().allow(key, rate, burst)
    except UNAVAILABLE as error:
        unchecked(key, error)
        return True


async def claim(key: str, member: str, cap: int) -> bool:
    """Hold a slot of ``key`` for ``member``; False when ``cap`` are held. ``cap`` 0: no cap."""
    if cap <= 0 or redis_down():
        return True
    try:
        return await backend().claim(key, member, cap)
    except UNAVAILABLE as error:
        unchecked(key, error)
        return True


async def release(key: str, member: str) -> None:
    with contextlib.suppress(*UNAVAILABLE):
        await backend().release(key, member)
