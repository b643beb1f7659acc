"""The async consumers' frame path skips the coroutines of hooks still at their defaults,
so every hook a subclass overrides (in the class, in a mixin, as a classmethod or a plain
method), patches on a class at any time or sets on an instance must still run, and the
JSON helpers must give exactly what the stdlib gives."""

import asyncio
import functools
import json
import math
import time
import types
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers import metrics
from consumers.consumer import AsyncConsumer
from consumers.generic import websocket
from consumers.generic.jsonframes import dump_json, parse_json
from consumers.generic.websocket import AsyncJsonWebsocketConsumer, AsyncWebsocketConsumer
from consumers.testing import WebsocketCommunicator
from consumers.turn import Turn
from tests.fuzzing import json_values


async def echo_json(consumer, content):
    socket = WebsocketCommunicator(consumer.as_asgi(), "/ws/")
    accepted, _ = await socket.connect()
    assert accepted
    await socket.send_to(text_data=json.dumps(content))
    reply = await socket.receive_from()
    await socket.disconnect()
    return reply


class JsonEcho(AsyncJsonWebsocketConsumer):
    async def receive_json(self, content, **kwargs):
        await self.send_json(content)


class Marked(JsonEcho):
    @classmethod
    async def decode_json(cls, text_data):
        return {"decoded": json.loads(text_data)}


class MarkedPlain(JsonEcho):
    async def decode_json(self, text_data):  # a plain method, not a classmethod
        return {"plain": json.loads(text_data)}


class Encoded(JsonEcho):
    @classmethod
    async def encode_json(cls, content):
        return "encoded:" + json.dumps(content)


class SendOverride(JsonEcho):
    async def send(self, text_data=None, bytes_data=None, close=False):
        await super().send(text_data="sent:" + text_data, close=close)


class ReceiveOverride(JsonEcho):
    async def receive(self, text_data=None, bytes_data=None):
        await super().receive(text_data=text_data.replace("1", "2"))


class WebsocketReceiveOverride(JsonEcho):
    async def websocket_receive(self, message):
        await super().websocket_receive({**message, "text": message["text"].replace("1", "3")})


class DecodeMixin:
    @classmethod
    async def decode_json(cls, text_data):
        return {"mixin": json.loads(text_data)}


class FromMixin(DecodeMixin, JsonEcho):
    pass


class DispatchMixin(AsyncConsumer):
    """A ``dispatch`` after ``WebsocketProtocol``'s in the class's order."""

    async def dispatch(self, message):
        if message.get("text") is not None:
            message = {**message, "text": message["text"].replace("1", "4")}
        await super().dispatch(message)


class DispatchAfterProtocol(JsonEcho, DispatchMixin):
    pass


class DispatchOverride(JsonEcho):
    async def dispatch(self, message):
        if message.get("text") is not None:
            message = {**message, "text": message["text"].replace("1", "5")}
        await super().dispatch(message)


@pytest.mark.parametrize(
    ("consumer", "reply"),
    [
        (JsonEcho, '{"n": 1}'),
        (Marked, '{"decoded": {"n": 1}}'),
        (MarkedPlain, '{"plain": {"n": 1}}'),
        (Encoded, 'encoded:{"n": 1}'),
        (SendOverride, 'sent:{"n": 1}'),
        (ReceiveOverride, '{"n": 2}'),
        (WebsocketReceiveOverride, '{"n": 3}'),
        (FromMixin, '{"mixin": {"n": 1}}'),
        (DispatchAfterProtocol, '{"n": 4}'),
        (DispatchOverride, '{"n": 5}'),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else None,
)
async def test_every_overridden_json_hook_runs(consumer, reply):
    assert await echo_json(consumer, {"n": 1}) == reply


class TextEcho(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        await self.send(text_data=text_data)


class TextWebsocketReceive(TextEcho):
    async def websocket_receive(self, message):
        await self.receive(text_data="websocket_receive:" + message["text"])


class TextDispatchAfterProtocol(TextEcho, DispatchMixin):
    pass


@pytest.mark.parametrize(
    ("consumer", "reply"),
    [
        (TextEcho, "x1"),
        (TextWebsocketReceive, "websocket_receive:x1"),
        (TextDispatchAfterProtocol, "x4"),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else None,
)
async def test_an_overridden_websocket_receive_or_dispatch_runs(consumer, reply):
    socket = WebsocketCommunicator(consumer.as_asgi(), "/ws/")
    assert (await socket.connect())[0]
    await socket.send_to(text_data="x1")
    assert await socket.receive_from() == reply
    await socket.disconnect()


# Hooks replaced after the class was made, as Channels users' tests do -------------------

# The library's own hooks, kept before any test patches them.
BASE_DISPATCH = AsyncConsumer.dispatch
BASE_SEND = AsyncConsumer.send


async def replaced_websocket_receive(self, message):
    await self.receive(text_data=message["text"].replace("1", "2"))


async def replaced_base_dispatch(self, message):
    if message.get("text") is not None:
        message = {**message, "text": message["text"].replace("1", "3")}
    await BASE_DISPATCH(self, message)


async def replaced_base_send(self, message):
    if message["type"] == "websocket.send":
        message = {**message, "text": message["text"].replace("1", "4")}
    await BASE_SEND(self, message)


async def replaced_send(self, text_data=None, bytes_data=None, close=False):
    await BASE_SEND(self, {"type": "websocket.send", "text": "sent:" + text_data})


def replacements(consumer, text):
    """Each hook a frame's way may skip, replaced on the consumer's class and on the
    library's classes that define it, and the reply to ``text`` then."""
    json_frames = issubclass(consumer, AsyncJsonWebsocketConsumer)
    cases = [
        (consumer, "websocket_receive", replaced_websocket_receive, text.replace("1", "2")),
        (
            AsyncWebsocketConsumer,
            "websocket_receive",
            replaced_websocket_receive,
            text.replace("1", "2"),
        ),
        (AsyncConsumer, "dispatch", replaced_base_dispatch, text.replace("1", "3")),
        (AsyncConsumer, "send", replaced_base_send, text.replace("1", "4")),
    ]
    if json_frames:
        replaced = text.replace("1", "2")
        cases.append(
            (AsyncJsonWebsocketConsumer, "websocket_receive", replaced_websocket_receive, replaced)
        )
        for target in (consumer, AsyncJsonWebsocketConsumer, AsyncWebsocketConsumer):
            cases.append((target, "send", replaced_send, "sent:" + text))
        for target in (consumer, AsyncJsonWebsocketConsumer):
            cases += [
                (target, "decode_json", mock.AsyncMock(return_value={"d": 1}), '{"d": 1}'),
                (target, "encode_json", mock.AsyncMock(return_value="encoded"), "encoded"),
            ]
    return [
        pytest.param(
            consumer,
            target,
            name,
            new,
            text,
            reply,
            id=f"{consumer.__name__}-{target.__name__}.{name}",
        )
        for target, name, new, reply in cases
    ]


@pytest.mark.parametrize(
    ("consumer", "target", "name", "new", "text", "reply"),
    replacements(TextEcho, "x1") + replacements(JsonEcho, '{"n": 1}'),
)
async def test_a_hook_patched_on_a_class_after_it_was_made_runs(
    consumer, target, name, new, text, reply
):
    with mock.patch.object(target, name, new):
        assert await exchange(consumer.as_asgi(), text) == reply
    # Unpatched again, the default is back.
    assert await exchange(consumer.as_asgi(), text) == text


async def exchange(app, text):
    socket = WebsocketCommunicator(app, "/ws/")
    assert (await socket.connect())[0]
    await socket.send_to(text_data=text)
    reply = await socket.receive_from()
    await socket.disconnect()
    return reply


def with_hook(consumer, name, new):
    """An application whose consumer instances get ``new`` as their attribute ``name``."""

    async def app(scope, receive, send):
        instance = consumer()
        setattr(instance, name, types.MethodType(new, instance))
        await instance(scope, receive, send)

    return app


@pytest.mark.parametrize(
    ("consumer", "name", "new", "text", "reply"),
    [
        (TextEcho, "websocket_receive", replaced_websocket_receive, "x1", "x2"),
        (JsonEcho, "websocket_receive", replaced_websocket_receive, '{"n": 1}', '{"n": 2}'),
        (JsonEcho, "send", replaced_send, '{"n": 1}', 'sent:{"n": 1}'),
    ],
    ids=["TextEcho.websocket_receive", "JsonEcho.websocket_receive", "JsonEcho.send"],
)
async def test_a_hook_set_on_the_instance_runs(consumer, name, new, text, reply):
    assert await exchange(with_hook(consumer, name, new), text) == reply


async def test_mocks_set_on_the_instance_are_called():
    """``consumer.decode_json = AsyncMock(...)`` and the like, as Channels honours them."""
    instances = []

    async def app(scope, receive, send):
        instance = JsonEcho()
        instance.decode_json = mock.AsyncMock(return_value={"decoded": 1})
        instance.encode_json = mock.AsyncMock(return_value="encoded")
        instance.send = mock.AsyncMock()
        instances.append(instance)
        await instance(scope, receive, send)

    socket = WebsocketCommunicator(app, "/ws/")
    assert (await socket.connect())[0]
    await socket.send_to(text_data='{"n": 1}')
    assert await socket.receive_nothing()  # the mocked send sent nothing
    await socket.disconnect()
    (instance,) = instances
    instance.decode_json.assert_awaited_once_with('{"n": 1}')
    instance.encode_json.assert_awaited_once_with({"decoded": 1})
    instance.send.assert_awaited_once_with(text_data="encoded", close=False)


async def test_a_mock_patched_on_the_class_sees_the_frame():
    with mock.patch.object(JsonEcho, "send", new_callable=mock.AsyncMock) as send:
        socket = WebsocketCommunicator(JsonEcho.as_asgi(), "/ws/")
        assert (await socket.connect())[0]
        await socket.send_to(text_data='{"n": 1}')
        assert await socket.receive_nothing()
        await socket.disconnect()
    send.assert_awaited_once_with(text_data='{"n": 1}', close=False)


class Helpers(AsyncConsumer):
    """A mixin after ``WebsocketProtocol`` in the class's order, with no ``dispatch``."""


class TextWithHelpers(TextEcho, Helpers):
    pass


async def test_a_dispatch_patched_on_a_mixin_after_the_protocol_runs():
    with mock.patch.object(Helpers, "dispatch", replaced_base_dispatch):
        assert await exchange(TextWithHelpers.as_asgi(), "x1") == "x3"
    assert await exchange(TextWithHelpers.as_asgi(), "x1") == "x1"


async def test_the_default_json_hooks_still_work_when_called_directly():
    """The defaults themselves still work when called directly (Channels code does)."""
    assert await AsyncJsonWebsocketConsumer.decode_json('{"a": [1]}') == {"a": [1]}
    assert await AsyncJsonWebsocketConsumer.encode_json({"a": [1]}) == '{"a": [1]}'


async def test_a_long_frame_is_still_paced(monkeypatch):
    """Frames long enough to take PACE_ABOVE to decode go through the clock: here every
    frame is, and every frame takes longer than the (tiny) limit."""
    monkeypatch.setattr(websocket, "PACE_ABOVE", 1e-12)
    slept = []
    real_sleep = asyncio.sleep

    async def recording_sleep(delay, *args):
        slept.append(delay)
        return await real_sleep(delay, *args)

    monkeypatch.setattr(websocket.asyncio, "sleep", recording_sleep)
    assert await echo_json(JsonEcho, {"n": 1}) == '{"n": 1}'
    assert len(slept) == 1


async def test_a_short_frame_with_the_default_decoder_is_not_timed(monkeypatch):
    calls = []
    clock = types.SimpleNamespace(perf_counter=lambda: calls.append(1) or time.perf_counter())
    monkeypatch.setattr(websocket, "time", clock)  # the module's clock, not the metrics'
    assert await echo_json(JsonEcho, {"n": 1}) == '{"n": 1}'
    assert calls == []
    # An overridden decode_json is timed: its cost is not known.
    assert await echo_json(Marked, {"n": 1}) == '{"decoded": {"n": 1}}'
    assert len(calls) == 2


# The JSON helpers ------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_dump_json_is_json_dumps(value):
    assert dump_json(value) == json.dumps(value)


@pytest.mark.parametrize(
    "value",
    ["plain", "é\u2028", 1.5, math.inf, -math.nan, 10**30, None, True, [], {}, {1: 2, None: 3}],
)
def test_dump_json_is_json_dumps_for_odd_values(value):
    assert dump_json(value) == json.dumps(value)


def test_dump_json_raises_as_json_dumps_and_keeps_working():
    circular: list = []
    circular.append(circular)
    for bad, error in [(circular, ValueError), ({"a": {1, 2}}, TypeError), ({(1,): 1}, TypeError)]:
        with pytest.raises(error) as ours:
            dump_json(bad)
        with pytest.raises(error) as stdlib:
            json.dumps(bad)
        assert str(ours.value) == str(stdlib.value)


def test_a_failed_dump_json_leaves_nothing_behind_for_the_next():
    """The encoder's table of open containers keeps what a failed call was inside: an
    encoder reused after a failure would call those same containers circular later."""
    content = {"a": [1, {2}]}
    for _ in range(3):
        with pytest.raises(TypeError):
            dump_json(content)
    content["a"][1] = 2
    assert dump_json(content) == '{"a": [1, 2]}'


def stdlib_parse(text):
    try:
        return ("ok", json.JSONDecoder(parse_constant=_refuse).decode(text))
    except json.JSONDecodeError as error:
        return ("error", f"invalid JSON: {error.msg} at char {error.pos}")


def _refuse(constant):
    raise ValueError(f"{constant} is not JSON")


def ours(text):
    try:
        return ("ok", parse_json(text))
    except ValueError as error:
        return ("error", str(error))


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        json_values.map(json.dumps),
        st.tuples(
            st.text(" \t\r\n", max_size=3),
            json_values.map(json.dumps),
            st.text(" \t\r\nx,", max_size=3),
        ).map("".join),
        st.text(' \t\r\n[]{}",:0123456789.-eEtruefalsn', max_size=12),
    )
)
def test_parse_json_is_the_stdlib_decoder(text):
    assert ours(text) == stdlib_parse(text)


async def test_the_turn_goes_to_waiters_in_order_and_past_cancelled_ones():
    turn = Turn()
    assert turn.take_now()
    order = []

    async def wait(name):
        await turn.take()
        order.append(name)
        turn.release()

    first, second, third = (asyncio.ensure_future(wait(name)) for name in "abc")
    await asyncio.sleep(0)
    second.cancel()
    await asyncio.sleep(0)
    turn.release()
    await asyncio.gather(first, third)
    assert order == ["a", "c"]
    assert second.cancelled()
    assert turn.take_now()  # free again
    turn.release()


async def test_a_waiter_cancelled_after_being_handed_the_turn_passes_it_on():
    turn = Turn()
    assert turn.take_now()
    handed = asyncio.ensure_future(turn.take())
    after = asyncio.ensure_future(turn.take())
    await asyncio.sleep(0)
    turn.release()  # to ``handed``, which is cancelled before it runs
    handed.cancel()
    await after
    assert handed.cancelled()
    turn.release()
    assert not turn.held


async def test_frames_are_counted_once_when_the_consumer_counts_for_the_watch():
    """The consumer reads the server's own receive and its send deadline the server's own
    send, running the metrics watch's counts itself: each frame counted once, both ways."""
    if not metrics.enabled():
        pytest.skip("CONSUMERS_METRICS is off")
    tally = metrics.tally
    app = functools.partial(metrics.serve, TextEcho.as_asgi())
    before = (tally.frames_in, tally.frames_out, tally.bytes_in, tally.bytes_out, tally.open)
    socket = WebsocketCommunicator(app, "/ws/")
    assert (await socket.connect())[0]
    assert tally.open == before[4] + 1
    for text in ("abc", "é"):
        await socket.send_to(text_data=text)
        assert await socket.receive_from() == text
    await socket.disconnect()
    after = (tally.frames_in, tally.frames_out, tally.bytes_in, tally.bytes_out, tally.open)
    assert [b - a for a, b in zip(before, after, strict=True)] == [2, 2, 5, 5, 0]


class SendLogger(AsyncConsumer):
    """A mixin placed after the protocol that sees every ASGI message sent, as the next
    ``send`` of ``AsyncWebsocketConsumer``'s ``super().send`` on Channels."""

    async def send(self, message):
        self.logged.append(message["type"])
        await super().send(message)


@pytest.mark.parametrize("base", [AsyncWebsocketConsumer, AsyncJsonWebsocketConsumer])
async def test_a_send_mixin_after_the_protocol_sees_accept_frames_and_close(base):
    logged = []

    class Logged(base, SendLogger):
        async def connect(self):
            self.logged = logged
            await self.accept()

        async def receive(self, text_data=None, bytes_data=None):
            if base is AsyncJsonWebsocketConsumer:
                await self.send_json({"echo": text_data}, close=True)
            else:
                await self.send(text_data=text_data, close=True)

        async def receive_json(self, content, **kwargs):
            await self.send_json(content, close=True)

    socket = WebsocketCommunicator(Logged.as_asgi(), "/ws/")
    assert (await socket.connect())[0]
    await socket.send_to(text_data='"hi"')
    await socket.receive_from()
    await socket.wait()
    assert logged == ["websocket.accept", "websocket.send", "websocket.close"]
