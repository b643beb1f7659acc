"""A send() then a group_send() to the same consumer channel arrive in that order, on one
Redis, with the inbox and the group on different Redis servers, and on a Cluster (where
they are in different slots). (The other way round is kept where it can be, not
guaranteed: see channels_layer.inbox_order.)"""

import asyncio
import json
import sys

import msgpack
import pytest

from channels_layer import inbox_order
from channels_layer.inbox_order import InboxProgress, split_entry, split_marks
from channels_layer.pubsub import RedisPubSubChannelLayer
from tests.redis_servers import REDIS_URL
from testsupport.processes import ROOT

# The sender is another process, so its sends and publishes race the receiver's reads.
SENDER = """
import asyncio, json, sys
from channels_layer.pubsub import RedisPubSubChannelLayer
from testsupport.processes import ROOT
from tests.redis_servers import REDIS_URL
from channels_layer.redis import RedisChannelLayer

async def main(layer_class, hosts, cluster, prefix, channel, rounds):
    layer_class = {"pubsub": RedisPubSubChannelLayer}.get(layer_class, RedisChannelLayer)
    layer = layer_class(
        hosts=json.loads(hosts), cluster=cluster == "cluster", prefix=prefix, capacity=10000
    )
    for n in range(int(rounds)):
        await layer.send(channel, {"type": "direct", "n": n})
        await layer.group_send("room", {"type": "broadcast", "n": n})
    await layer.close()

asyncio.run(main(*sys.argv[1:]))
"""

ON_CLUSTER = True


def backend_hosts(layer_backend, request) -> list[str]:
    """The ``hosts`` of the layers ``make_layer`` makes: the Redis, or a Cluster node."""
    if layer_backend == "single":
        return [REDIS_URL]
    return [request.getfixturevalue("redis_cluster").url]


async def check_order(receiver, hosts, rounds=500):
    channel = await receiver.new_channel()
    await receiver.group_add("room", channel)
    await receiver.when_ready(channel)  # the consumer is listening: its inbox reader runs
    kind = "pubsub" if isinstance(receiver, RedisPubSubChannelLayer) else "redis"
    cluster = "cluster" if receiver._connections.cluster else "single"
    argv = [kind, json.dumps(hosts), cluster, receiver.prefix, channel, str(rounds)]
    sender = await asyncio.create_subprocess_exec(sys.executable, "-c", SENDER, *argv, cwd=ROOT)
    try:
        got = [await asyncio.wait_for(receiver.receive(channel), 10) for _ in range(2 * rounds)]
    finally:
        assert await asyncio.wait_for(sender.wait(), 10) == 0
    position = {(message["type"], message["n"]): index for index, message in enumerate(got)}
    assert len(position) == 2 * rounds  # each exactly once
    overtaken = [n for n in range(rounds) if position["broadcast", n] < position["direct", n]]
    assert overtaken == []
    # Each road keeps its own order.
    for kind in ("direct", "broadcast"):
        assert [m["n"] for m in got if m["type"] == kind] == list(range(rounds))


async def test_a_broadcast_never_overtakes_an_earlier_direct_message(
    make_layer, layer_backend, request
):
    await check_order(make_layer(capacity=10000), backend_hosts(layer_backend, request))


async def test_order_holds_when_inbox_and_group_live_on_different_servers(
    make_layer, redis_servers
):
    hosts = [server.url for server in redis_servers(2)]
    receiver = make_layer(hosts=hosts, capacity=10000)
    # The group and this process's inbox on different servers.
    while receiver._ring.shard(receiver.client_prefix) == receiver._ring.shard("room"):
        receiver = make_layer(hosts=hosts, capacity=10000)
    await check_order(receiver, hosts)


# Only there: its direct messages and broadcasts go to different topics, which a Cluster puts
# on different shards (and connections), as several hosts do (see README, Redis Cluster).
@pytest.mark.single_server
async def test_the_pubsub_layer_keeps_the_order_on_one_server(make_layer):
    receiver = make_layer(layer_class=RedisPubSubChannelLayer, capacity=10000)
    await check_order(receiver, [REDIS_URL])


def test_entries_carry_their_number_and_broadcasts_the_marks():
    assert split_entry(b"00001733460000000" + b"\x93rest") == (1733460000000, b"\x93rest")
    packed = msgpack.packb({"abc": "1733460000000", "def": "0"})
    marks = f"{len(packed):08d}".encode() + packed
    assert split_marks(marks + b"\x92env") == ({"abc": 1733460000000, "def": 0}, b"\x92env")
    assert split_marks(b"00000001\x90\x92env") == ({}, b"\x92env")  # Lua's empty table
    for unmarked in (b"\x93not-an-entry", b""):
        with pytest.raises(ValueError):
            split_entry(unmarked)
        with pytest.raises(ValueError):
            split_marks(unmarked)


async def test_held_broadcasts_are_merged_into_the_inbox_stream_in_order():
    progress, delivered = InboxProgress(), []

    def broadcast(name):
        return lambda: delivered.append(name)

    progress.hold(0, broadcast("free"))  # the inbox had nothing: at once
    progress.hold(100, broadcast("b1"))  # published when the inbox's latest entry was 100
    b2 = progress.hold(None, broadcast("b2"))  # mark unknown: behind b1 until settled
    for seq in (90, 100, 120):
        progress.before(seq)
        delivered.append(seq)
        progress.advanced(seq)
        if seq == 100:
            progress.settle([b2], 120)  # the inbox's latest, read after b2 arrived
    # b1 right after the entry it followed; b2 once 120 was delivered.
    assert delivered == ["free", 90, 100, "b1", 120, "b2"]
    progress.settle([progress.hold(None, broadcast("b3"))], 500)
    progress.drained()  # the inbox expired or was flushed: nothing to wait for
    assert delivered[-1] == "b3"


async def test_a_held_broadcast_is_released_after_the_hold_limit(monkeypatch):
    monkeypatch.setattr(inbox_order, "HOLD_LIMIT", 0.05)
    progress, delivered = InboxProgress(), []
    progress.hold(10**16, lambda: delivered.append("late"))
    await asyncio.sleep(0.2)
    assert delivered == ["late"]
