"""A process's ``send`` to one of its own consumer channels: counted in Redis against the
channel's capacity like any other (one round trip), put straight into its mailbox instead
of travelling through the inbox, and never ahead of what the process queued in its inbox
before."""

import asyncio
import time

import pytest

from channels_layer.exceptions import ChannelFull
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


async def test_its_own_channel_skips_the_inbox_and_shares_the_capacity(make_layer, scripts_run):
    layer, other = make_layer(capacity=2), make_layer(capacity=2)
    channel = await layer.new_channel()
    await start_reading(layer, channel)
    scripts_run.clear()
    await layer.send(channel, {"type": "n", "n": 0})
    await layer.send(channel, {"type": "n", "n": 1})
    assert scripts_run == ["count_here", "count_here"]
    # Full for everyone: this process and another one count against the same capacity.
    with pytest.raises(ChannelFull):
        await layer.send(channel, {"type": "n", "n": 2})
    with pytest.raises(ChannelFull):
        await other.send(channel, {"type": "n", "n": 2})
    assert (await receive(layer, channel))["n"] == 0

    async def room_for_another():  # the count is lowered with the next batch, or just after
        try:
            await other.send(channel, {"type": "n", "n": 2})
        except ChannelFull:
            return False
        return True

    await until(room_for_another, "taking a message frees its place")
    assert [(await receive(layer, channel))["n"] for _ in range(2)] == [1, 2]


async def test_what_it_queued_in_its_own_inbox_is_not_overtaken(make_layer):
    layer = make_layer()
    channel = await layer.new_channel()  # nothing reads the inbox yet: sends queue there
    for n in range(50):
        await layer.send(channel, {"type": "n", "n": n})
    first = await receive(layer, channel)  # the inbox reader starts
    for n in range(50, 100):  # while what it queued may still be on its way
        await layer.send(channel, {"type": "n", "n": n})
    rest = [(await receive(layer, channel))["n"] for _ in range(99)]
    assert [first["n"], *rest] == list(range(100))


async def test_a_message_to_its_own_channel_expires_as_any_other(make_layer):
    layer = make_layer(expiry=1)
    channel = await layer.new_channel()
    await start_reading(layer, channel)
    await layer.send(channel, {"type": "n", "n": "stale"})
    await asyncio.sleep(1.2)
    await layer.send(channel, {"type": "n", "n": "fresh"})
    assert (await receive(layer, channel))["n"] == "fresh"


async def test_a_cancelled_send_to_its_own_channel_is_still_delivered(make_layer):
    """As a cancelled send to another process is: once its script is on its way, the
    message is counted, so it must reach the mailbox (or the count would leak)."""
    layer = make_layer(capacity=1)
    channel = await layer.new_channel()
    await start_reading(layer, channel)
    sending = asyncio.ensure_future(layer.send(channel, {"type": "n", "n": 1}))
    await asyncio.sleep(0)  # the script call is queued
    await asyncio.sleep(0)  # and written
    sending.cancel()
    assert (await receive(layer, channel))["n"] == 1
