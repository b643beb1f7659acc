"""The base consumers: handler naming, dispatch, the layer channel, threads."""

import asyncio
import threading

import pytest

from channels_layer import get_channel_layer
from consumers import consumer as consumer_module
from consumers.consumer import AsyncConsumer, SyncConsumer, get_handler_name
from consumers.exceptions import StopConsumer
from consumers.testing import ApplicationCommunicator


def test_handler_name_turns_dots_into_underscores():
    assert get_handler_name({"type": "chat.message.new"}) == "chat_message_new"


@pytest.mark.parametrize(
    ("message", "complaint"),
    [
        ({"text": "no type"}, "no 'type' key"),
        ({"type": 3}, "must be a non-empty str"),
        ({"type": ""}, "must be a non-empty str"),
        ({"type": "_private.call"}, "may not start with an underscore"),
    ],
)
def test_handler_name_rejects_missing_or_malformed_type(message, complaint):
    with pytest.raises(ValueError, match=complaint):
        get_handler_name(message)


def test_handler_names_are_remembered_for_a_bounded_number_of_valid_types(monkeypatch):
    monkeypatch.setattr(consumer_module, "_names", {})
    monkeypatch.setattr(consumer_module, "NAMES_KEPT", 3)
    for n in range(10):
        assert get_handler_name({"type": f"kind.{n}"}) == f"kind_{n}"
    assert consumer_module._names == {f"kind.{n}": f"kind_{n}" for n in range(3)}
    with pytest.raises(ValueError, match="underscore"):
        get_handler_name({"type": "_kind.0"})
    assert "_kind.0" not in consumer_module._names


class Recorder(AsyncConsumer):
    prefix = "seen"

    async def websocket_connect(self, message):
        await self.send({"type": "websocket.accept"})
        await self.send({"type": "websocket.send", "text": self.channel_name})

    async def websocket_receive(self, message):
        await self.send({"type": "websocket.send", "text": f"{self.prefix}:{message['text']}"})

    async def layer_note(self, message):
        await self.send({"type": "websocket.send", "text": f"layer:{message['note']}"})

    async def websocket_disconnect(self, message):
        raise StopConsumer


def websocket_scope(path="/"):
    return {"type": "websocket", "path": path, "headers": [], "query_string": b""}


async def test_messages_are_dispatched_to_the_handler_named_by_their_type():
    app = ApplicationCommunicator(Recorder.as_asgi(prefix="got"), websocket_scope())
    await app.send_input({"type": "websocket.connect"})
    assert (await app.receive_output())["type"] == "websocket.accept"
    await app.receive_output()
    await app.send_input({"type": "websocket.receive", "text": "hello"})
    assert (await app.receive_output())["text"] == "got:hello"
    await app.send_input({"type": "websocket.disconnect", "code": 1000})
    await app.wait()


async def test_consumer_receives_messages_sent_to_its_layer_channel():
    app = ApplicationCommunicator(Recorder.as_asgi(), websocket_scope())
    await app.send_input({"type": "websocket.connect"})
    await app.receive_output()
    channel_name = (await app.receive_output())["text"]
    await get_channel_layer().send(channel_name, {"type": "layer.note", "note": "from afar"})
    assert (await app.receive_output())["text"] == "layer:from afar"
    await app.send_input({"type": "websocket.receive", "text": "still here"})
    assert (await app.receive_output())["text"] == "seen:still here"
    await app.send_input({"type": "websocket.disconnect", "code": 1000})
    await app.wait()


async def test_message_without_handler_raises_a_clear_value_error():
    app = ApplicationCommunicator(Recorder.as_asgi(), websocket_scope())
    await app.send_input({"type": "websocket.mystery"})
    with pytest.raises(ValueError, match=r"no handler for message type 'websocket\.mystery'"):
        await app.wait()


def test_as_asgi_rejects_keywords_that_are_not_class_attributes():
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        Recorder.as_asgi(colour="blue")


def test_as_asgi_keeps_the_consumer_class_for_introspection():
    app = Recorder.as_asgi(prefix="x")
    assert app.consumer_class is Recorder
    assert app.consumer_initkwargs == {"prefix": "x"}


class ThreadReporter(SyncConsumer):
    def websocket_connect(self, message):
        self.send({"type": "websocket.accept"})

    def websocket_receive(self, message):
        self.send({"type": "websocket.send", "text": threading.current_thread().name})


class AsyncThreadReporter(AsyncConsumer):
    async def websocket_connect(self, message):
        await self.send({"type": "websocket.accept"})

    async def websocket_receive(self, message):
        await self.send({"type": "websocket.send", "text": threading.current_thread().name})


async def test_sync_handlers_run_on_the_pool_and_async_handlers_on_the_loop_thread():
    loop_thread = threading.current_thread().name
    for consumer, on_pool in ((ThreadReporter, True), (AsyncThreadReporter, False)):
        app = ApplicationCommunicator(consumer.as_asgi(), websocket_scope())
        await app.send_input({"type": "websocket.connect"})
        await app.receive_output()
        await app.send_input({"type": "websocket.receive", "text": "?"})
        thread = (await app.receive_output())["text"]
        assert thread.startswith("consumers-sync") is on_pool
        assert (thread == loop_thread) is not on_pool


class SlowOnRequest(SyncConsumer):
    """Sleeps for a second when asked, echoes otherwise; counts overlapping handlers."""

    active = 0
    most_active = 0

    def websocket_connect(self, message):
        self.send({"type": "websocket.accept"})

    def websocket_receive(self, message):
        type(self).active += 1
        type(self).most_active = max(type(self).most_active, type(self).active)
        try:
            if message["text"] == "sleep":
                threading.Event().wait(1.0)
            self.send({"type": "websocket.send", "text": message["text"]})
        finally:
            type(self).active -= 1


async def connected(consumer):
    app = ApplicationCommunicator(consumer.as_asgi(), websocket_scope())
    await app.send_input({"type": "websocket.connect"})
    assert (await app.receive_output())["type"] == "websocket.accept"
    return app


async def test_a_slow_sync_handler_does_not_delay_another_connection():
    slow, quick = await connected(SlowOnRequest), await connected(SlowOnRequest)
    await slow.send_input({"type": "websocket.receive", "text": "sleep"})
    await asyncio.sleep(0.05)  # the slow handler is now blocking its thread
    loop = asyncio.get_running_loop()
    started = loop.time()
    await quick.send_input({"type": "websocket.receive", "text": "ping"})
    assert (await quick.receive_output(timeout=2))["text"] == "ping"
    assert loop.time() - started < 0.3
    assert (await slow.receive_output(timeout=2))["text"] == "sleep"


async def test_one_connections_sync_handlers_run_one_at_a_time_in_order():
    SlowOnRequest.most_active = 0
    app = await connected(SlowOnRequest)
    for index in range(20):
        await app.send_input({"type": "websocket.receive", "text": str(index)})
    echoed = [(await app.receive_output())["text"] for _ in range(20)]
    assert echoed == [str(index) for index in range(20)]
    assert SlowOnRequest.most_active == 1


class Burst(SyncConsumer):
    def websocket_connect(self, message):
        self.send({"type": "websocket.accept"})

    def websocket_receive(self, message):
        for n in range(int(message["text"])):
            self.send({"type": "websocket.send", "text": str(n)})

    def websocket_disconnect(self, message):
        raise StopConsumer


async def test_a_sync_handlers_sends_arrive_in_order_before_the_next_message_is_handled():
    app = await connected(Burst)
    await app.send_input({"type": "websocket.receive", "text": "50"})
    await app.send_input({"type": "websocket.receive", "text": "3"})
    frames = [(await app.receive_output())["text"] for _ in range(53)]
    assert frames == [str(n) for n in range(50)] + ["0", "1", "2"]


async def test_a_failed_send_from_a_sync_handler_is_logged_once(caplog):
    async def refusing_send(message):
        if message["type"] == "websocket.send":
            raise RuntimeError("socket gone")

    inputs = asyncio.Queue()
    for message in (
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": "1"},
        {"type": "websocket.disconnect", "code": 1000},
    ):
        inputs.put_nowait(message)
    app = Burst.as_asgi()
    await asyncio.wait_for(app(websocket_scope(), inputs.get, refusing_send), 2)
    failures = [r for r in caplog.records if "Could not send" in r.getMessage()]
    assert len(failures) == 1
    assert "socket gone" in caplog.text
