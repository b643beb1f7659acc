"""A send to a client that has left: ASGI servers may raise OSError (Uvicorn does).

That is a disconnect, not a crash: the consumer runs ``disconnect()`` once, leaves its
groups and ends quietly, sync or async.
"""

import asyncio
import logging

import pytest

from channels_layer import get_channel_layer
from consumers.generic.websocket import AsyncJsonWebsocketConsumer, JsonWebsocketConsumer

disconnects: list[tuple[type, int]] = []


class AsyncRoom(AsyncJsonWebsocketConsumer):
    groups = ["room"]

    async def room_message(self, event):
        await self.send_json(event["text"])

    async def disconnect(self, code):
        disconnects.append((type(self), code))


class SyncRoom(JsonWebsocketConsumer):
    groups = ["room"]

    def room_message(self, event):
        self.send_json(event["text"])
        self.send_json("and another, after the client has gone")

    def disconnect(self, code):
        disconnects.append((type(self), code))


@pytest.mark.parametrize("consumer", [AsyncRoom, SyncRoom])
async def test_a_send_after_the_client_left_runs_the_disconnect_path(consumer, caplog):
    disconnects.clear()
    inbox: asyncio.Queue = asyncio.Queue()
    sent = []
    client_gone = asyncio.Event()

    async def send(message):
        if client_gone.is_set():
            raise ConnectionResetError("the client closed the connection")
        sent.append(message)

    scope = {"type": "websocket", "path": "/ws/", "headers": [], "subprotocols": []}
    app = asyncio.create_task(consumer.as_asgi()(scope, inbox.get, send))
    await inbox.put({"type": "websocket.connect"})
    async with asyncio.timeout(2):
        while not sent:
            await asyncio.sleep(0.01)
    assert sent[0]["type"] == "websocket.accept"

    client_gone.set()
    layer = get_channel_layer()
    with caplog.at_level(logging.INFO):
        await layer.group_send("room", {"type": "room.message", "text": "hello?"})
        await asyncio.wait_for(app, 2)  # ends by itself, without an exception

    assert disconnects == [(consumer, 1006)]
    assert layer._groups.live_members("room") == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
