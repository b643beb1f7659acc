"""``base_send``: the connection's own send, as Channels' consumers have it (an async
consumer awaits it, a sync consumer's handler calls it), which demultiplexers and
hand-written consumers use to send raw ASGI messages."""

import pytest

from consumers.consumer import AsyncConsumer, SyncConsumer
from consumers.exceptions import StopConsumer
from consumers.generic.websocket import AsyncWebsocketConsumer, WebsocketConsumer
from consumers.testing import WebsocketCommunicator


class AsyncRaw(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        await self.base_send({"type": "websocket.send", "text": "raw:" + text_data})


class SyncRaw(WebsocketConsumer):
    def receive(self, text_data=None, bytes_data=None):
        self.base_send({"type": "websocket.send", "text": "raw:" + text_data})
        self.send(text_data="after")  # in order with the consumer's own sends


class BareAsync(AsyncConsumer):
    async def websocket_connect(self, message):
        await self.base_send({"type": "websocket.accept"})

    async def websocket_receive(self, message):
        await self.base_send({"type": "websocket.send", "text": "raw:" + message["text"]})

    async def websocket_disconnect(self, message):
        raise StopConsumer


class BareSync(SyncConsumer):
    def websocket_connect(self, message):
        self.base_send({"type": "websocket.accept"})

    def websocket_receive(self, message):
        self.base_send({"type": "websocket.send", "text": "raw:" + message["text"]})

    def websocket_disconnect(self, message):
        raise StopConsumer


@pytest.mark.parametrize("consumer", [AsyncRaw, SyncRaw, BareAsync, BareSync])
async def test_base_send_sends_a_raw_asgi_message(consumer):
    socket = WebsocketCommunicator(consumer.as_asgi(), "/ws/")
    accepted, _ = await socket.connect()
    assert accepted
    await socket.send_to(text_data="hi")
    assert await socket.receive_from() == "raw:hi"
    if consumer is SyncRaw:
        assert await socket.receive_from() == "after"
    await socket.disconnect()


async def test_setting_base_send_reroutes_an_async_consumers_sends():
    seen = []

    class Spied(AsyncWebsocketConsumer):
        async def connect(self):
            send = self.base_send

            async def spy(message):
                seen.append(message["type"])
                await send(message)

            self.base_send = spy
            await self.accept()

        async def receive(self, text_data=None, bytes_data=None):
            await self.send(text_data=text_data)

    socket = WebsocketCommunicator(Spied.as_asgi(), "/ws/")
    assert (await socket.connect())[0]
    await socket.send_to(text_data="hi")
    assert await socket.receive_from() == "hi"
    await socket.disconnect()
    assert seen == ["websocket.accept", "websocket.send"]


async def test_setting_base_send_reroutes_a_sync_consumers_sends():
    seen = []

    class Spied(WebsocketConsumer):
        def connect(self):
            send = self.base_send

            def spy(message):
                seen.append(message["type"])
                send(message)

            self.base_send = spy
            self.accept()

        def receive(self, text_data=None, bytes_data=None):
            self.send(text_data=text_data)

    socket = WebsocketCommunicator(Spied.as_asgi(), "/ws/")
    assert (await socket.connect())[0]
    await socket.send_to(text_data="hi")
    assert await socket.receive_from() == "hi"
    await socket.disconnect()
    assert seen == ["websocket.accept", "websocket.send"]
