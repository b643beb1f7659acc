"""A message handed to an idle eager receiver in the sender's call (``mailbox.EagerReceiver``,
what ``consumers.eager`` builds on): what it gets is what ``receive()`` would have returned,
and the layer's accounting is as if it had been received."""

import asyncio
import time

import pytest

from channels_layer.exceptions import ChannelFull
from channels_layer.history import POSITION_KEY
from channels_layer.memory import InMemoryChannelLayer
from channels_layer.ready import offer_eagerly


class Receiver:
    def __init__(self, claims=True):
        self.claims = claims
        self.got = []
        self.released = 0

    def claim(self):
        return self.claims

    def handle(self, message):
        self.got.append(message)
        return False

    def release(self):
        self.released += 1


async def idle(layer, channel, receiver):
    ready = await layer.when_ready(channel)
    assert offer_eagerly(ready, receiver)
    return ready


async def until(condition, what):
    deadline = time.monotonic() + 5
    while not await condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


async def test_the_redis_layer_counts_a_handed_message_as_taken(make_layer):
    layer, other = make_layer(capacity=2), make_layer(capacity=2)
    channel = await layer.new_channel()
    receiver = Receiver()
    ready = await idle(layer, channel, receiver)
    await layer.send(channel, {"type": "n", "n": 0})
    await layer.send(channel, {"type": "n", "n": 1})
    assert [message["n"] for message in receiver.got] == [0, 1]
    assert not ready.done()  # still waiting for the next one

    async def room_for_more():  # counts are lowered with the next batch, or just after
        try:
            await other.send(channel, {"type": "n", "n": 2})
            await other.send(channel, {"type": "n", "n": 3})
        except ChannelFull:
            return False
        return True

    await until(room_for_more, "handed messages free their places")
    ready.cancel()


async def test_a_redis_broadcast_handed_over_carries_its_history_position(make_layer):
    layer = make_layer(history={"chat.*": {"size": 5, "ttl": 60}})
    channel = await layer.new_channel()
    await layer.group_add("chat.room", channel)
    receiver = Receiver()
    ready = await idle(layer, channel, receiver)
    position = await layer.group_send("chat.room", {"type": "said", "text": "hi"})

    async def handed():
        return bool(receiver.got)

    await until(handed, "the broadcast is handed over")
    assert receiver.got[0]["text"] == "hi"
    assert receiver.got[0][POSITION_KEY]["offset"] == position.offset
    ready.cancel()


async def test_a_receiver_that_does_not_claim_is_woken_and_receives():
    layer = InMemoryChannelLayer()
    channel = await layer.new_channel()
    ready = await idle(layer, channel, Receiver(claims=False))
    await layer.send(channel, {"type": "n", "n": 0})
    assert ready.done()
    assert (await layer.receive(channel))["n"] == 0


@pytest.mark.parametrize("queued", ["before", "from another thread"])
async def test_nothing_is_handed_over_ahead_of_a_queued_message(queued):
    layer = InMemoryChannelLayer()
    channel = await layer.new_channel()
    receiver = Receiver()
    if queued == "before":
        await layer.send(channel, {"type": "n", "n": 0})
        ready = await idle(layer, channel, receiver)
    else:
        ready = await idle(layer, channel, receiver)
        await asyncio.to_thread(asyncio.run, layer.send(channel, {"type": "n", "n": 0}))
    await layer.send(channel, {"type": "n", "n": 1})
    assert receiver.got == []
    await ready
    assert [(await layer.receive(channel))["n"] for _ in range(2)] == [0, 1]


async def test_a_message_that_cannot_be_decoded_gives_the_claim_back():
    layer = InMemoryChannelLayer()
    layer._mailboxes._decode = lambda channel, payload, receipt: layer.deserialize(b"\xc1")
    channel = await layer.new_channel()
    receiver = Receiver()
    ready = await idle(layer, channel, receiver)
    await layer.send(channel, {"type": "n", "n": 0})
    assert (receiver.got, receiver.released, ready.done()) == ([], 1, False)
    ready.cancel()


async def test_what_was_claimed_is_handled_even_if_the_fan_out_fails_after():
    layer = InMemoryChannelLayer()
    first, second = await layer.new_channel(), await layer.new_channel()
    for channel in (first, second):
        await layer.group_add("room", channel)
    receiver = Receiver()
    ready = await idle(layer, first, receiver)

    def capacity(channel):
        if channel == second:
            raise RuntimeError("no capacity for you")
        return 10

    layer.get_capacity = capacity
    with pytest.raises(RuntimeError, match="no capacity"):
        await layer.group_send("room", {"type": "n", "n": 0})
    assert [message["n"] for message in receiver.got] == [0]  # not left claimed
    ready.cancel()


async def test_an_encrypted_layers_own_messages_are_handed_over_readable(make_layer):
    """A send to the process's own channel is not sealed: handed over, it is not unsealed
    either (it was dropped as undecryptable), while one from another process is."""
    key = "a-key-for-this-test-only"
    layer, other = (make_layer(symmetric_encryption_keys=[key]) for _ in range(2))
    channel = await layer.new_channel()
    receiver = Receiver()
    ready = await idle(layer, channel, receiver)
    await layer.send(channel, {"type": "n", "from": "here"})
    await other.send(channel, {"type": "n", "from": "there"})

    async def both():
        return len(receiver.got) == 2

    await until(both, "both messages are handed over")
    assert [message["from"] for message in receiver.got] == ["here", "there"]
    ready.cancel()


async def test_a_broadcast_wakes_a_member_that_does_not_claim_and_hands_the_others():
    layer = InMemoryChannelLayer(capacity=1)
    declining, claiming, busy = [await layer.new_channel() for _ in range(3)]
    for channel in (declining, claiming, busy):
        await layer.group_add("room", channel)
    await layer.send(busy, {"type": "n", "n": -1})  # full: misses the broadcast
    woken = await idle(layer, declining, Receiver(claims=False))
    receiver = Receiver()
    ready = await idle(layer, claiming, receiver)
    await layer.group_send("room", {"type": "n", "n": 0})
    assert woken.done() and not ready.done()
    assert (await layer.receive(declining))["n"] == 0
    assert [message["n"] for message in receiver.got] == [0]
    assert (await layer.receive(busy))["n"] == -1
    ready.cancel()


async def test_claims_after_a_keyboardinterrupt_in_a_handler_are_given_back():
    """A handler's KeyboardInterrupt reaches the sender (it is not an error to swallow);
    the members claimed after it keep no claim (their consumers' turns would be held)."""
    layer = InMemoryChannelLayer()
    receivers, readies = [], []
    for _ in range(2):
        channel = await layer.new_channel()
        await layer.group_add("room", channel)
        receiver = Interrupting()
        receivers.append(receiver)
        readies.append(await idle(layer, channel, receiver))
    with pytest.raises(KeyboardInterrupt):
        await layer.group_send("room", {"type": "n", "n": 0})
    assert sorted((r.handled, r.released) for r in receivers) == [(0, 1), (1, 0)]
    for ready in readies:
        ready.cancel()


class Interrupting(Receiver):
    def __init__(self):
        super().__init__()
        self.handled = 0

    def handle(self, message):
        self.handled += 1
        raise KeyboardInterrupt
