"""A frame on the usual path (the turn free, the handler ending normally, a text frame)
takes the consumer's turn, times its handler and counts its bytes in place: no call of
``Turn.take_now``/``release``, ``_Handling.ended``, ``metrics.handling`` or ``_size`` per
frame (each a Python call on every echo frame). What they did must still happen: the
handler histogram gets one observation a frame, the byte counts are the same, a frame
that finds the turn taken waits for it, and a worker's job is still counted."""

import asyncio
import json
from unittest import mock

import pytest

from consumers import metrics
from consumers.consumer import AsyncConsumer
from consumers.generic.websocket import (
    AsyncJsonWebsocketConsumer,
    AsyncWebsocketConsumer,
    WebsocketConsumer,
)
from consumers.testing import WebsocketCommunicator
from consumers.turn import Turn


class TextEcho(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        await self.send(text_data=text_data)


class JsonEcho(AsyncJsonWebsocketConsumer):
    async def receive_json(self, content, **kwargs):
        await self.send_json(content)


class SyncEcho(WebsocketConsumer):
    def receive(self, text_data=None, bytes_data=None):
        self.send(text_data=text_data)


class Typed(AsyncConsumer):
    """A plain ``AsyncConsumer`` (its own ``dispatch``), for the same path there."""

    async def websocket_connect(self, message):
        await self.send({"type": "websocket.accept"})

    async def websocket_receive(self, message):
        await self.send({"type": "websocket.send", "text": message["text"]})

    async def websocket_disconnect(self, message):
        from consumers.exceptions import StopConsumer

        raise StopConsumer


def _observations(cls):
    """The handler histogram's count for ``cls``."""
    name = f"{cls.__module__}.{cls.__qualname__}"
    counts, _ = metrics.HANDLER_SECONDS.labels(name).read()
    return sum(counts)


async def _echo(cls, texts):
    socket = WebsocketCommunicator(metrics_app(cls), "/ws/")
    assert (await socket.connect())[0]
    replies = []
    for text in texts:
        await socket.send_to(text_data=text)
        replies.append(await socket.receive_from())
    await socket.disconnect()
    return replies


def metrics_app(cls):
    async def app(scope, receive, send):
        await metrics.serve(cls.as_asgi(), scope, receive, send)

    return app


@pytest.mark.parametrize(
    ("cls", "texts"),
    [
        (TextEcho, ["abc", "é", "x" * 100]),
        (JsonEcho, ['{"a": 1}', '["é"]', "[1, 2, 3]"]),
        (SyncEcho, ["abc", "é"]),
        (Typed, ["abc", "é"]),
    ],
)
async def test_a_usual_frame_makes_none_of_the_calls_done_in_place(cls, texts):
    if not metrics.enabled():
        pytest.skip("CONSUMERS_METRICS is off")
    tally = metrics.tally
    watched = {
        name: mock.patch.object(owner, attribute, autospec=True, side_effect=original)
        for name, owner, attribute, original in [
            ("take_now", Turn, "take_now", Turn.take_now),
            ("release", Turn, "release", Turn.release),
            ("ended", metrics._Handling, "ended", metrics._Handling.ended),
        ]
    }
    size_calls = []
    real_size = metrics._size

    def counted_size(message):
        size_calls.append(message.get("type"))
        return real_size(message)

    before_obs = _observations(cls)
    before = (tally.frames_in, tally.frames_out, tally.bytes_in, tally.bytes_out)
    with (
        watched["take_now"] as take_now,
        watched["release"] as release,
        watched["ended"] as ended,
        mock.patch.object(metrics, "_size", counted_size),
    ):
        replies = await _echo(cls, texts)
        frame_calls = (take_now.call_count, release.call_count, ended.call_count)
    if cls is JsonEcho:
        assert [json.loads(r) for r in replies] == [json.loads(t) for t in texts]
    else:
        assert replies == texts
    # No call per frame; the connect and the disconnect may take the slow ways.
    assert frame_calls[0] == 0
    assert frame_calls[1] == 0
    assert frame_calls[2] <= 2  # connect and disconnect (StopConsumer), not the frames
    # _size only for what is not ASCII (an encoding to count its UTF-8 bytes).
    assert sorted(size_calls) == sorted(
        ["websocket.receive"] * sum(not t.isascii() for t in texts)
        + ["websocket.send"] * sum(not r.isascii() for r in replies)
    )
    # What the calls did is still done: one observation a frame (and the connect's and
    # disconnect's), the frames and their UTF-8 bytes counted both ways.
    assert _observations(cls) - before_obs == len(texts) + 2
    after = (tally.frames_in, tally.frames_out, tally.bytes_in, tally.bytes_out)
    sent = [r.encode() for r in replies]
    expected = [
        len(texts),
        len(texts),
        sum(len(t.encode()) for t in texts),
        sum(len(s) for s in sent),
    ]
    assert [b - a for a, b in zip(before, after, strict=True)] == expected


async def test_binary_frames_are_still_counted_by_their_bytes():
    if not metrics.enabled():
        pytest.skip("CONSUMERS_METRICS is off")

    class BytesEcho(AsyncWebsocketConsumer):
        async def receive(self, text_data=None, bytes_data=None):
            await self.send(bytes_data=bytes_data)

    tally = metrics.tally
    before = (tally.bytes_in, tally.bytes_out)
    socket = WebsocketCommunicator(metrics_app(BytesEcho), "/ws/")
    assert (await socket.connect())[0]
    await socket.send_to(bytes_data=b"\x00\x01\x02")
    assert await socket.receive_from() == b"\x00\x01\x02"
    await socket.disconnect()
    assert (tally.bytes_in - before[0], tally.bytes_out - before[1]) == (3, 3)


async def test_a_frame_that_finds_the_turn_taken_waits_for_it():
    """The layer side holds the turn: the frame is handled only once it is released, and
    the layer side sees that a frame waits meanwhile."""
    handled = []
    seen_waiting = []

    class Holder(AsyncWebsocketConsumer):
        async def receive(self, text_data=None, bytes_data=None):
            handled.append(text_data)
            await self.send(text_data=text_data)

    socket = WebsocketCommunicator(Holder.as_asgi(), "/ws/")
    assert (await socket.connect())[0]
    await asyncio.sleep(0.01)
    consumer = _consumer_of(Holder)
    turn = consumer._turn
    assert turn.take_now()  # the layer side's turn, say
    await socket.send_to(text_data="one")
    await asyncio.sleep(0.05)
    assert handled == []
    seen_waiting.append(consumer._frame_waiting)
    turn.release()
    assert await socket.receive_from() == "one"
    assert handled == ["one"]
    assert seen_waiting == [True]
    assert consumer._frame_waiting is False
    assert not turn.held
    await socket.disconnect()


def _consumer_of(cls):
    import gc

    found = [o for o in gc.get_objects() if type(o) is cls]
    assert len(found) == 1
    return found[0]


async def test_a_job_timer_still_counts_its_jobs():
    """A timer for worker jobs (``job``) still goes through ``ended``, which counts."""
    if not metrics.enabled():
        pytest.skip("CONSUMERS_METRICS is off")

    class Job(AsyncConsumer):
        async def work_item(self, message):
            pass

    consumer = Job()
    consumer.scope = {"type": "channel", "channel": "jobs"}
    done = metrics._jobs_done
    before = done._value.get()
    await consumer.dispatch({"type": "work.item"})
    assert done._value.get() == before + 1
