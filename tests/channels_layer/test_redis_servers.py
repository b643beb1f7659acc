"""RedisChannelLayer over redis-server processes the tests start: sharding, restarts and
Sentinel failover."""

import asyncio
import logging
import time

import pytest

from channels_layer import LayerUnavailable
from tests.redis_servers import RedisServer


async def receive(layer, channel, timeout=5):
    return await asyncio.wait_for(layer.receive(channel), timeout)


async def test_keys_spread_over_three_shards_and_every_message_arrives(redis_servers, make_layer):
    servers = redis_servers(3)
    hosts = [server.url for server in servers]
    sender, receiver = make_layer(hosts=hosts, capacity=1000), make_layer(hosts=hosts)
    named = [f"jobs.{n}" for n in range(30)]
    for channel in named:
        await sender.send(channel, {"type": "job", "channel": channel})
    assert all(server.client().dbsize() > 0 for server in servers)
    for channel in named:
        assert (await receive(receiver, channel))["channel"] == channel

    groups = [f"room{n}" for n in range(30)]
    members = {group: await receiver.new_channel() for group in groups}
    for group, channel in members.items():
        await receiver.group_add(group, channel)
    subscribed = [
        server.client().pubsub_numsub(*(f"{receiver.prefix}:broadcast:{g}" for g in groups))
        for server in servers
    ]
    assert all(any(count for _, count in counts) for counts in subscribed)
    for group in groups:
        await sender.group_send(group, {"type": "hello", "group": group})
    for group, channel in members.items():
        assert (await receive(receiver, channel))["group"] == group


async def test_delivery_resumes_after_redis_is_killed_and_restarted(
    redis_servers, make_layer, caplog
):
    (server,) = redis_servers(1)
    sender = make_layer(hosts=[server.url], retry_timeout=0.5)
    receiver = make_layer(hosts=[server.url])
    local = await receiver.new_channel()
    await receiver.group_add("room", local)
    await sender.send(local, {"type": "before"})
    assert (await receive(receiver, local))["type"] == "before"

    pending_receive = asyncio.ensure_future(receiver.receive("jobs"))
    with caplog.at_level(logging.WARNING, logger="channels_layer"):
        server.kill()
        with pytest.raises(LayerUnavailable, match=r"unreachable for 0\.5 s"):
            await sender.send(local, {"type": "during"})
        await asyncio.sleep(1)
        server.start()
        back = time.monotonic()
        # Sends work again at once; receivers reconnect and resubscribe on their own.
        await sender.send(local, {"type": "after"})
        assert (await receive(receiver, local))["type"] == "after"
        await sender.send("jobs", {"type": "job"})
        assert (await asyncio.wait_for(pending_receive, 5))["type"] == "job"
        for _ in range(100):
            await sender.group_send("room", {"type": "broadcast"})
            try:
                assert (await receive(receiver, local, 0.05))["type"] == "broadcast"
                break
            except TimeoutError:
                continue
        else:
            pytest.fail("broadcasts never resumed")
        assert time.monotonic() - back < 3
    outages = [r for r in caplog.records if "is unreachable" in r.getMessage()]
    recoveries = [r for r in caplog.records if "reachable again" in r.getMessage()]
    # One line per outage for each connection that noticed it, not one per retry.
    assert 1 <= len(outages) <= 6
    assert len(recoveries) == len(outages)


async def test_sentinel_follows_the_master_through_a_failover(redis_servers, make_layer):
    (master,) = redis_servers(1)
    (replica,) = redis_servers(1, "--replicaof", "127.0.0.1", str(master.port))
    sentinel = RedisServer.sentinel(master, "main").start()
    try:
        layer = make_layer(
            hosts=[{"sentinels": [("127.0.0.1", sentinel.port)], "master_name": "main"}],
            retry_timeout=10,
        )
        await layer.send("jobs", {"type": "before"})
        assert (await receive(layer, "jobs"))["type"] == "before"
        master.kill()
        await layer.send("jobs", {"type": "after failover"})
        assert (await receive(layer, "jobs"))["type"] == "after failover"
        assert replica.client().info("replication")["role"] == "master"
    finally:
        sentinel.kill()
