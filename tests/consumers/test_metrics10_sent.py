"""A text frame sent is counted in place by ``SendDeadline`` (frames and UTF-8 bytes out), as
a frame received is by the consumer: no call of ``WebSocketWatch.sent`` per ASCII text
frame. What it counted must still be counted: every frame and byte sent, non-ASCII text
and binary frames (through ``sent``), the handshake and the close, and a send that
waited."""

import asyncio
import contextlib
import sys

import pytest

from consumers import metrics
from consumers.generic.websocket import AsyncWebsocketConsumer, WebsocketConsumer
from consumers.send_deadline import SendDeadline
from consumers.testing import WebsocketCommunicator


class Replies(AsyncWebsocketConsumer):
    """Answers a text frame with it, then with its UTF-8 bytes."""

    async def receive(self, text_data=None, bytes_data=None):
        await self.send(text_data=text_data)
        await self.send(bytes_data=text_data.encode())


class SyncReplies(WebsocketConsumer):
    def receive(self, text_data=None, bytes_data=None):
        self.send(text_data=text_data)
        self.send(bytes_data=text_data.encode())


def _app(cls):
    async def app(scope, receive, send):
        await metrics.serve(cls.as_asgi(), scope, receive, send)

    return app


def _counts():
    return [metrics.tally.frames_out, metrics.tally.bytes_out]


@contextlib.contextmanager
def calls_of(function):
    """The messages ``function`` (a watch's method) is called with on this thread, seen
    by a profiler: patching it would make the deadline call it."""
    messages = []

    def profile(frame, event, arg):
        if event == "call" and frame.f_code is function.__code__:
            messages.append(frame.f_locals["message"])

    sys.setprofile(profile)
    try:
        yield messages
    finally:
        sys.setprofile(None)


@pytest.mark.parametrize("cls", [Replies, SyncReplies])
async def test_frames_sent_are_counted_and_ascii_text_without_the_watchs_call(cls):
    if not metrics.enabled():
        pytest.skip("CONSUMERS_METRICS is off")
    texts = ["abc", "é€", "x" * 300]
    before = _counts()
    with calls_of(metrics.WebSocketWatch.sent) as sent:
        socket = WebsocketCommunicator(_app(cls), "/ws/")
        assert (await socket.connect())[0]
        for text in texts:
            await socket.send_to(text_data=text)
            assert await socket.receive_from() == text
            assert await socket.receive_from() == text.encode()
        await socket.disconnect()
    sizes = sum(2 * len(text.encode()) for text in texts)
    assert [b - a for a, b in zip(before, _counts(), strict=True)] == [2 * len(texts), sizes]
    # The accept, the non-ASCII text frame and the binary ones: not the ASCII text frames.
    # (The close is the communicator's: the client's, not sent.)
    assert [message.get("text") for message in sent] == [None, None, "é€", None, None]


async def test_a_replaced_sent_is_called_for_every_message(monkeypatch):
    counted = []

    async def server_send(message):
        pass

    monkeypatch.setattr(
        metrics.WebSocketWatch, "sent", lambda self, message: counted.append(message)
    )
    watch = metrics.WebSocketWatch(None, server_send)
    deadline = SendDeadline(server_send, {"type": "websocket"}, 5, counter=watch)
    await deadline({"type": "websocket.send", "text": "abc"})
    assert counted == [{"type": "websocket.send", "text": "abc"}]


async def test_a_send_that_waited_is_counted_once_done():
    if not metrics.enabled():
        pytest.skip("CONSUMERS_METRICS is off")
    go_on = asyncio.Event()

    async def server_send(message):
        await go_on.wait()

    watch = metrics.WebSocketWatch(None, server_send)
    deadline = SendDeadline(server_send, {"type": "websocket"}, 5, counter=watch)
    before = _counts()
    sending = asyncio.ensure_future(deadline({"type": "websocket.send", "text": "abcd"}))
    await asyncio.sleep(0)
    assert _counts() == before  # not sent yet
    go_on.set()
    await sending
    assert [b - a for a, b in zip(before, _counts(), strict=True)] == [1, 4]


async def test_only_a_watch_is_counted_in_place():
    # Another counter (``sent=``) is handed every message, the text frames included.
    counted = []

    async def server_send(message):
        pass

    deadline = SendDeadline(server_send, {"type": "websocket"}, 5, sent=counted.append)
    before = _counts()
    for message in ({"type": "websocket.accept"}, {"type": "websocket.send", "text": "hi"}):
        await deadline(message)
    assert [message["type"] for message in counted] == ["websocket.accept", "websocket.send"]
    assert _counts() == before
