"""A broadcast handed to idle eager receivers is decoded once (``Mailboxes(decode_once=)``):
each member still gets a message of its own, as a decoding per member gave it."""

import asyncio
import copy

import msgpack
import pytest

from channels_layer.flat_copy import copy_if_flat
from channels_layer.memory import InMemoryChannelLayer
from channels_layer.ready import offer_eagerly


class Mutating:
    """Handles by changing the message it was given, as a handler may."""

    def __init__(self):
        self.got = []

    def claim(self):
        return True

    def handle(self, message):
        self.got.append(copy.deepcopy(message))
        message["text"] = "changed"
        if isinstance(message.get("items"), list):
            message["items"].append("changed")
        return False

    def release(self):
        pass


async def eager_members(layer, members):
    """``members`` channels in the group "room", each waiting with an eager receiver."""
    receivers = []
    for _ in range(members):
        channel = await layer.new_channel()
        await layer.group_add("room", channel)
        receiver = Mutating()
        ready = await layer.when_ready(channel)
        assert offer_eagerly(ready, receiver)
        receivers.append((receiver, ready))
    return receivers


async def broadcast_to(layer, members, message):
    receivers = await eager_members(layer, members)
    await layer.group_send("room", message)
    for _, ready in receivers:
        ready.cancel()
    return [receiver.got for receiver, _ in receivers]


@pytest.mark.parametrize(
    "message",
    [{"type": "said", "text": "hi", "n": 1}, {"type": "said", "text": "hi", "items": ["a"]}],
    ids=["flat", "nested"],
)
async def test_a_member_changing_its_message_changes_no_other_members(message):
    """A flat message is copied for each member, a nested one decoded for each."""
    expected = copy.deepcopy(message)
    got = await broadcast_to(InMemoryChannelLayer(), 3, message)
    assert got == [[expected]] * 3


async def test_a_layer_with_its_own_deserialize_decodes_for_each_member():
    decoded = []

    class Counting(InMemoryChannelLayer):
        def deserialize(self, data):
            decoded.append(data)
            return super().deserialize(data)

    got = await broadcast_to(Counting(), 3, {"type": "said", "text": "hi"})
    assert got == [[{"type": "said", "text": "hi"}]] * 3
    assert len(decoded) == 3


def test_only_a_dict_of_immutable_values_is_copied():
    flat = msgpack.unpackb(msgpack.packb({"t": "x", "b": b"y", "n": 1, "f": 1.5, "z": None}))
    copy = copy_if_flat(flat)
    assert copy == flat and copy is not flat
    assert copy_if_flat({"t": "x", "l": []}) is None
    assert copy_if_flat({"t": "x", "d": {}}) is None
    assert copy_if_flat(["x"]) is None


def count_decodings(layer):
    """The payloads ``layer`` decodes from now on (its own codec, still: an instance's
    ``deserialize`` is not a subclass's)."""
    decoded = []
    deserialize = layer.deserialize

    def counting(data):
        decoded.append(data)
        return deserialize(data)

    layer.deserialize = counting
    return decoded


async def test_a_redis_broadcast_is_decoded_once_for_the_members_here(make_layer):
    layer = make_layer()
    decoded = count_decodings(layer)
    receivers = await eager_members(layer, 3)
    await layer.group_send("room", {"type": "said", "text": "hi"})
    deadline = asyncio.get_running_loop().time() + 5
    while not all(receiver.got for receiver, _ in receivers):
        assert asyncio.get_running_loop().time() < deadline, "the broadcast arrives"
        await asyncio.sleep(0.01)
    for _, ready in receivers:
        ready.cancel()
    assert [receiver.got for receiver, _ in receivers] == [[{"type": "said", "text": "hi"}]] * 3
    assert len(decoded) == 1


@pytest.mark.parametrize(
    "message",
    [{"type": "said", "text": "hi", "n": 1}, {"type": "said", "text": "hi", "items": ["a"]}],
    ids=["flat", "nested"],
)
async def test_a_redis_broadcast_is_decoded_once_for_the_members_that_receive_it(
    make_layer, message
):
    """Members reading with receive() (busy or sync consumers, workers) share a flat
    message's one decoding too, each with a copy of its own; a nested one is decoded for
    each, and a direct message is never taken for a broadcast's."""
    layer = make_layer()
    decoded = count_decodings(layer)
    channels = [await layer.new_channel() for _ in range(3)]
    for channel in channels:
        await layer.group_add("room", channel)
    await layer.group_send("room", message)
    got = []
    for channel in channels:
        received = await asyncio.wait_for(layer.receive(channel), 5)
        got.append(copy.deepcopy(received))
        received["text"] = "changed"
        if "items" in received:
            received["items"].append("changed")
    assert got == [message] * 3
    assert len(decoded) == (1 if "items" not in message else 3)
    await layer.send(channels[0], {"type": "direct", "text": "hi"})
    await layer.send(channels[1], {"type": "direct", "text": "hi"})
    assert await asyncio.wait_for(layer.receive(channels[0]), 5) == {"type": "direct", "text": "hi"}
    assert await asyncio.wait_for(layer.receive(channels[1]), 5) == {"type": "direct", "text": "hi"}
