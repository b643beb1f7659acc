"""A process's ``send`` to one of its own consumer channels: straight into its mailbox,
without Redis, and otherwise as a send through Redis: serialized (the receiver gets its
own copy), held to the channel's capacity (counted apart from other processes' messages,
which Redis counts), expired, in order, counted in the metrics, and emptied by ``flush()``.
"""

import asyncio
import threading
import time

import msgpack
import pytest
from asgiref.sync import async_to_sync
from prometheus_client import REGISTRY

from channels_layer.exceptions import ChannelFull
from channels_layer.pubsub import RedisPubSubChannelLayer
from channels_layer.redis import RedisChannelLayer
from channels_layer.script_batcher import ScriptBatcher

ON_CLUSTER = True


@pytest.fixture
def scripts_run(monkeypatch):
    """The names of the scripts called, in order."""
    names: list[str] = []
    original = ScriptBatcher.call

    def call(self, name, keys, args, on_result=None):
        names.append(name)
        return original(self, name, keys, args, on_result)

    monkeypatch.setattr(ScriptBatcher, "call", call)
    return names


def sample(name, **labels):
    return REGISTRY.get_sample_value(name, {"backend": "redis", **labels}) or 0.0


async def receive(layer, channel):
    return await asyncio.wait_for(layer.receive(channel), 5)


async def start_reading(layer, channel):
    """Start the inbox reader, as a consumer's first wait does (and stop that wait)."""
    (await layer.when_ready(channel)).cancel()


async def until(condition, what):
    deadline = time.monotonic() + 5
    while not await condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


async def pending_in_redis(layer, raw_redis, channel) -> int:
    """This process's count of ``channel``'s messages in Redis, once the taken counts of
    its latest receives have reached Redis (they ride the next batch: make one)."""
    await layer.send("some-named-channel", {"type": "nudge"})
    count = await asyncio.to_thread(
        raw_redis.hget, layer._key("pending", layer.client_prefix), channel
    )
    return int(count or 0)


async def test_its_own_channel_never_goes_to_redis(make_layer, scripts_run, raw_redis):
    layer = make_layer()
    channel = await layer.new_channel()
    await start_reading(layer, channel)
    scripts_run.clear()
    for n in range(3):
        await layer.send(channel, {"type": "n", "n": n})
    assert [(await receive(layer, channel))["n"] for _ in range(3)] == [0, 1, 2]
    await asyncio.sleep(0.1)  # time for any count of taken messages to leave
    assert scripts_run == []
    assert not await asyncio.to_thread(raw_redis.exists, layer._key("inbox", layer.client_prefix))


async def test_the_receiver_gets_a_serialized_copy(make_layer):
    layer = make_layer()
    channel = await layer.new_channel()
    message = {"type": "n", "items": [1, 2], "pair": (3, 4), "raw": b"\x00"}
    await layer.send(channel, message)
    message["items"].append("changed after the send")
    got = await receive(layer, channel)
    assert got == {"type": "n", "items": [1, 2], "pair": [3, 4], "raw": b"\x00"}
    got["items"].append("changed by the receiver")
    assert message["items"] == [1, 2, "changed after the send"]


class Tagging(RedisChannelLayer):
    """A project's subclass with an encoding of its own, as channels_redis allows."""

    def serialize(self, message):
        return b"tagged:" + super().serialize(message)

    def deserialize(self, data):
        assert data.startswith(b"tagged:")
        return {**super().deserialize(data[len(b"tagged:") :]), "tagged": True}


async def test_a_subclass_serialize_and_deserialize_see_its_own_messages_too(make_layer):
    layer = make_layer(Tagging)
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "n"})
    assert await receive(layer, channel) == {"type": "n", "tagged": True}


async def test_a_message_msgpack_cannot_carry_fails_as_on_the_way_to_redis(make_layer):
    layer, other = make_layer(), make_layer()
    channel = await layer.new_channel()
    errors = []
    for sender in (layer, other):
        with pytest.raises((TypeError, ValueError)) as raised:
            await sender.send(channel, {"type": "n", "value": {1, 2}})
        errors.append((type(raised.value), str(raised.value)))
    assert errors[0] == errors[1]
    assert "message['value']" in errors[0][1]
    with pytest.raises(TypeError):
        await layer.send(channel, ["not", "a", "dict"])
    assert channel not in layer._mailboxes


async def test_capacity_counts_the_mailbox_apart_from_other_processes(make_layer):
    """Documented in redis_delivery.InboxDelivery: this process is refused once the
    mailbox holds the capacity, other processes once that many of theirs are pending."""
    layer, other = make_layer(capacity=2), make_layer(capacity=2)
    channel = await layer.new_channel()
    full_before = sample("consumers_layer_messages_dropped_total", reason="capacity")
    await layer.send(channel, {"type": "n", "n": 0})
    await layer.send(channel, {"type": "n", "n": 1})
    with pytest.raises(ChannelFull, match="capacity of 2"):
        await layer.send(channel, {"type": "n", "n": 2})
    assert sample("consumers_layer_messages_dropped_total", reason="capacity") == full_before + 1
    # Other processes count only their own: two more fit, then they are refused too.
    await other.send(channel, {"type": "n", "n": 3})
    await other.send(channel, {"type": "n", "n": 4})
    with pytest.raises(ChannelFull):
        await other.send(channel, {"type": "n", "n": 5})
    assert [(await receive(layer, channel))["n"] for _ in range(4)] == [0, 1, 3, 4]
    # Messages of another process fill the mailbox too (once Redis knows they were taken).
    for n in (6, 7):

        async def sent(n=n):
            try:
                await other.send(channel, {"type": "n", "n": n})
            except ChannelFull:
                return False
            return True

        await until(sent, "taking a message frees its place in Redis")

    async def mailbox_full():
        try:
            await layer.send(channel, {"type": "n", "n": "refused"})
        except ChannelFull:
            return True
        assert (await receive(layer, channel))["n"] == "refused"
        return False

    await until(mailbox_full, "the other process's messages reach the mailbox")
    assert [(await receive(layer, channel))["n"] for _ in range(2)] == [6, 7]


async def test_its_messages_are_not_counted_as_taken_in_redis(make_layer, raw_redis):
    layer, other = make_layer(capacity=5), make_layer(capacity=5)
    channel = await layer.new_channel()
    await other.send(channel, {"type": "n", "n": "a"})  # queued in the inbox: nobody reads yet
    await other.send(channel, {"type": "n", "n": "b"})
    await layer.send(channel, {"type": "n", "n": "here"})  # in the mailbox already
    assert await pending_in_redis(layer, raw_redis, channel) == 2
    assert (await receive(layer, channel))["n"] == "here"
    assert await pending_in_redis(layer, raw_redis, channel) == 2
    assert [(await receive(layer, channel))["n"] for _ in range(2)] == ["a", "b"]

    async def forgotten():
        return await pending_in_redis(layer, raw_redis, channel) == 0

    await until(forgotten, "the other process's messages are counted as taken")


async def test_a_message_to_its_own_channel_expires_as_any_other(make_layer):
    layer = make_layer(expiry=1)
    channel = await layer.new_channel()
    expired_before = sample("consumers_layer_messages_dropped_total", reason="expiry")
    await layer.send(channel, {"type": "n", "n": "stale"})
    await asyncio.sleep(1.2)
    await layer.send(channel, {"type": "n", "n": "fresh"})
    assert (await receive(layer, channel))["n"] == "fresh"
    assert sample("consumers_layer_messages_dropped_total", reason="expiry") == expired_before + 1


async def test_order_is_kept_and_other_processes_still_arrive(make_layer):
    layer, other = make_layer(), make_layer()
    channel = await layer.new_channel()
    received_before = sample("consumers_layer_receive_seconds_count")

    async def send_all(sender, tag):
        for n in range(100):
            await sender.send(channel, {"type": "n", "n": n, "from": tag})

    await asyncio.gather(send_all(layer, "here"), send_all(other, "there"))
    got = [await receive(layer, channel) for _ in range(200)]
    for tag in ("here", "there"):
        assert [m["n"] for m in got if m["from"] == tag] == list(range(100))
    assert sample("consumers_layer_receive_seconds_count") - received_before >= 200


async def test_a_send_from_another_thread_wakes_the_receiver(make_layer):
    layer = make_layer()
    channel = await layer.new_channel()
    receiving = asyncio.ensure_future(receive(layer, channel))
    await asyncio.sleep(0.05)
    sending = threading.Thread(target=async_to_sync(layer.send), args=(channel, {"type": "t"}))
    sending.start()
    assert (await receiving)["type"] == "t"
    sending.join()


async def test_a_sender_in_a_loop_lets_the_receiver_run(make_layer):
    layer = make_layer()
    channel = await layer.new_channel()
    got: list[int] = []

    async def receive_all():
        while True:
            got.append((await layer.receive(channel))["n"])

    receiving = asyncio.ensure_future(receive_all())
    await asyncio.sleep(0.05)
    seen_while_sending = []
    for n in range(20):
        await layer.send(channel, {"type": "n", "n": n})
        seen_while_sending.append(len(got))
    receiving.cancel()
    assert seen_while_sending[-1] >= 10
    assert got == list(range(len(got)))


async def test_a_cancelled_send_sends_nothing(make_layer):
    layer = make_layer()
    channel = await layer.new_channel()
    sending = asyncio.ensure_future(layer.send(channel, {"type": "n"}))
    await asyncio.sleep(0)  # it starts, and waits for its turn
    sending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sending
    assert channel not in layer._mailboxes


async def test_flush_empties_it_and_close_keeps_it(make_layer):
    """As Redis would keep a message queued there across ``close()``: the layer is
    shared by the process's consumers, and reconnects when used again."""
    layer = make_layer()
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "n", "n": "flushed"})
    await layer.flush()
    await layer.send(channel, {"type": "n", "n": "kept"})
    await layer.close()
    assert (await receive(layer, channel))["n"] == "kept"
    await layer.flush()
    assert channel not in layer._mailboxes


async def test_it_is_not_encrypted_but_what_goes_to_redis_is(make_layer, raw_redis):
    key = "a-key-for-this-test-only"
    layer, other = (make_layer(symmetric_encryption_keys=[key]) for _ in range(2))
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "n", "secret": "local-plaintext"})
    payload = layer._mailboxes._channels[channel].messages[0][1]
    assert msgpack.unpackb(payload)["secret"] == "local-plaintext"  # never left the process
    await other.send(channel, {"type": "n", "secret": "remote-plaintext"})
    inbox = await asyncio.to_thread(
        raw_redis.lrange, layer._key("inbox", layer.client_prefix), 0, -1
    )
    assert len(inbox) == 1 and b"remote-plaintext" not in inbox[0]
    assert (await receive(layer, channel))["secret"] == "local-plaintext"
    assert (await receive(layer, channel))["secret"] == "remote-plaintext"


async def test_the_pubsub_layer_drops_what_its_full_channel_cannot_take(make_layer, caplog):
    layer = make_layer(RedisPubSubChannelLayer, capacity=1)
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "n", "n": 0})
    await layer.send(channel, {"type": "n", "n": 1})  # no ChannelFull on this layer
    assert "capacity of 1" in caplog.text
    assert (await receive(layer, channel))["n"] == 0
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive(channel), 0.2)
