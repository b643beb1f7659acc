"""A connection whose layer side ended it leaves no reference cycle either (see
``test_part9_no_cycles``): a layer handler that raised (a WebSocket consumer closes with
1011 and its reader raises ``StopConsumer``), one whose send found the client gone, or an
event stream a layer message finished. The connection side re-raised the reader's error
with the reader task and the error in locals of its own frame, which the error's traceback
holds: reader task -> error -> traceback -> frame -> reader task, and the consumer with it."""

import asyncio
import gc
import logging
import weakref

import pytest

from channels_layer import get_channel_layer
from consumers.exceptions import ClientGone
from consumers.generic.http import AsyncHttpConsumer
from consumers.generic.websocket import AsyncWebsocketConsumer, WebsocketConsumer
from consumers.testing import HttpCommunicator, WebsocketCommunicator

made: list = []  # weak references: the test must not keep a consumer alive


class Member(AsyncWebsocketConsumer):
    groups = ["ends.room"]

    async def connect(self):
        made.append(weakref.ref(self))
        await self.accept()

    async def ev_boom(self, message):
        raise RuntimeError("a layer handler's bug")

    async def ev_gone(self, message):
        raise ClientGone("the client has gone")


class SyncMember(WebsocketConsumer):
    groups = ["ends.room"]

    def connect(self):
        made.append(weakref.ref(self))
        self.accept()

    def ev_boom(self, message):
        raise RuntimeError("a layer handler's bug")


class Stream(AsyncHttpConsumer):
    async def handle(self, body):
        made.append(weakref.ref(self))
        await self.channel_layer.group_add("ends.stream", self.channel_name)
        await self.send_headers(headers=[(b"Content-Type", b"text/event-stream")])
        await self.send_body(b"", more_body=True)

    async def ev_last(self, message):
        await self.send_body(b"data: bye\n\n")  # the last chunk: the consumer stops


@pytest.fixture
def collector_off(monkeypatch):
    # The log capture keeps each record's exc_info, and with it the consumer's frames.
    monkeypatch.setattr(logging.getLogger("consumers.websocket"), "disabled", True)
    made.clear()
    gc.collect()
    gc.disable()
    yield
    gc.enable()


@pytest.mark.parametrize(
    ("consumer", "kind"),
    [(Member, "ev.boom"), (Member, "ev.gone"), (SyncMember, "ev.boom")],
    ids=["async-raised", "async-client-gone", "sync-raised"],
)
async def test_a_connection_its_layer_handler_ended_is_freed_without_the_collector(
    consumer, kind, collector_off
):
    socket = WebsocketCommunicator(consumer.as_asgi(), "/ws/")
    assert (await socket.connect())[0]
    await get_channel_layer().group_send("ends.room", {"type": kind})
    await socket.wait(1)  # the consumer ends by itself
    await asyncio.sleep(0.05)  # the callbacks the end scheduled
    del socket
    assert made[0]() is None


async def test_an_event_stream_a_layer_message_finished_is_freed_without_the_collector(
    collector_off,
):
    stream = HttpCommunicator(Stream.as_asgi(), "GET", "/events/")
    await stream.send_input({"type": "http.request", "body": b""})
    assert (await stream.receive_output())["status"] == 200
    assert (await stream.receive_output())["more_body"]
    await get_channel_layer().group_send("ends.stream", {"type": "ev.last"})
    assert (await stream.receive_output())["body"] == b"data: bye\n\n"
    await stream.wait(1)
    await asyncio.sleep(0.05)
    del stream
    assert made[0]() is None
