"""Guards for any shortcut on an async frame's way (part 9 tried one in
``AsyncConsumer.__call__``, measured it and left it out: see
bench/results/issue20/part9-frame.md): a dispatch override or patch still sees every
frame, a handler's error closes with 1011 once, logs once and counts once, StopConsumer
ends quietly, and a consumer without a channel layer echoes."""

import logging
from unittest import mock

from channels_layer import channel_layers
from consumers import metrics
from consumers.exceptions import StopConsumer
from consumers.generic import protocol
from consumers.generic.websocket import AsyncWebsocketConsumer
from consumers.testing import WebsocketCommunicator


class Echo(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        await self.send(text_data=text_data)


class Crashes(AsyncWebsocketConsumer):
    disconnected: list[int] = []

    async def receive(self, text_data=None, bytes_data=None):
        raise RuntimeError("boom")

    async def disconnect(self, code):
        self.disconnected.append(code)


class Stops(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        raise StopConsumer


class SuperDispatch(Echo):
    seen: list[str] = []

    async def dispatch(self, message):
        self.seen.append(message["type"])
        await super().dispatch(message)


async def test_a_dispatch_override_calling_super_sees_every_frame():
    SuperDispatch.seen = []
    socket = WebsocketCommunicator(SuperDispatch.as_asgi(), "/ws/")
    assert (await socket.connect())[0]
    await socket.send_to(text_data="x")
    assert await socket.receive_from() == "x"
    await socket.disconnect()
    assert SuperDispatch.seen[:2] == ["websocket.connect", "websocket.receive"]


async def test_a_dispatch_patched_on_the_class_or_set_on_the_instance_runs_for_frames():
    real = protocol.WebsocketProtocol.dispatch
    seen = []

    async def spy(self, message):
        seen.append(message["type"])
        await real(self, message)

    with mock.patch.object(Echo, "dispatch", spy):
        socket = WebsocketCommunicator(Echo.as_asgi(), "/ws/")
        assert (await socket.connect())[0]
        await socket.send_to(text_data="x")
        assert await socket.receive_from() == "x"
        await socket.disconnect()
    assert seen.count("websocket.receive") == 1


async def test_a_crash_on_the_frame_way_closes_with_1011_logs_and_counts_once(caplog):
    Crashes.disconnected = []
    name = f"{Crashes.__module__}.{Crashes.__qualname__}"
    errors = metrics.HANDLER_ERRORS.labels(name)
    before = errors._value.get()
    socket = WebsocketCommunicator(Crashes.as_asgi(), "/ws/")
    assert (await socket.connect())[0]
    with caplog.at_level(logging.ERROR, logger="consumers.websocket"):
        await socket.send_to(text_data="x")
        closed = await socket.receive_output()
        assert closed == {"type": "websocket.close", "code": 1011}
        await socket.wait()
    crashes = [r for r in caplog.records if "crashed handling" in r.getMessage()]
    assert len(crashes) == 1
    assert crashes[0].exc_info is not None and crashes[0].exc_info[0] is RuntimeError
    assert "'websocket.receive'" in crashes[0].getMessage()
    assert Crashes.disconnected == [1011]
    if metrics.enabled():
        assert errors._value.get() - before == 1
    assert await socket.receive_nothing()


async def test_stop_consumer_from_receive_ends_the_connection_quietly(caplog):
    socket = WebsocketCommunicator(Stops.as_asgi(), "/ws/")
    assert (await socket.connect())[0]
    with caplog.at_level(logging.WARNING):
        await socket.send_to(text_data="x")
        await socket.wait()
    assert not [r for r in caplog.records if "crashed" in r.getMessage()]


async def test_the_frame_way_without_a_channel_layer(settings):
    settings.CHANNEL_LAYERS = {}
    channel_layers.reset()
    socket = WebsocketCommunicator(Echo.as_asgi(), "/ws/")
    assert (await socket.connect())[0]
    for text in ("x", "y"):
        await socket.send_to(text_data=text)
        assert await socket.receive_from() == text
    await socket.disconnect()
