"""A connection whose layer side ended it leaves no reference cycle either (see
``test_part9_no_cycles``): a layer handler that raised (a WebSocket consumer closes with
1011 and its reader raises ``StopConsumer``), one whose send found the client gone, or an
event stream a layer message finished. The connection side re-raised the reader's error
with the reader task and the error in locals of its own frame, which the error's traceback
holds: reader task -> error -> traceback -> frame -> reader task, and the consumer with it.

Nor does one whose own task ended with an error (the consumer's task, as on Daphne or with
a communicator) or was cancelled: the task keeps its error, whose traceback holds the
consumer's frame, and the consumer held the task (``_connection_side``)."""

import asyncio
import gc
import logging
import weakref

import pytest

from channels_layer import get_channel_layer
from consumers.consumer import AsyncConsumer
from consumers.exceptions import ClientGone, StopConsumer
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

    async def ev_ping(self, message):
        await self.send(text_data="pong")

    async def ev_gone(self, message):
        raise ClientGone("the client has gone")


class SyncMember(WebsocketConsumer):
    groups = ["ends.room"]

    def connect(self):
        made.append(weakref.ref(self))
        self.accept()

    def ev_boom(self, message):
        raise RuntimeError("a layer handler's bug")

    def ev_ping(self, message):
        self.send(text_data="pong")


class Stream(AsyncHttpConsumer):
    async def handle(self, body):
        made.append(weakref.ref(self))
        await self.channel_layer.group_add("ends.stream", self.channel_name)
        await self.send_headers(headers=[(b"Content-Type", b"text/event-stream")])
        await self.send_body(b"", more_body=True)

    async def ev_last(self, message):
        await self.send_body(b"data: bye\n\n")  # the last chunk: the consumer stops


class Raw(AsyncConsumer):
    async def websocket_connect(self, message):
        made.append(weakref.ref(self))
        await self.send({"type": "websocket.accept"})

    async def websocket_receive(self, message):
        raise RuntimeError("a frame handler's bug")

    async def ev_ping(self, message):
        await self.send({"type": "websocket.send", "text": "pong"})


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


@pytest.mark.parametrize("layer_message", [True, False], ids=["reading", "idle"])
async def test_a_connection_whose_task_ended_with_an_error_is_freed_without_the_collector(
    layer_message, collector_off
):
    inbox: asyncio.Queue = asyncio.Queue()
    outbox: asyncio.Queue = asyncio.Queue()
    scope = {"type": "websocket", "path": "/ws/", "headers": [], "subprotocols": []}
    task = asyncio.ensure_future(Raw.as_asgi()(scope, inbox.get, outbox.put))
    await inbox.put({"type": "websocket.connect"})
    assert (await outbox.get())["type"] == "websocket.accept"
    if layer_message:  # the consumer's own channel: its layer reader starts
        channel_name = made[0]().channel_name
        await get_channel_layer().send(channel_name, {"type": "ev.ping"})
        assert (await outbox.get())["text"] == "pong"
    await inbox.put({"type": "websocket.receive", "text": "x"})
    await asyncio.wait({task})
    assert isinstance(task.exception(), RuntimeError)  # retrieved, as Daphne does
    del task
    await asyncio.sleep(0.05)
    assert made[0]() is None


@pytest.mark.parametrize("consumer", [Member, SyncMember])
@pytest.mark.parametrize("layer_message", [True, False], ids=["reading", "idle"])
async def test_a_cancelled_connection_is_freed_without_the_collector(
    consumer, layer_message, collector_off
):
    socket = WebsocketCommunicator(consumer.as_asgi(), "/ws/")
    assert (await socket.connect())[0]
    if layer_message:
        await get_channel_layer().group_send("ends.room", {"type": "ev.ping"})
        assert await socket.receive_from() == "pong"
    socket.future.cancel()
    await asyncio.gather(socket.future, return_exceptions=True)
    await asyncio.sleep(0.05)
    del socket
    assert made[0]() is None


class Stubborn(AsyncWebsocketConsumer):
    """A layer handler that swallows its cancellation, then fails (as redis-py's
    ``wait_for`` on Python 3.11 could make a reader outlive its consumer)."""

    groups = ["ends.stubborn"]
    release: asyncio.Event

    async def connect(self):
        made.append(weakref.ref(self))
        await self.accept()

    async def ev_hold(self, message):
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await type(self).release.wait()
        raise LookupError("failed after its consumer ended")


async def test_a_reader_that_outlives_its_consumer_ends_as_it_would_have(
    monkeypatch, collector_off
):
    monkeypatch.setattr("consumers.consumer.READER_STOP_TIMEOUT", 0.05)
    Stubborn.release = asyncio.Event()
    socket = WebsocketCommunicator(Stubborn.as_asgi(), "/ws/")
    assert (await socket.connect())[0]
    await get_channel_layer().group_send("ends.stubborn", {"type": "ev.hold"})
    await asyncio.sleep(0.05)
    reader = made[0]()._reading
    await socket.disconnect()  # the consumer ends without its reader
    assert not reader.done()
    Stubborn.release.set()
    await asyncio.wait({reader}, timeout=1)
    # Its handler's error, closing with 1011 (logged), not the consumer's missing task.
    assert isinstance(reader.exception(), StopConsumer)
