"""chat/limits.py: the same answers from the process-local store and from Redis."""

import asyncio
import secrets
import time

import pytest
import redis

from chat import limits
from chat.conf import setting
from tests.redis_servers import REDIS_URL


@pytest.fixture(params=["local", "redis"])
def store(request, settings):
    """Each test runs on both stores; Redis keys get a prefix of their own, deleted after."""
    prefix = f"test-limits-{secrets.token_hex(4)}"
    settings.CHAT_LIMITS_REDIS_URL = REDIS_URL if request.param == "redis" else None
    settings.CHAT_LIMITS_PREFIX = prefix
    limits.reset()
    yield request.param
    limits.reset()
    with redis.Redis.from_url(REDIS_URL) as raw:
        for key in raw.scan_iter(f"{prefix}:*"):
            raw.delete(key)


async def test_a_bucket_allows_its_burst_then_its_rate(store):
    # 4 tokens a second: a slow machine has 0.25 s for the first four calls and 0.15 s more
    # than the sleep for the last three before a token too many comes back.
    assert [await limits.allow("k", 4, 3) for _ in range(4)] == [True, True, True, False]
    await asyncio.sleep(0.6)  # 2.4 tokens back
    assert [await limits.allow("k", 4, 3) for _ in range(3)] == [True, True, False]
    assert await limits.allow("other", 4, 3)  # buckets are separate


def test_the_sync_api_shares_the_bucket(store):
    assert [limits.allow_now("login", 1e-9, 2) for _ in range(3)] == [True, True, False]


async def test_slots_are_capped_and_freed(store):
    assert await limits.claim("s", "a", 2) and await limits.claim("s", "b", 2)
    assert not await limits.claim("s", "c", 2)
    assert await limits.claim("s", "a", 2)  # a holder asking again keeps its slot
    await limits.release("s", "a")
    assert await limits.claim("s", "c", 2)
    assert await limits.claim("s", "d", 0)  # 0: no cap


async def test_redis_slots_of_a_dead_process_expire(store):
    if store != "redis":
        pytest.skip("a process-local slot dies with its process")
    # What a crashed process leaves: a slot that nobody renews, a second from expiry.
    with redis.Redis.from_url(REDIS_URL) as raw:
        now = raw.time()[0]
        raw.zadd(f"{setting('CHAT_LIMITS_PREFIX')}:s", {"crashed": now + 1})
    assert not await limits.claim("s", "new", 1)
    await asyncio.sleep(2.1)
    assert await limits.claim("s", "new", 1)


async def test_redis_down_lets_traffic_through_at_once_and_says_so_once(settings, caplog):
    settings.CHAT_LIMITS_REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    limits.reset()
    limits._last_warning = 0.0
    assert await limits.allow("k", 1e-9, 1) and await limits.allow("k", 1e-9, 1)
    assert await limits.claim("s", "a", 1) and await limits.claim("s", "b", 1)
    # Meanwhile nothing waits for Redis: every limit answers at once.
    started = time.monotonic()
    for _ in range(200):
        assert await limits.allow("k", 1e-9, 1)
    assert time.monotonic() - started < 0.5
    notes = [r for r in caplog.records if r.name == "chat.limits"]
    assert len(notes) == 1 and "not enforced" in notes[0].getMessage()
    limits.reset()
