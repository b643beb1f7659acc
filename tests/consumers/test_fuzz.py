"""Fuzzing the generic WebSocket consumers with Hypothesis: the async and sync JSON consumers
answer every generated frame (tests/fuzzing.py) with its echo or the close it must get (1003
binary frame, 1007 invalid JSON), and the async and sync text consumers echo every frame
exactly, invalid UTF-8 and lone surrogates included. A bystander connection to the same
consumer class must still work after every batch; nothing may be logged at ERROR or above.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as fuzz_settings
from hypothesis import strategies as st

from consumers.generic.websocket import (
    MAX_JSON_DEPTH,
    AsyncJsonWebsocketConsumer,
    AsyncWebsocketConsumer,
    JsonWebsocketConsumer,
    WebsocketConsumer,
)
from consumers.testing import WebsocketCommunicator
from tests.fuzzing import (
    FUZZ,
    JSON_FRAMES,
    SURROGATE,
    TEXT_FRAMES,
    TIMEOUT,
    Close,
    assert_no_errors_since,
    close_quietly,
    closed,
    is_utf8,
    json_frames,
    label,
    parse,
    text_frames,
)


def json_echo_answer(frame: str | bytes) -> Any:
    content, close = parse(frame)
    return close or json.dumps(content)


class AsyncJsonEcho(AsyncJsonWebsocketConsumer):
    async def receive_json(self, content, **kwargs):
        await self.send_json(content)


class SyncJsonEcho(JsonWebsocketConsumer):
    def receive_json(self, content, **kwargs):
        self.send_json(content)


class AsyncEcho(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        await self.send(text_data=text_data, bytes_data=bytes_data)


class SyncEcho(WebsocketConsumer):
    def receive(self, text_data=None, bytes_data=None):
        self.send(text_data=text_data, bytes_data=bytes_data)


class EchoPair:
    """A fuzzed connection and a bystander to the same consumer class."""

    def __init__(self, consumer) -> None:
        self.app = consumer.as_asgi()
        self.fuzzed: WebsocketCommunicator | None = None
        self.bystander: WebsocketCommunicator | None = None

    async def connect(self) -> WebsocketCommunicator:
        socket = WebsocketCommunicator(self.app, "/ws/echo/")
        assert (await socket.connect(timeout=TIMEOUT))[0]
        return socket

    async def open(self) -> None:
        self.fuzzed, self.bystander = await self.connect(), await self.connect()

    async def close(self) -> None:
        for socket in (self.fuzzed, self.bystander):
            await close_quietly(socket)

    async def recover(self) -> None:
        """A fresh fuzzed connection if a failed example (run again by Hypothesis to report
        it) left this one in an unknown state."""
        if self.fuzzed.future.done() or not await self.fuzzed.receive_nothing(0):
            await close_quietly(self.fuzzed)
            self.fuzzed = await self.connect()

    async def exchange(self, data: str | bytes, expected: Any) -> None:
        """Send a frame and assert the one answer: the echo ``expected`` or a ``Close``."""
        if isinstance(data, bytes):
            await self.fuzzed.send_to(bytes_data=data)
        else:
            await self.fuzzed.send_to(text_data=data)
        message = await self.fuzzed.receive_output(TIMEOUT)
        if isinstance(expected, Close):
            assert message["type"] == "websocket.close", (data[:200], message)
            assert closed(message) == expected, (data[:200], message)
            await close_quietly(self.fuzzed)
            self.fuzzed = await self.connect()
            return
        assert message["type"] == "websocket.send", (data[:200], message)
        if isinstance(expected, str):
            assert message.get("text") == expected and message.get("bytes") is None
        else:
            assert message.get("bytes") == expected and message.get("text") is None
        assert await self.fuzzed.receive_nothing(0)

    async def check_bystander(self, number: int) -> None:
        assert await self.bystander.receive_nothing(0)
        frame = json.dumps({"type": "message", "text": f"still here {number}"})
        await self.bystander.send_to(text_data=frame)
        assert await self.bystander.receive_from(TIMEOUT) == frame
        assert await self.bystander.receive_nothing(0)


@pytest.fixture
async def json_consumers():
    pairs = [EchoPair(AsyncJsonEcho), EchoPair(SyncJsonEcho)]
    for pair in pairs:
        await pair.open()
    yield pairs
    for pair in pairs:
        await pair.close()


@pytest.fixture
async def text_consumers():
    pairs = [EchoPair(AsyncEcho), EchoPair(SyncEcho)]
    for pair in pairs:
        await pair.open()
    yield pairs
    for pair in pairs:
        await pair.close()


@pytest.mark.sends(frames=JSON_FRAMES)
@fuzz_settings(FUZZ, max_examples=30)
@given(batch=st.lists(json_frames, min_size=50, max_size=60))
async def test_json_consumers_answer_every_frame(json_consumers, tally, caplog, batch):
    """The async and the sync JSON consumer each get every frame."""
    start = len(caplog.records)
    for pair in json_consumers:
        await pair.recover()
    for frame in batch:
        expected = json_echo_answer(frame.data)
        if isinstance(frame.claim, Close):
            assert expected == frame.claim, (frame.data[:200], expected)
        for pair in json_consumers:
            await pair.exchange(frame.data, expected)
            tally["frames"] += 1
            tally[label(expected) if isinstance(expected, Close) else "echoed"] += 1
            tally[f"kind: {frame.kind}"] += 1
    for pair in json_consumers:
        await pair.check_bystander(tally["frames"])
    assert_no_errors_since(caplog, start)


@pytest.mark.sends(frames=TEXT_FRAMES)
@fuzz_settings(FUZZ, max_examples=30)
@given(batch=st.lists(text_frames, min_size=60, max_size=70))
async def test_text_consumers_echo_every_frame(text_consumers, tally, caplog, batch):
    """The async and the sync text consumer each echo every frame."""
    start = len(caplog.records)
    for pair in text_consumers:
        await pair.recover()
    for data in batch:
        for pair in text_consumers:
            await pair.exchange(data, data)
            tally["frames"] += 1
            tally["bytes" if isinstance(data, bytes) else "text"] += 1
            if isinstance(data, bytes) and not is_utf8(data):
                tally["invalid UTF-8 bytes"] += 1
            if isinstance(data, str) and SURROGATE.search(data):
                tally["text with lone surrogates"] += 1
            if len(data) >= 1_000_000:
                tally["1-2 MB"] += 1
    for pair in text_consumers:
        await pair.check_bystander(tally["frames"])
    assert_no_errors_since(caplog, start)


@pytest.mark.parametrize("consumer", [AsyncJsonEcho, SyncJsonEcho])
async def test_a_json_consumer_echoes_or_refuses_every_nesting_depth(consumer, caplog):
    """Ever deeper frames on one connection: each is echoed up to MAX_JSON_DEPTH, and the
    first one deeper is refused with 1007 (never a 1011 crash)."""
    socket = WebsocketCommunicator(consumer.as_asgi(), "/ws/echo/")
    assert (await socket.connect(timeout=TIMEOUT))[0]
    for depth in range(MAX_JSON_DEPTH - 20, 1200):
        frame = "[" * depth + "]" * depth
        await socket.send_to(text_data=frame)
        message = await socket.receive_output(TIMEOUT)
        if message["type"] == "websocket.close":
            break
        assert message["text"] == frame
    await close_quietly(socket)
    assert message["code"] == 1007, f"{depth} levels: {message}"
    assert depth == MAX_JSON_DEPTH + 1
    assert_no_errors_since(caplog, 0)
