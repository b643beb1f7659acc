"""Encryption at rest and in flight on Redis (``symmetric_encryption_keys``): no plaintext
in any key or PUBLISH, with a plaintext control run that finds it; a message sealed with an
unknown key is dropped with one log line on the broadcast and consumer-channel routes (a
named channel: tests/channels_layer/test_serializers.py). The layers use ``make_layer``'s
unique prefix on the shared Redis and touch no other key. On the single Redis and on a
Cluster (where the wire is watched with SSUBSCRIBE to the layer's shard channels)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

import pytest
import redis.asyncio

from channels_layer.pubsub import RedisPubSubChannelLayer
from channels_layer.redis import RedisChannelLayer
from tests.redis_servers import REDIS_URL

ON_CLUSTER = True


async def redis_contents(client, prefix: str) -> dict[bytes, list[bytes]]:
    """Every value under ``prefix``, whatever the key's type."""
    contents = {}
    async for key in client.scan_iter(match=f"{prefix}:*"):
        kind = await client.type(key)
        if kind == b"list":
            values = await client.lrange(key, 0, -1)
        elif kind == b"hash":
            values = [item for pair in (await client.hgetall(key)).items() for item in pair]
        elif kind == b"zset":
            values = [member for member, _ in await client.zrange(key, 0, -1, withscores=True)]
        elif kind == b"set":
            values = list(await client.smembers(key))
        elif kind == b"string":
            values = [await client.get(key)]
        else:
            values = [repr(await client.dump(key)).encode()]
        contents[key] = values
    return contents


def found(marker: bytes, blobs) -> bool:
    """Whether ``marker`` is in any blob (msgpack carries strings as their UTF-8 bytes)."""
    return any(marker in blob for blob in blobs)


async def collect_published(watcher, expected: int) -> list[bytes]:
    """The PUBLISHed payloads: at least ``expected``, then until 0.2 s of quiet (or 3 s)."""
    published: list[bytes] = []
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        read = getattr(watcher, "get_sharded_message", watcher.get_message)
        event = await read(timeout=0.2)
        if event is None and len(published) >= expected:
            break
        if event is not None and event["type"] in ("pmessage", "smessage"):
            published.append(event["data"])
    return published


@pytest.mark.parametrize("layer_class", [RedisChannelLayer, RedisPubSubChannelLayer])
@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "control-plaintext"])
async def test_no_plaintext_in_redis_keys_or_pubsub_traffic(
    make_layer, layer_class, encrypted, layer_backend, request
):
    """With symmetric_encryption_keys, every key under the prefix and every PUBLISH (group
    broadcasts; the pub/sub layer's consumer channels too) hold ciphertext only. The
    control run without keys finds the marker in both, so the probe does see plaintext."""
    keys = {"symmetric_encryption_keys": ["the-site-key"]} if encrypted else {}
    sender, receiver = make_layer(layer_class, **keys), make_layer(layer_class, **keys)
    idle = make_layer(layer_class, **keys)  # a process that does not read: its inbox keeps
    if layer_backend == "single":
        raw = redis.asyncio.Redis.from_url(REDIS_URL)
        watcher = raw.pubsub()
        await watcher.psubscribe(f"{sender.prefix}:*")
        await watcher.get_message(timeout=1)  # the psubscribe confirmation
    else:  # sharded pub/sub has no patterns: the topics the layers publish to
        raw = redis.asyncio.RedisCluster.from_url(request.getfixturevalue("redis_cluster").url)
        watcher = raw.pubsub()
        topics = [sender._key("broadcast", "vault-room")]
        if layer_class is RedisPubSubChannelLayer:
            topics += [sender._key("process", layer.client_prefix) for layer in (receiver, idle)]
        for topic in topics:
            await watcher.ssubscribe(topic)
            await watcher.get_sharded_message(timeout=1)  # the confirmation
    marker = f"PLAINTEXT-{secrets.token_hex(8)}"
    message = {"type": "chat.message", "text": marker, marker: [marker]}
    try:
        local = await receiver.new_channel()
        await receiver.group_add("vault-room", local)
        await receiver.group_add("vault-room", "vault-worker")  # a direct member: a list
        parked = await idle.new_channel()
        await sender.group_send("vault-room", message)
        await sender.send("vault-jobs", message)
        await sender.send(parked, message)
        assert (await asyncio.wait_for(receiver.receive(local), 2))["text"] == marker
        # The broadcast; the pub/sub layer publishes to the parked channel's process too.
        published = await collect_published(
            watcher, 2 if layer_class is RedisPubSubChannelLayer else 1
        )
        stored = await redis_contents(raw, sender.prefix)
    finally:
        await watcher.aclose()
        await raw.aclose()
    stored_values = [value for values in stored.values() for value in values]
    # Non-vacuous: the broadcast was seen on the wire, and messages wait in Redis.
    assert published, "no PUBLISH seen under the prefix"
    for name in (b"vault-jobs", b"vault-worker"):  # a hash tag on a Cluster
        endings = (b":channel:" + name, b":channel:{" + name + b"}")
        assert any(key.endswith(endings) for key in stored)
    if layer_class is RedisChannelLayer:
        assert any(b":inbox:" in key for key in stored)
    assert found(marker.encode(), published) is not encrypted
    assert found(marker.encode(), stored_values) is not encrypted


async def timed_receive(layer, channel, timeout=2):
    return await asyncio.wait_for(layer.receive(channel), timeout)


@pytest.mark.parametrize("layer_class", [RedisChannelLayer, RedisPubSubChannelLayer])
@pytest.mark.parametrize("route", ["group_send", "process_channel"])
async def test_a_message_sealed_with_an_unknown_key_is_dropped_with_one_log_line(
    make_layer, caplog, layer_class, route
):
    """tests/channels_layer covers a named channel; these are the broadcast and the
    consumer-channel routes: the stranger's message is dropped with one log line, nothing
    raises, and the properly-keyed messages before and after it arrive in order."""
    stranger = make_layer(layer_class, symmetric_encryption_keys=["someone-else"])
    sender = make_layer(layer_class, symmetric_encryption_keys=["ours"])
    receiver = make_layer(layer_class, symmetric_encryption_keys=["ours"])
    channel = await receiver.new_channel()
    await receiver.group_add("vault-room", channel)

    async def deliver(layer, message):
        if route == "group_send":
            await layer.group_send("vault-room", message)
        else:
            await layer.send(channel, message)

    with caplog.at_level(logging.DEBUG):
        await deliver(sender, {"type": "genuine", "n": 1})
        await deliver(stranger, {"type": "forged"})
        await deliver(sender, {"type": "genuine", "n": 2})
        first = await timed_receive(receiver, channel)
        second = await timed_receive(receiver, channel)
    assert [first, second] == [{"type": "genuine", "n": 1}, {"type": "genuine", "n": 2}]
    loud = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(loud) == 1, [record.getMessage() for record in loud]
    [line] = loud
    assert line.name.startswith("channels_layer")
    assert "cannot be decrypted" in line.getMessage() and channel in line.getMessage()
    assert line.exc_info is None and "\n" not in line.getMessage()
    # The receiver keeps working afterwards.
    await deliver(sender, {"type": "genuine", "n": 3})
    assert (await timed_receive(receiver, channel))["n"] == 3
