"""A send() then a group_send() to the same consumer channel arrive in that order, on one
Redis and with the inbox and the group on different Redis servers. (The other way round,
a group_send() then a send(), is not ordered: see the README's differences.)"""

import asyncio
import json
import sys

import pytest

from channels_layer.inbox_order import InboxProgress, split_entry
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


def test_inbox_entries_carry_a_growing_sequence_number():
    assert split_entry(b"00001733460000000" + b"\x93rest") == (1733460000000, b"\x93rest")
    with pytest.raises(ValueError):
        split_entry(b"\x93not-an-entry")


async def test_progress_waiters_are_released_by_delivery_drain_or_timeout():
    progress = InboxProgress()
    await asyncio.wait_for(progress.reached(0, timeout=5), 1)  # nothing to wait for
    waiting = asyncio.ensure_future(progress.reached(10, timeout=5))
    await asyncio.sleep(0)
    progress.advanced(9)
    await asyncio.sleep(0)
    assert not waiting.done()
    progress.advanced(10)
    await asyncio.wait_for(waiting, 1)
    waiting = asyncio.ensure_future(progress.reached(20, timeout=5))
    await asyncio.sleep(0)
    progress.drained()
    await asyncio.wait_for(waiting, 1)
    await asyncio.wait_for(progress.reached(30, timeout=0.05), 1)
    assert progress._waiting == []
