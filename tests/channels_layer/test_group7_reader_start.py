"""A Redis ``receive()`` that finds a message already queued in this process still makes
sure the inbox reader runs: a consumer whose own process keeps its channel busy must still
get what other processes send it (before 2b14d5d's follow-up it never did while the local
backlog lasted: their messages waited in Redis until they expired, their senders got
``ChannelFull``)."""

import asyncio
import time


async def test_other_processes_messages_arrive_while_local_ones_are_queued(make_layer):
    here, there = make_layer(), make_layer()
    channel = await here.new_channel()
    await there.send(channel, {"type": "remote"})  # waits in this process's Redis inbox
    await here.send(channel, {"type": "local", "n": 0})
    received = []
    deadline = time.monotonic() + 1.5
    n = 0
    while time.monotonic() < deadline and {"type": "remote"} not in received:
        n += 1
        await here.send(channel, {"type": "local", "n": n})  # the process keeps it busy
        received.append(await asyncio.wait_for(here.receive(channel), 2))
        await asyncio.sleep(0.01)
    assert {"type": "remote"} in received
