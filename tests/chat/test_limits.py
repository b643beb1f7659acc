"""chat/limits.py: the same answers from the process-local store, from Redis and from a
Redis Cluster (3 masters, 3 replicas, started for this module)."""

import asyncio
import secrets
import time
from collections.abc import Iterator

import pytest
import redis

from chat import limits, limits_redis
from chat.conf import setting
from chat.limits_redis import cluster_options
from tests.redis_servers import REDIS_URL, RedisClusterServers


@pytest.fixture(scope="module")
def limits_cluster() -> Iterator[RedisClusterServers]:
    """A Cluster for this module's tests on one: each has its own key prefix on it."""
    cluster = RedisClusterServers().start()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["local", "redis", "cluster"])
def store(request, settings):
    """Each test runs on every store; Redis keys get a prefix of their own, deleted after.
    The Cluster's limits get two seeds (a master, then a replica), as the project passes
    them, with the keys named as on one server."""
    prefix = f"test-limits-{secrets.token_hex(4)}"
    settings.CHAT_LIMITS_PREFIX = prefix
    settings.CHAT_LIMITS_REDIS_URL = REDIS_URL if request.param == "redis" else None
    if request.param == "cluster":
        cluster = request.getfixturevalue("limits_cluster")
        settings.CHAT_LIMITS_REDIS_URL = [cluster.nodes[0].url, cluster.nodes[-1].url]
        settings.CHAT_LIMITS_REDIS_CLUSTER = True
    limits.reset()
    yield request.param
    limits.reset()
    if request.param != "local":
        with raw_client() as raw:
            for key in raw.scan_iter(f"{prefix}:*"):
                raw.delete(key)


def raw_client() -> redis.Redis | redis.RedisCluster:
    """A plain client of the Redis (or Cluster) the limits of this test use."""
    url = setting("CHAT_LIMITS_REDIS_URL")
    if setting("CHAT_LIMITS_REDIS_CLUSTER"):
        return redis.RedisCluster.from_url(url[0])
    return redis.Redis.from_url(url)


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
    if store == "local":
        pytest.skip("a process-local slot dies with its process")
    # What a crashed process leaves: a slot that nobody renews, a second from expiry. Its
    # key is named as on one server (a Cluster too: the script touches that one key).
    with raw_client() as raw:
        now = raw.time()[0]
        raw.zadd(f"{setting('CHAT_LIMITS_PREFIX')}:s", {"crashed": now + 1})
    assert not await limits.claim("s", "new", 1)
    # Free once Redis's clock passes the slot's expiry: within 2 s, asked every 0.1 s.
    deadline = time.monotonic() + 2.1
    while not await limits.claim("s", "new", 1):
        assert time.monotonic() < deadline, "the dead process's slot never expired"
        await asyncio.sleep(0.1)


async def test_redis_slots_of_a_live_process_are_renewed(store, monkeypatch):
    if store == "local":
        pytest.skip("a process-local slot lives as long as its process")
    monkeypatch.setattr(limits, "SLOT_TTL", 2)  # renewed every 2/3 s
    # Keys in different slots (on a Cluster, most likely on different masters): one
    # renewal pipeline for all of them.
    keys = [f"renewed-{n}" for n in range(6)]
    for key in keys:
        assert await limits.claim(key, "live", 1)
    await asyncio.sleep(3)  # past the first expiry
    assert not any([await limits.claim(key, "other", 1) for key in keys])
    with raw_client() as raw:
        assert raw.ttl(f"{setting('CHAT_LIMITS_PREFIX')}:{keys[0]}") > 0


@pytest.mark.parametrize("cluster", [False, True], ids=["redis", "cluster"])
async def test_redis_down_lets_traffic_through_at_once_and_says_so_once(settings, caplog, cluster):
    settings.CHAT_LIMITS_REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    if cluster:  # its client raises errors of its own: no node reachable
        settings.CHAT_LIMITS_REDIS_URL = ["redis://127.0.0.1:1", "redis://127.0.0.1:2"]
        settings.CHAT_LIMITS_REDIS_CLUSTER = True
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


def test_the_sync_api_lets_traffic_through_when_no_cluster_node_answers(settings):
    # The sync client of a Cluster reads the slot map when it is made, and raises then.
    settings.CHAT_LIMITS_REDIS_URL = ["redis://127.0.0.1:1"]
    settings.CHAT_LIMITS_REDIS_CLUSTER = True
    limits.reset()
    assert limits.allow_now("login", 1e-9, 1) and limits.allow_now("login", 1e-9, 1)
    limits.reset()


def test_cluster_urls_give_seeds_and_the_first_ones_password_and_tls():
    seeds, options = cluster_options(
        ["rediss://chat:s3cret@node-1.internal:7000/0?ssl_cert_reqs=none", "rediss://node-2"]
    )
    assert seeds == [("node-1.internal", 7000), ("node-2", 6379)]
    assert options == {
        "username": "chat",
        "password": "s3cret",
        "ssl": True,
        "ssl_cert_reqs": "none",
    }
    assert cluster_options("redis://node-1:7000") == ([("node-1", 7000)], {})
    with pytest.raises(ValueError, match="redis:// or rediss://") as refused:
        cluster_options(["redis://node-1:7000", "unix://:s3cret@/run/redis.sock"])
    assert "s3cret" not in str(refused.value)


async def test_a_cluster_urls_own_timeouts_win_over_the_limits_defaults(limits_cluster):
    url = f"{limits_cluster.url}?socket_timeout=3&socket_connect_timeout=2"
    sync = limits_redis.sync_client([url], True)  # it reads the slot map now
    try:
        assert sync.ping()
        pool = sync.get_default_node().redis_connection.connection_pool
        assert pool.connection_kwargs["socket_timeout"] == 3
    finally:
        sync.close()
    client = limits_redis.async_client([url], True)
    try:
        assert await client.ping()
        assert client.connection_kwargs["socket_connect_timeout"] == 2
    finally:
        await client.aclose()


async def test_limits_on_a_cluster_fail_open_while_a_master_fails_over(settings):
    """The master holding a bucket is killed: the limit lets frames through at once (not a
    second each), and holds again once its replica has taken over (a failover of 2 s
    node timeout, plus the election, on a loaded machine: within 20 s)."""
    cluster = RedisClusterServers().start()
    try:
        settings.CHAT_LIMITS_REDIS_URL = [cluster.nodes[-1].url]  # a replica: it stays up
        settings.CHAT_LIMITS_REDIS_CLUSTER = True
        settings.CHAT_LIMITS_PREFIX = "failover"
        limits.reset()
        assert [await limits.allow("k", 1e-9, 1) for _ in range(2)] == [True, False]
        assert not limits.allow_now("k", 1e-9, 1)
        await asyncio.to_thread(cluster.owner("failover:k").kill)
        started = time.monotonic()
        assert all([await limits.allow("k", 1e-9, 1) for _ in range(50)])
        assert limits.allow_now("k", 1e-9, 1)
        assert time.monotonic() - started < 1.5
        deadline = time.monotonic() + 20
        while await limits.allow("k", 1e-9, 1) or limits.allow_now("k", 1e-9, 1):
            assert time.monotonic() < deadline, "the limit never held again"
            await asyncio.sleep(0.2)
        print(f"the limit held again {time.monotonic() - started:.1f} s after the kill")
    finally:
        limits.reset()
        cluster.stop()
