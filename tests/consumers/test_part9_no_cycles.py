"""A closed connection leaves no reference cycle: its consumer, turn, layer reader and the
reader's cancelled task are freed when the connection ends, not by the next full garbage
collection (which, after a storm of closed connections, walks every one of them)."""

import asyncio
import gc
import weakref

import pytest

from channels_layer import get_channel_layer
from consumers.generic.websocket import AsyncWebsocketConsumer, WebsocketConsumer
from consumers.testing import WebsocketCommunicator


class Quiet(AsyncWebsocketConsumer):
    groups = ["cycles.room"]
    made: list = []  # weak references: the test must not keep the consumer alive

    async def connect(self):
        type(self).made.append(weakref.ref(self))
        await self.accept()

    async def ev_ping(self, message):
        await self.send(text_data="pong")


class SyncQuiet(WebsocketConsumer):
    groups = ["cycles.room"]
    made: list = []

    def connect(self):
        type(self).made.append(weakref.ref(self))
        self.accept()

    def ev_ping(self, message):
        self.send(text_data="pong")


@pytest.fixture
def collector_off():
    gc.collect()
    gc.disable()
    yield
    gc.enable()


@pytest.mark.parametrize("consumer", [Quiet, SyncQuiet])
@pytest.mark.parametrize("layer_message", [True, False], ids=["reading", "idle"])
async def test_a_closed_connection_is_freed_without_the_collector(
    consumer, layer_message, collector_off
):
    socket = WebsocketCommunicator(consumer.as_asgi(), "/ws/")
    assert (await socket.connect())[0]
    made = consumer.made.pop()
    if layer_message:  # starts the consumer's layer reader (an eager one, if async)
        await get_channel_layer().group_send("cycles.room", {"type": "ev.ping"})
        assert await socket.receive_from() == "pong"
        assert made()._reading is not None
    await socket.disconnect()
    await asyncio.sleep(0.05)  # the callbacks the end scheduled
    del socket
    assert made() is None, gc.get_referrers(made())
