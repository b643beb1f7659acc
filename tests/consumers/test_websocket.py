"""The generic WebSocket consumers, sync and async, driven through the ASGI protocol."""

import asyncio
import json
import logging
import time
from typing import ClassVar

import pytest

from channels_layer import get_channel_layer
from channels_layer.memory import InMemoryChannelLayer
from consumers.exceptions import AcceptConnection, DenyConnection
from consumers.generic.websocket import (
    AsyncJsonWebsocketConsumer,
    AsyncWebsocketConsumer,
    JsonWebsocketConsumer,
    WebsocketConsumer,
    parse_json,
)
from consumers.testing import WebsocketCommunicator


class SyncEcho(WebsocketConsumer):
    groups = ["lobby"]
    disconnects: list = []

    def connect(self):
        wanted = self.scope["subprotocols"]
        if "deny" in wanted:
            raise DenyConnection
        if "raise-accept" in wanted:
            raise AcceptConnection
        self.accept(wanted[0] if wanted else None, headers=[("x-served-by", "sync")])

    def receive(self, text_data=None, bytes_data=None):
        if text_data == "close":
            self.close(4001, "asked to")
        elif text_data == "crash":
            raise RuntimeError("boom")
        elif text_data == "send-nothing":
            self.send()
        elif text_data == "bye":
            self.send(text_data="bye", close=4002)
        elif text_data is not None:
            self.send(text_data=f"text:{text_data!r}")
        else:
            self.send(bytes_data=b"bytes:" + bytes_data)

    def room_message(self, message):
        self.send(text_data=f"room:{message['text']}")

    def disconnect(self, code):
        type(self).disconnects.append(code)


class AsyncEcho(AsyncWebsocketConsumer):
    groups = ["lobby"]
    disconnects: list = []

    async def connect(self):
        wanted = self.scope["subprotocols"]
        if "deny" in wanted:
            raise DenyConnection
        if "raise-accept" in wanted:
            raise AcceptConnection
        await self.accept(wanted[0] if wanted else None, headers=[("x-served-by", "async")])

    async def receive(self, text_data=None, bytes_data=None):
        if text_data == "close":
            await self.close(4001, "asked to")
        elif text_data == "crash":
            raise RuntimeError("boom")
        elif text_data == "send-nothing":
            await self.send()
        elif text_data == "bye":
            await self.send(text_data="bye", close=4002)
        elif text_data is not None:
            await self.send(text_data=f"text:{text_data!r}")
        else:
            await self.send(bytes_data=b"bytes:" + bytes_data)

    async def room_message(self, message):
        await self.send(text_data=f"room:{message['text']}")

    async def disconnect(self, code):
        type(self).disconnects.append(code)


@pytest.fixture(params=[SyncEcho, AsyncEcho], ids=["sync", "async"])
def echo(request):
    request.param.disconnects = []
    return request.param


async def open_socket(consumer, subprotocols=None):
    socket = WebsocketCommunicator(consumer.as_asgi(), "/ws/", subprotocols=subprotocols)
    accepted, _ = await socket.connect()
    assert accepted
    return socket


async def test_accept_sends_the_chosen_subprotocol_and_headers(echo):
    socket = WebsocketCommunicator(echo.as_asgi(), "/ws/", subprotocols=["v2.chat"])
    await socket.send_input({"type": "websocket.connect"})
    accept = await socket.receive_output()
    assert accept["subprotocol"] == "v2.chat"
    assert (b"x-served-by", echo.__name__.removesuffix("Echo").lower().encode()) in accept[
        "headers"
    ]
    await socket.disconnect()


async def test_deny_connection_rejects_the_handshake(echo):
    socket = WebsocketCommunicator(echo.as_asgi(), "/ws/", subprotocols=["deny"])
    assert await socket.connect() == (False, 1000)


async def test_accept_connection_exception_accepts(echo):
    socket = WebsocketCommunicator(echo.as_asgi(), "/ws/", subprotocols=["raise-accept"])
    assert await socket.connect() == (True, None)
    await socket.disconnect()


async def test_text_and_binary_frames_reach_receive_as_such(echo):
    socket = await open_socket(echo)
    await socket.send_to(text_data="hi")
    assert await socket.receive_from() == "text:'hi'"
    await socket.send_to(bytes_data=b"\x00\xff")
    assert await socket.receive_from() == b"bytes:\x00\xff"
    await socket.disconnect()


async def test_an_empty_text_frame_is_a_frame_not_missing_data(echo):
    socket = await open_socket(echo)
    await socket.send_to(text_data="")
    assert await socket.receive_from() == "text:''"
    await socket.disconnect()


async def test_close_sends_code_and_reason(echo):
    socket = await open_socket(echo)
    await socket.send_to(text_data="close")
    assert await socket.receive_close() == (4001, "asked to")
    await socket.disconnect()


async def test_send_with_close_sends_the_frame_then_closes(echo):
    socket = await open_socket(echo)
    await socket.send_to(text_data="bye")
    assert await socket.receive_from() == "bye"
    assert (await socket.receive_close())[0] == 4002
    await socket.disconnect()


async def test_disconnect_calls_the_hook_with_the_code_and_ends_the_consumer(echo):
    socket = await open_socket(echo)
    await socket.disconnect(code=4321)
    assert echo.disconnects == [4321]


async def test_groups_are_joined_on_connect_and_left_on_disconnect(echo):
    layer = get_channel_layer()
    first, second = await open_socket(echo), await open_socket(echo)
    await layer.group_send("lobby", {"type": "room.message", "text": "hello all"})
    assert await first.receive_from() == "room:hello all"
    assert await second.receive_from() == "room:hello all"
    await first.disconnect()
    await layer.group_send("lobby", {"type": "room.message", "text": "second only"})
    assert await second.receive_from() == "room:second only"
    await second.disconnect()


async def test_handler_exception_closes_that_connection_with_1011_and_logs_once(echo, caplog):
    crashing, bystander = await open_socket(echo), await open_socket(echo)
    with caplog.at_level(logging.ERROR, logger="consumers"):
        await crashing.send_to(text_data="crash")
        assert (await crashing.receive_close())[0] == 1011
        await crashing.wait()
    crashes = [record for record in caplog.records if "crashed" in record.getMessage()]
    assert len(crashes) == 1
    assert "RuntimeError: boom" in caplog.text
    assert echo.disconnects == [1011]
    await bystander.send_to(text_data="still fine?")
    assert await bystander.receive_from() == "text:'still fine?'"
    await bystander.disconnect()


async def test_send_without_data_is_a_handler_error(echo):
    socket = await open_socket(echo)
    await socket.send_to(text_data="send-nothing")
    assert (await socket.receive_close())[0] == 1011


class SyncJson(JsonWebsocketConsumer):
    def receive_json(self, content, **kwargs):
        self.send_json({"got": content})


class AsyncJson(AsyncJsonWebsocketConsumer):
    async def receive_json(self, content, **kwargs):
        await self.send_json({"got": content})


@pytest.fixture(params=[SyncJson, AsyncJson], ids=["sync", "async"])
def json_echo(request):
    return request.param


async def test_json_round_trip(json_echo):
    socket = await open_socket(json_echo)
    await socket.send_json_to({"n": [1, 2.5, None, "é"]})
    assert await socket.receive_json_from() == {"got": {"n": [1, 2.5, None, "é"]}}
    await socket.disconnect()


@pytest.mark.parametrize(
    ("frame", "code", "reason"),
    [
        ({"text_data": "{not json"}, 1007, "invalid JSON"),
        ({"text_data": "[" * 100_000 + "]" * 100_000}, 1007, "nested too deeply"),
        ({"bytes_data": b'{"a": 1}'}, 1003, "binary frame"),
    ],
    ids=["invalid", "too-deep", "binary"],
)
async def test_bad_json_frames_close_only_that_connection(json_echo, caplog, frame, code, reason):
    bad, good = await open_socket(json_echo), await open_socket(json_echo)
    with caplog.at_level(logging.WARNING, logger="consumers"):
        await bad.send_to(**frame)
        closed_with, why = await bad.receive_close()
    assert closed_with == code
    assert reason in why
    assert len([r for r in caplog.records if r.name == "consumers.websocket"]) == 1
    await good.send_json_to({"ok": True})
    assert await good.receive_json_from() == {"got": {"ok": True}}
    await good.disconnect()


async def test_groups_without_a_channel_layer_fail_clearly(settings):
    settings.CHANNEL_LAYERS = {}
    socket = WebsocketCommunicator(AsyncEcho.as_asgi(), "/ws/")
    assert await socket.connect() == (False, 1011)


@pytest.mark.parametrize(
    ("text", "code", "reason"),
    [
        ("1" * 5000, 1007, "integer too long"),
        ("[" * 129 + "]" * 129, 1007, "nested more than 128"),
        ('{"a": NaN}', 1007, "NaN is not JSON"),
    ],
    ids=["digits", "depth-129", "nan"],
)
async def test_json_past_the_limits_closes_with_1007_and_a_short_reason(
    json_echo, caplog, text, code, reason
):
    socket = await open_socket(json_echo)
    with caplog.at_level(logging.WARNING, logger="consumers"):
        await socket.send_to(text_data=text)
        closed_with, why = await socket.receive_close()
    assert (closed_with, reason in why) == (code, True), why
    assert len(why.encode()) <= 123
    assert len([r for r in caplog.records if r.name == "consumers.websocket"]) == 1
    assert not any(record.exc_info for record in caplog.records)


async def test_json_nested_to_the_limit_is_accepted(json_echo):
    socket = await open_socket(json_echo)
    await socket.send_to(text_data='{"a": ' + "[" * 127 + '"]]"' + "]" * 127 + "}")
    assert (await socket.receive_json_from())["got"]["a"][0][0][0] is not None
    await socket.disconnect()


@pytest.mark.parametrize("consumer", [SyncJson, AsyncJson, SyncEcho, AsyncEcho])
async def test_a_frame_over_max_frame_size_closes_with_1009_before_decoding(consumer, caplog):
    socket = WebsocketCommunicator(consumer.as_asgi(max_frame_size=1024), "/ws/")
    assert (await socket.connect())[0]
    await socket.send_to(text_data='"' + "é" * 511 + '"')  # 1,024 bytes: at the limit
    assert await socket.receive_output() is not None
    with caplog.at_level(logging.WARNING, logger="consumers"):
        await socket.send_to(text_data="é" * 600)  # 600 characters, 1,200 bytes
        await socket.send_to(bytes_data=b"x" * 2000)  # arrives before the close: dropped
        closed_with, why = await socket.receive_close()
    assert (closed_with, why) == (1009, "frame over 1024 bytes")
    assert len([r for r in caplog.records if r.name == "consumers.websocket"]) == 1
    assert await socket.receive_nothing()
    await socket.disconnect()


async def test_max_frame_size_defaults_to_none_as_on_channels():
    assert AsyncJsonWebsocketConsumer.max_frame_size is None
    assert WebsocketConsumer.max_frame_size is None


class RefusedClose(AsyncJsonWebsocketConsumer):
    groups = ["refused"]
    disconnects: list = []

    async def disconnect(self, code):
        type(self).disconnects.append(code)


async def test_disconnect_runs_and_groups_are_left_when_the_server_refuses_the_close(caplog):
    """A server that raises on websocket.close (as Daphne does for 1007 unadapted): the
    consumer still runs disconnect() and leaves its groups, and ends."""
    inbox: asyncio.Queue = asyncio.Queue()
    accepted = asyncio.Event()

    async def send(message):
        if message["type"] == "websocket.accept":
            accepted.set()
        if message["type"] == "websocket.close":
            raise RuntimeError(f"close code {message['code']} refused")

    scope = {"type": "websocket", "path": "/ws/", "headers": [], "subprotocols": []}
    running = asyncio.ensure_future(RefusedClose.as_asgi()(scope, inbox.get, send))
    await inbox.put({"type": "websocket.connect"})
    await asyncio.wait_for(accepted.wait(), 2)  # its groups are joined before it accepts
    layer = get_channel_layer()
    assert len(layer._groups.live_members("refused")) == 1
    with caplog.at_level(logging.WARNING, logger="consumers"):
        await inbox.put({"type": "websocket.receive", "text": "{not json"})
        await asyncio.wait_for(running, 2)
    assert RefusedClose.disconnects == [1011]
    assert layer._groups.live_members("refused") == []
    assert any("refused to close" in record.getMessage() for record in caplog.records)


def best_of(function, argument, runs=5):
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        function(argument)
        times.append(time.perf_counter() - started)
    return min(times)


WORST_1_MIB = "[" + ",".join(["[]"] * 349_000) + "]"


@pytest.mark.parametrize(
    ("frame", "most"),
    [
        (WORST_1_MIB, 1.5),
        ("[" + ",".join(["[" * 127 + "]" * 127] * 4100) + "]", 1.5),
        # Empty dicts are the cheapest containers to decode (never tracked by the garbage
        # collector), so the text scan weighs more: about 1.2-1.6x here.
        ("[" + ",".join(["{}"] * 349_000) + "]", 2.0),
    ],
    ids=["empty-lists", "127-deep", "empty-dicts"],
)
def test_a_1_mib_json_frame_costs_what_the_decoder_costs(frame, most):
    """No pass over the decoded content: the loop time is json.loads's, as a ratio."""
    assert len(frame) > 1_000_000
    ratio = best_of(parse_json, frame) / best_of(json.loads, frame)
    print(f"parse_json / json.loads on {len(frame) >> 10} KiB: {ratio:.2f}")
    assert ratio < most


def test_strings_full_of_brackets_cost_less_than_the_worst_frame():
    """Cheap to decode, so the scan of the strings weighs more than the decoder (about 3x
    json.loads here), yet such a frame stays below the worst one (about a quarter)."""
    frame = json.dumps(['a[b{c\\"'] * 80_000)
    assert len(frame) > 1_000_000
    strings, worst = best_of(parse_json, frame), best_of(json.loads, WORST_1_MIB)
    print(
        f"1 MiB of strings with brackets: {strings * 1000:.1f} ms; worst frame's decoding "
        f"{worst * 1000:.1f} ms"
    )
    assert strings < worst


class StubbornLayer(InMemoryChannelLayer):
    """A layer whose receive() swallows its first cancellation, as redis-py's can on
    Python 3.11 (CPython gh-86296)."""

    stuck: ClassVar[list] = []

    async def when_ready(self, channel):
        return None  # so the reader parks in receive(), not on a when_ready future

    async def receive(self, channel):
        try:
            return await super().receive(channel)
        except asyncio.CancelledError:
            type(self).stuck.append(asyncio.current_task())
            await asyncio.sleep(3600)
            raise


async def test_a_layer_reader_that_swallows_its_cancellation_cannot_hold_the_consumer(
    settings, caplog
):
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "tests.consumers.test_websocket.StubbornLayer"}
    }
    socket = WebsocketCommunicator(AsyncEcho.as_asgi(), "/ws/")
    assert (await socket.connect())[0]
    layer = get_channel_layer()
    await layer.group_send("lobby", {"type": "room.message", "text": "hi"})
    assert await socket.receive_from() == "room:hi"  # the reader task runs from here on
    started = time.monotonic()
    try:
        with caplog.at_level(logging.WARNING, logger="consumers"):
            await socket.disconnect(timeout=5)
        assert time.monotonic() - started < 4
        assert any("did not stop" in record.getMessage() for record in caplog.records)
    finally:
        for task in StubbornLayer.stuck:
            task.cancel()
