"""RedisPubSubChannelLayer: direct delivery by PUBLISH, bounded queues, one reader each.
On the single Redis and on a Cluster (SPUBLISH to the shard of the process or group)."""

import asyncio
import logging

import redis

from channels_layer.pubsub import RedisPubSubChannelLayer
from tests.redis_servers import REDIS_URL

ON_CLUSTER = True


def publishes(layer_backend, request) -> int:
    """PUBLISH and SPUBLISH calls so far, on the Redis or on every master of the Cluster."""
    if layer_backend == "single":
        servers = [redis.Redis.from_url(REDIS_URL)]
    else:
        servers = [
            node.client() for node in request.getfixturevalue("redis_cluster").live_masters()
        ]
    calls = 0
    for server in servers:
        stats = server.info("commandstats")
        calls += sum(
            stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("publish", "spublish")
        )
        server.close()
    return calls


async def test_a_consumer_channel_message_is_published_to_its_process(make_layer, raw_redis):
    sender = make_layer(layer_class=RedisPubSubChannelLayer)
    receiver = make_layer(layer_class=RedisPubSubChannelLayer)
    channel = await receiver.new_channel()  # subscribes the process: nothing is missed
    await sender.send(channel, {"type": "hello"})
    assert (await asyncio.wait_for(receiver.receive(channel), 2))["type"] == "hello"
    keys = raw_redis.keys(f"{sender.prefix}:*")
    assert keys == []  # nothing is stored in Redis


async def test_each_channel_queue_is_bounded_and_overflow_is_logged(make_layer, caplog):
    sender = make_layer(layer_class=RedisPubSubChannelLayer, capacity=2)
    receiver = make_layer(layer_class=RedisPubSubChannelLayer, capacity=2)
    channel = await receiver.new_channel()
    await sender.send(channel, {"type": "n", "n": 0})
    assert (await asyncio.wait_for(receiver.receive(channel), 2))["n"] == 0
    with caplog.at_level(logging.WARNING, logger="channels_layer"):
        for n in range(1, 6):
            await sender.send(channel, {"type": "n", "n": n})
        await asyncio.sleep(0.3)
    got = [(await asyncio.wait_for(receiver.receive(channel), 1))["n"] for _ in range(2)]
    assert got == [1, 2]
    assert "its capacity of 2" in caplog.text


async def test_a_named_channel_message_reaches_one_reader_only(make_layer):
    readers = [make_layer(layer_class=RedisPubSubChannelLayer) for _ in range(3)]
    sender = make_layer(layer_class=RedisPubSubChannelLayer)
    waiting = [asyncio.ensure_future(reader.receive("jobs")) for reader in readers]
    await asyncio.sleep(0.2)
    await sender.send("jobs", {"type": "job"})
    done, pending = await asyncio.wait(waiting, timeout=1.5)
    assert len(done) == 1
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


async def test_group_send_is_one_publish(make_layer, layer_backend, request):
    layer = make_layer(layer_class=RedisPubSubChannelLayer)
    sender = make_layer(layer_class=RedisPubSubChannelLayer)
    members = [await layer.new_channel() for _ in range(20)]
    for member in members:
        await layer.group_add("room", member)
    before = publishes(layer_backend, request)
    await sender.group_send("room", {"type": "hi"})
    assert publishes(layer_backend, request) - before == 1
    for member in members:
        assert (await asyncio.wait_for(layer.receive(member), 2))["type"] == "hi"
