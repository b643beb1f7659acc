"""RedisChannelLayer against real Redis servers. Two layer instances with one prefix play
two processes of one site. Run on a single Redis and on a Redis Cluster (see conftest)."""

import asyncio
import logging
import re
import threading

import pytest
import redis
from asgiref.sync import async_to_sync

from channels_layer import ChannelFull
from channels_layer.pubsub import RedisPubSubChannelLayer
from channels_layer.redis import RedisChannelLayer
from channels_layer.redis_envelopes import read_named_entry
from channels_layer.serializers import SerializerDoesNotExist
from tests.redis_servers import REDIS_URL

ON_CLUSTER = True


async def receive(layer, channel, timeout=2):
    return await asyncio.wait_for(layer.receive(channel), timeout)


async def nothing_arrives(layer, channel, timeout=0.3):
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(layer.receive(channel), timeout)
    return True


def test_extensions_announce_what_the_redis_layers_offer():
    """Channels' "groups" and "flush", then ours (see base.py): when_ready, leases,
    channels other processes reach, and group history; the pub/sub layer offers the same."""
    expected = ["groups", "flush", "when_ready", "at_least_once", "cross_process", "history"]
    assert RedisChannelLayer.extensions == expected
    assert RedisPubSubChannelLayer.extensions == expected


async def test_a_process_local_channel_receives_from_another_process(make_layer):
    sender, receiver = make_layer(), make_layer()
    channel = await receiver.new_channel()
    assert re.fullmatch(rf"specific\.{receiver.client_prefix}![0-9a-f]+", channel)
    await sender.send(channel, {"type": "hello", "data": b"\x00\xff", "n": [1, 2]})
    assert await receive(receiver, channel) == {"type": "hello", "data": b"\x00\xff", "n": [1, 2]}


async def test_messages_arrive_in_order(make_layer):
    sender, receiver = make_layer(), make_layer()
    local = await receiver.new_channel()
    for n in range(50):
        await sender.send(local, {"type": "n", "n": n})
        await sender.send("jobs", {"type": "n", "n": n})
    assert [(await receive(receiver, local))["n"] for _ in range(50)] == list(range(50))
    assert [(await receive(receiver, "jobs"))["n"] for _ in range(50)] == list(range(50))


async def test_a_named_channel_message_reaches_exactly_one_of_many_receivers(make_layer):
    first, second, sender = make_layer(), make_layer(), make_layer()
    receivers = [asyncio.ensure_future(layer.receive("work")) for layer in (first, second)]
    await asyncio.sleep(0.1)
    await sender.send("work", {"type": "job", "n": 1})
    await sender.send("work", {"type": "job", "n": 2})
    done = await asyncio.wait_for(asyncio.gather(*receivers), 3)
    assert sorted(message["n"] for message in done) == [1, 2]


async def test_receiving_another_process_channel_is_refused(make_layer):
    owner, other = make_layer(), make_layer()
    with pytest.raises(ValueError, match="belongs to another process"):
        await other.receive(await owner.new_channel())


async def test_capacity_is_per_channel_not_per_process(make_layer):
    sender, receiver = make_layer(capacity=3), make_layer(capacity=3)
    slow, fast = await receiver.new_channel(), await receiver.new_channel()
    for n in range(3):
        await sender.send(slow, {"type": "n", "n": n})
    with pytest.raises(ChannelFull, match="capacity of 3"):
        await sender.send(slow, {"type": "n", "n": 3})
    # The slow consumer's full queue does not block its neighbour in the same process.
    await sender.send(fast, {"type": "n", "n": 0})
    assert (await receive(receiver, fast))["n"] == 0
    # Taking a message frees its place.
    assert (await receive(receiver, slow))["n"] == 0
    for _ in range(20):
        try:
            await sender.send(slow, {"type": "n", "n": 3})
            break
        except ChannelFull:
            await asyncio.sleep(0.01)  # the count is updated in a batch, just after
    assert [(await receive(receiver, slow))["n"] for _ in range(3)] == [1, 2, 3]


async def test_named_channel_capacity_and_patterns(make_layer):
    layer = make_layer(capacity=5, channel_capacity={"small.*": 1, re.compile(r"^big$"): 10})
    await layer.send("small.jobs", {"type": "a"})
    with pytest.raises(ChannelFull):
        await layer.send("small.jobs", {"type": "b"})
    for _ in range(10):
        await layer.send("big", {"type": "a"})
    with pytest.raises(ChannelFull):
        await layer.send("big", {"type": "b"})
    for _ in range(5):
        await layer.send("other", {"type": "a"})
    with pytest.raises(ChannelFull):
        await layer.send("other", {"type": "b"})


async def test_expired_messages_are_never_delivered(make_layer):
    sender, receiver = make_layer(expiry=1), make_layer(expiry=1)
    local = await receiver.new_channel()
    await sender.send(local, {"type": "old"})
    await sender.send("jobs", {"type": "old"})
    await asyncio.sleep(1.2)
    await sender.send(local, {"type": "new"})
    await sender.send("jobs", {"type": "new"})
    assert (await receive(receiver, local))["type"] == "new"
    assert (await receive(receiver, "jobs"))["type"] == "new"


async def test_group_send_reaches_members_in_every_process_once(make_layer):
    first, second, sender = make_layer(), make_layer(), make_layer()
    members = [
        (first, await first.new_channel()),
        (first, await first.new_channel()),
        (second, await second.new_channel()),
    ]
    for layer, channel in members:
        await layer.group_add("room", channel)
    await sender.send("worker", {"type": "warm-up"})
    await sender.group_add("room", "worker")  # a named channel is a member too
    await sender.group_send("room", {"type": "chat", "text": "hi"})
    for layer, channel in members:
        assert await receive(layer, channel) == {"type": "chat", "text": "hi"}
        assert await nothing_arrives(layer, channel, 0.1)
    assert (await receive(sender, "worker"))["type"] == "warm-up"
    assert (await receive(sender, "worker"))["type"] == "chat"


async def test_group_discard_stops_delivery(make_layer):
    layer, sender = make_layer(), make_layer()
    staying, leaving = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("room", staying)
    await layer.group_add("room", leaving)
    await layer.group_discard("room", leaving)
    await sender.group_send("room", {"type": "chat"})
    assert (await receive(layer, staying))["type"] == "chat"
    assert await nothing_arrives(layer, leaving)


async def test_group_send_skips_a_full_member_without_error(make_layer):
    layer, sender = make_layer(capacity=1), make_layer(capacity=1)
    full, free = await layer.new_channel(), await layer.new_channel()
    for channel in (full, free):
        await layer.group_add("room", channel)
    await sender.group_send("room", {"type": "first"})
    assert (await receive(layer, free))["type"] == "first"
    await sender.group_send("room", {"type": "second"})  # full still holds "first"
    assert (await receive(layer, free))["type"] == "second"
    assert (await receive(layer, full))["type"] == "first"
    assert await nothing_arrives(layer, full)


async def test_group_memberships_expire(make_layer):
    layer, sender = make_layer(group_expiry=1), make_layer(group_expiry=1)
    local = await layer.new_channel()
    await layer.group_add("room", local)
    await sender.group_add("room", "worker")
    await asyncio.sleep(1.2)
    await sender.group_send("room", {"type": "late"})
    assert await nothing_arrives(layer, local)
    assert await nothing_arrives(sender, "worker")


@pytest.mark.single_server  # counts subscribers with PUBSUB NUMSUB
async def test_a_dead_process_leaves_its_groups_at_once(make_layer):
    layer = make_layer()
    await layer.group_add("room", await layer.new_channel())
    check = redis.asyncio.Redis.from_url(REDIS_URL)
    topic = f"{layer.prefix}:broadcast:room"
    assert (await check.pubsub_numsub(topic))[0][1] == 1
    await layer.close()  # what a process's death does to its connections
    for _ in range(50):
        if (await check.pubsub_numsub(topic))[0][1] == 0:
            break
        await asyncio.sleep(0.02)
    assert (await check.pubsub_numsub(topic))[0][1] == 0
    await check.aclose()


async def test_group_send_is_one_publish_whatever_the_membership(make_layer, redis_servers):
    # A server of its own: command counts on the shared one include other programs' calls.
    [server] = redis_servers()
    layer, sender = make_layer(hosts=[server.url]), make_layer(hosts=[server.url])
    channels = [await layer.new_channel() for _ in range(200)]
    for channel in channels:
        await layer.group_add("crowd", channel)
    check = redis.asyncio.Redis.from_url(server.url)
    before = await check.info("commandstats")
    await sender.group_send("crowd", {"type": "hello"})
    after = await check.info("commandstats")
    await check.aclose()
    calls = {
        name: after.get(name, {}).get("calls", 0) - before.get(name, {}).get("calls", 0)
        for name in ("cmdstat_publish", "cmdstat_rpush", "cmdstat_evalsha")
    }
    assert calls["cmdstat_publish"] == 1
    assert calls["cmdstat_rpush"] == 0  # no per-member writes
    for channel in channels:
        assert (await receive(layer, channel))["type"] == "hello"


async def test_flush_deletes_this_prefix_only(make_layer):
    layer = make_layer()
    await layer.send("jobs", {"type": "a"})
    other = make_layer(prefix=layer.prefix + "-other")
    await other.send("jobs", {"type": "keep"})
    await layer.flush()
    assert await nothing_arrives(layer, "jobs")
    assert (await receive(other, "jobs"))["type"] == "keep"


async def test_encrypted_payloads_hold_no_plaintext_and_keys_rotate(make_layer, raw_redis):
    old = make_layer(symmetric_encryption_keys=["old-secret"])
    await old.send("vault", {"type": "secret", "text": "attack at dawn"})
    raw = raw_redis.lrange(old._key("channel", "vault"), 0, -1)
    assert len(raw) == 1
    assert b"attack at dawn" not in raw[0]
    assert b"secret" not in read_named_entry(raw[0])[1]
    rotated = make_layer(symmetric_encryption_keys=["new-secret", "old-secret"])
    assert (await receive(rotated, "vault"))["text"] == "attack at dawn"


async def test_a_message_no_key_opens_is_dropped_with_one_log_line(make_layer, caplog):
    stranger = make_layer(symmetric_encryption_keys=["someone-else"])
    layer = make_layer(symmetric_encryption_keys=["ours"])
    await stranger.send("vault", {"type": "forged"})
    await layer.send("vault", {"type": "genuine"})
    with caplog.at_level(logging.ERROR, logger="channels_layer"):
        assert (await receive(layer, "vault"))["type"] == "genuine"
    assert "cannot be decrypted" in caplog.text


async def test_bad_names_and_unencodable_messages_are_refused(make_layer):
    layer = make_layer()
    with pytest.raises(TypeError, match="Channel name"):
        await layer.send("bad name", {"type": "x"})
    with pytest.raises(TypeError, match="Group name"):
        await layer.group_send("bad!group", {"type": "x"})
    with pytest.raises(TypeError, match=re.escape("message['when'] is a datetime.datetime")):
        import datetime

        await layer.send("jobs", {"type": "x", "when": datetime.datetime.now()})
    with pytest.raises(ValueError, match="'type'"):
        await layer.send("jobs", {"text": "no type"})


def test_pickle_is_refused_as_a_serializer():
    with pytest.raises(SerializerDoesNotExist, match=r"pickle is not offered: .* run code"):
        RedisChannelLayer(serializer_format="pickle")


@pytest.mark.single_server  # counts connections in CLIENT LIST
def test_sync_code_reuses_connections_and_never_sees_a_closed_loop(make_layer):
    layer = make_layer()
    receiver = make_layer()
    results = []

    def sync_caller():
        # Each call runs in a new event loop, as from a Django view, a command or Celery.
        for n in range(30):
            async_to_sync(layer.send)("sync.jobs", {"type": "n", "n": n})
        results.extend(async_to_sync(receiver.receive)("sync.jobs")["n"] for _ in range(30))

    thread = threading.Thread(target=sync_caller)
    thread.start()
    thread.join(20)
    assert results == list(range(30))
    clients = redis.Redis.from_url(REDIS_URL).client_list()
    ours = [c for c in clients if c["name"] == layer.connection_name]
    assert 1 <= len(ours) <= 3


async def test_groups_joined_while_the_subscriber_connects_all_get_broadcasts(make_layer):
    """The soak found it: a second group joined while the first subscription's connection
    was being made went to a connection nobody read."""
    layer, sender = make_layer(), make_layer()
    channels = [await layer.new_channel() for _ in range(5)]

    async def join(index, delay):
        await asyncio.sleep(delay)
        await layer.group_add(f"room{index}", channels[index])

    await asyncio.wait_for(asyncio.gather(*(join(index, index * 0.0005) for index in range(5))), 5)
    for index in range(5):
        await sender.group_send(f"room{index}", {"type": "hello", "room": index})
    for index, channel in enumerate(channels):
        assert (await receive(layer, channel))["room"] == index
