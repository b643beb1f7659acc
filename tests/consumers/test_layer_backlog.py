"""A consumer with both a frame backlog and a layer-channel backlog.

The layer messages already waiting go before the next frame, up to
``LAYER_MESSAGES_PER_TURN``, so a socket busy posting keeps up with its room (one broadcast
per post let a chat socket's channel fill up in the Redis outage drill); each source keeps
its order, and frames still get their turn after that many.
"""

from __future__ import annotations

import asyncio

import pytest

from channels_layer import get_channel_layer
from consumers.consumer import LAYER_MESSAGES_PER_TURN, AsyncConsumer, SyncConsumer
from consumers.exceptions import StopConsumer
from consumers.testing import ApplicationCommunicator

gate: asyncio.Event


class Busy(AsyncConsumer):
    """Echoes frames and layer notes; the frame "hold" waits for ``gate``."""

    async def websocket_connect(self, message):
        await self.send({"type": "websocket.accept"})
        await self.send({"type": "websocket.send", "text": self.channel_name})

    async def websocket_receive(self, message):
        if message["text"] == "hold":
            await gate.wait()
        await self.send({"type": "websocket.send", "text": message["text"]})

    async def room_note(self, message):
        await self.send({"type": "websocket.send", "text": message["note"]})

    async def websocket_disconnect(self, message):
        raise StopConsumer


class SyncBusy(SyncConsumer):
    """``Busy`` with sync handlers (each message a hop to the pool)."""

    def websocket_connect(self, message):
        self.send({"type": "websocket.accept"})
        self.send({"type": "websocket.send", "text": self.channel_name})

    def websocket_receive(self, message):
        if message["text"] == "hold":
            asyncio.run_coroutine_threadsafe(gate.wait(), loop).result()
        self.send({"type": "websocket.send", "text": message["text"]})

    def room_note(self, message):
        self.send({"type": "websocket.send", "text": message["note"]})

    def websocket_disconnect(self, message):
        raise StopConsumer


@pytest.mark.parametrize("consumer", [Busy, SyncBusy])
async def test_waiting_layer_messages_go_before_the_next_frame_up_to_a_bound(consumer):
    global gate, loop
    gate, loop = asyncio.Event(), asyncio.get_running_loop()
    app = ApplicationCommunicator(consumer.as_asgi(), {"type": "websocket", "path": "/"})
    await app.send_input({"type": "websocket.connect"})
    assert (await app.receive_output())["type"] == "websocket.accept"
    channel = (await app.receive_output())["text"]
    layer = get_channel_layer()
    notes = [f"note-{n}" for n in range(LAYER_MESSAGES_PER_TURN + 8)]
    frames = ["frame-1", "frame-2", "frame-3"]

    await app.send_input({"type": "websocket.receive", "text": "hold"})
    await asyncio.sleep(0.05)  # "hold" is being handled: what comes now piles up
    for text in frames:
        await app.send_input({"type": "websocket.receive", "text": text})
    for note in notes:
        await layer.send(channel, {"type": "room.note", "note": note})
    await asyncio.sleep(0.05)
    gate.set()
    order = [(await app.receive_output(timeout=5))["text"] for _ in range(1 + 3 + len(notes))]

    # What was waiting on the layer, up to the bound, then a frame; the rest of the layer's
    # (all waiting when the next layer turn came), then the other frames.
    first = LAYER_MESSAGES_PER_TURN
    expected = ["hold", *notes[:first], "frame-1", *notes[first:], "frame-2", "frame-3"]
    assert order == expected
    await app.send_input({"type": "websocket.disconnect", "code": 1000})
    await app.wait()
