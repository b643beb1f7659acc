"""A group fan-out's claim of an idle eager receiver (``Mailboxes.put_many``, which checks
the usual first waiter itself and leaves the rest to ``_idle_receiver``): who is handed the
message, who is woken, and in which order."""

import asyncio
import threading

from channels_layer.memory import InMemoryChannelLayer
from channels_layer.ready import offer_eagerly


class Receiver:
    def __init__(self, claims=True):
        self.claims = claims
        self.claimed = 0
        self.got = []

    def claim(self):
        self.claimed += 1
        return self.claims

    def handle(self, message):
        self.got.append(message["n"])
        return False

    def release(self):
        raise AssertionError("nothing is dropped here")


async def test_members_that_claim_are_handed_the_rest_woken_with_it_queued():
    layer = InMemoryChannelLayer()
    eager, refusing = Receiver(), Receiver(claims=False)
    channels = [await layer.new_channel() for _ in range(3)]
    for channel in channels:
        await layer.group_add("room", channel)
    handed = await layer.when_ready(channels[0])
    assert offer_eagerly(handed, eager)
    refused = await layer.when_ready(channels[1])
    assert offer_eagerly(refused, refusing)
    plain = await layer.when_ready(channels[2])  # no eager receiver: woken

    await layer.group_send("room", {"type": "m", "n": 1})
    assert eager.got == [1] and not handed.done()  # handed, still waiting for the next
    assert refusing.claimed == 1 and refusing.got == [] and refused.done()
    assert plain.done()
    assert (await layer.receive(channels[1]))["n"] == 1
    assert (await layer.receive(channels[2]))["n"] == 1

    await layer.group_send("room", {"type": "m", "n": 2})  # the eager one again
    assert eager.got == [1, 2] and eager.claimed == 2
    handed.cancel()


async def test_a_member_with_a_message_queued_is_not_handed_the_next():
    layer = InMemoryChannelLayer()
    channel = await layer.new_channel()
    await layer.group_add("room", channel)
    await layer.send(channel, {"type": "m", "n": 0})  # nobody waits: queued
    receiver = Receiver()
    ready = await layer.when_ready(channel)  # done at once: a message is queued
    offer_eagerly(ready, receiver)
    await layer.group_send("room", {"type": "m", "n": 1})
    assert receiver.claimed == 0 and receiver.got == []
    assert [(await layer.receive(channel))["n"] for _ in range(2)] == [0, 1]


async def test_a_member_waiting_on_another_loop_is_woken_there_not_handed():
    layer = InMemoryChannelLayer()
    channel = await layer.new_channel()
    await layer.group_add("room", channel)
    receiver = Receiver()
    waiting, found = threading.Event(), {}

    async def other_loop():
        ready = await layer.when_ready(channel)
        offer_eagerly(ready, receiver)
        waiting.set()
        await asyncio.wait_for(ready, 3)
        found["woken"] = True

    thread = threading.Thread(target=asyncio.run, args=(other_loop(),))
    thread.start()
    assert await asyncio.to_thread(waiting.wait, 3)
    await layer.group_send("room", {"type": "m", "n": 1})
    await asyncio.to_thread(thread.join, 5)
    assert found == {"woken": True}
    assert receiver.claimed == 0 and receiver.got == []
    assert (await layer.receive(channel))["n"] == 1
