"""A send() then a group_send() to the same consumer channel arrive in that order, on one
Redis and with the inbox and the group on different Redis servers. (The other way round is
kept where it can be, not guaranteed: see channels_layer.inbox_order.)"""

import asyncio
import json
import sys

import pytest

from channels_layer import inbox_order
from channels_layer.inbox_order import InboxProgress, split_stamp
from channels_layer.pubsub import RedisPubSubChannelLayer
from tests.processes import ROOT
from tests.redis_servers import REDIS_URL

# The sender is another process, so its sends and publishes race the receiver's reads.
SENDER = """
import asyncio, json, sys
from channels_layer.pubsub import RedisPubSubChannelLayer
from tests.processes import ROOT
from tests.redis_servers import REDIS_URL
from channels_layer.redis import RedisChannelLayer

async def main(layer_class, hosts, prefix, channel, rounds):
    layer_class = {"pubsub": RedisPubSubChannelLayer}.get(layer_class, RedisChannelLayer)
    layer = layer_class(hosts=json.loads(hosts), prefix=prefix, capacity=10000)
    for n in range(int(rounds)):
        await layer.send(channel, {"type": "direct", "n": n})
        await layer.group_send("room", {"type": "broadcast", "n": n})
    await layer.close()

asyncio.run(main(*sys.argv[1:]))
"""


async def check_order(receiver, hosts, rounds=500):
    channel = await receiver.new_channel()
    await receiver.group_add("room", channel)
    await receiver.when_ready(channel)  # the consumer is listening: its inbox reader runs
    kind = "pubsub" if isinstance(receiver, RedisPubSubChannelLayer) else "redis"
    argv = [kind, json.dumps(hosts), receiver.prefix, channel, str(rounds)]
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


async def test_a_broadcast_never_overtakes_an_earlier_direct_message(make_layer):
    await check_order(make_layer(capacity=10000), [REDIS_URL])


async def test_order_holds_when_inbox_and_group_live_on_different_servers(
    make_layer, redis_servers
):
    hosts = [server.url for server in redis_servers(2)]
    receiver = make_layer(hosts=hosts, capacity=10000)
    # The group and this process's inbox on different servers.
    while receiver._ring.shard(receiver.client_prefix) == receiver._ring.shard("room"):
        receiver = make_layer(hosts=hosts, capacity=10000)
    await check_order(receiver, hosts)


async def test_the_pubsub_layer_keeps_the_order_on_one_server(make_layer):
    receiver = make_layer(layer_class=RedisPubSubChannelLayer, capacity=10000)
    await check_order(receiver, [REDIS_URL])


def test_entries_and_broadcasts_carry_a_stamp():
    assert split_stamp(b"00001733460000000" + b"\x93rest") == (1733460000000, b"\x93rest")
    with pytest.raises(ValueError):
        split_stamp(b"\x93not-stamped")


async def test_held_broadcasts_are_merged_into_the_inbox_stream_in_order():
    progress, delivered = InboxProgress(), []

    def broadcast(name):
        return lambda: delivered.append(name)

    progress.settle([progress.hold(None, broadcast("free"))], None)  # empty inbox: at once
    b1 = progress.hold(150, broadcast("b1"))  # read before the inbox entries below
    b2 = progress.hold(None, broadcast("b2"))  # another server's: waits for the number
    progress.before(100)
    delivered.append(100)
    progress.advanced(100)
    progress.settle([b1, b2], 180)  # the inbox had entries up to 180 when they arrived
    for seq in (120, 180):
        progress.before(seq)
        delivered.append(seq)
        progress.advanced(seq)
    # b1 went just before the first entry stamped after it; b2 once 180 was delivered.
    assert delivered == ["free", 100, 120, "b1", 180, "b2"]
    progress.settle([progress.hold(None, broadcast("b3"))], 500)
    progress.drained()  # the inbox expired or was flushed: nothing to wait for
    assert delivered[-1] == "b3"


async def test_a_held_broadcast_is_released_after_the_hold_limit(monkeypatch):
    monkeypatch.setattr(inbox_order, "HOLD_LIMIT", 0.05)
    progress, delivered = InboxProgress(), []
    progress.settle([progress.hold(None, lambda: delivered.append("late"))], 10**16)
    await asyncio.sleep(0.2)
    assert delivered == ["late"]
