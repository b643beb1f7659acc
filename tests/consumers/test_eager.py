"""Eager dispatch (consumers.eager): a layer message for an idle consumer is handled in the
sender's call, as the consumer's reader task would have handled it."""

import asyncio
import contextvars
import time

import pytest

from channels_layer import get_channel_layer
from channels_layer.metrics import CALL_SECONDS
from consumers.consumer import AsyncConsumer
from consumers.exceptions import StopConsumer
from consumers.generic.websocket import AsyncWebsocketConsumer, WebsocketConsumer
from consumers.testing import ApplicationCommunicator, WebsocketCommunicator

who = contextvars.ContextVar("who", default="unset")


class Member(AsyncWebsocketConsumer):
    """Records what its layer handlers see; ``gate`` holds a handler that waits."""

    groups = ["room"]
    log: list = []
    instances: list = []
    gate: asyncio.Event

    async def connect(self):
        type(self).instances.append(self)
        await self.accept()

    async def receive(self, text_data=None, bytes_data=None):
        self.log.append(("frame", text_data))
        if text_data == "wait":
            await self.gate.wait()
        self.log.append(("frame done", text_data))

    async def ev_quick(self, message):
        self.log.append(("quick", message["n"], asyncio.current_task(), who.get()))
        who.set(f"handler {message['n']}")
        await self.send(text_data=f"quick {message['n']}")

    async def ev_wait(self, message):
        task = asyncio.current_task()
        self.log.append(("wait", message["n"], task))
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.log.append(("cancelled", message["n"], asyncio.current_task() is task))
            raise
        self.log.append(("waited", message["n"], asyncio.current_task() is task))
        await self.send(text_data=f"waited {message['n']}")

    async def ev_timeout(self, message):
        try:
            async with asyncio.timeout(0.05):
                await asyncio.sleep(5)
        except TimeoutError:
            self.log.append(("timed out",))
        await self.send(text_data="timed out")

    async def ev_raise(self, message):
        raise RuntimeError("boom in a handler")

    async def ev_slow(self, message):
        time.sleep(0.1)  # CPU a handler spends without suspending
        self.log.append(("slow",))

    async def ev_stop(self, message):
        raise StopConsumer

    async def ev_forward(self, message):
        layer = get_channel_layer()
        await layer.group_send("others", {"type": "ev.quick", "n": message["n"]})
        self.log.append(("forwarded", message["n"], len(Other.log)))


class Other(Member):
    groups = ["others"]
    log: list = []


class Both(Member):
    groups = ["room", "others"]
    log: list = []

    async def ev_forward(self, message):
        self.log.append(("outer", message["n"]))


class Historian(Member):
    groups = ["hist.room"]
    log: list = []

    async def ev_quick(self, message):
        position = await self.channel_layer.group_position("hist.room")
        self.log.append(("position", position.offset))
        await self.send(text_data=f"quick {message['n']}")


class SyncMember(WebsocketConsumer):
    groups = ["room"]
    log: list = []

    def connect(self):
        Member.instances.append(self)
        self.accept()

    def ev_quick(self, message):
        self.log.append(("quick", message["n"]))
        self.send(text_data=f"quick {message['n']}")


@pytest.fixture(autouse=True)
def fresh_logs():
    for cls in (Member, Other, Both, Historian, SyncMember):
        cls.log = []
    Member.instances = []
    Member.gate = asyncio.Event()


async def connected(consumer=Member):
    socket = WebsocketCommunicator(consumer.as_asgi(), "/ws/")
    assert (await socket.connect())[0]
    # The first layer message starts the reader task (before, an idle consumer has none).
    channel = Member.instances[-1].channel_name
    await get_channel_layer().send(channel, {"type": "ev.quick", "n": 0})
    assert await socket.receive_from() == "quick 0"
    consumer.log.clear()
    return socket


async def test_an_idle_consumer_handles_a_broadcast_within_group_send():
    sockets = [await connected() for _ in range(3)]
    layer = get_channel_layer()
    sender = asyncio.current_task()
    who.set("sender")
    await layer.group_send("room", {"type": "ev.quick", "n": 1})
    # Handled already, each as its own consumer's reader task and in its context.
    assert [entry[:2] for entry in Member.log] == [("quick", 1)] * 3
    readers = {consumer._reading for consumer in Member.instances}
    assert {entry[2] for entry in Member.log} == readers and sender not in readers
    # What the reader's own first handler set (connected()'s), not the sender's value.
    assert {entry[3] for entry in Member.log} == {"handler 0"}
    assert who.get() == "sender"
    await layer.group_send("room", {"type": "ev.quick", "n": 2})
    assert {entry[3] for entry in Member.log[3:]} == {"handler 1"}  # the reader's context
    for socket in sockets:
        assert await socket.receive_from() == "quick 1"
        assert await socket.receive_from() == "quick 2"
        await socket.disconnect()


async def test_a_handler_that_waits_goes_on_in_the_reader_and_does_not_hold_the_sender():
    socket = await connected()
    layer = get_channel_layer()
    await asyncio.wait_for(layer.group_send("room", {"type": "ev.wait", "n": 1}), 1)
    await layer.group_send("room", {"type": "ev.quick", "n": 2})  # queued behind it
    (consumer,) = Member.instances
    assert [entry[:2] for entry in Member.log] == [("wait", 1)]
    assert Member.log[0][2] is consumer._reading
    await socket.send_to(text_data="frame")  # waits for its turn, after the handler
    await asyncio.sleep(0.05)
    assert [entry[:2] for entry in Member.log] == [("wait", 1)]
    Member.gate.set()
    assert await socket.receive_from() == "waited 1"
    assert await socket.receive_from() == "quick 2"
    await asyncio.sleep(0.05)
    assert [entry[:2] for entry in Member.log] == [
        ("wait", 1),
        ("waited", 1),
        ("quick", 2),
        ("frame", "frame"),
        ("frame done", "frame"),
    ]
    assert Member.log[1][2] is True  # the same task before and after it waited
    await socket.disconnect()


async def test_a_frame_being_handled_means_the_message_is_queued():
    socket = await connected()
    layer = get_channel_layer()
    await socket.send_to(text_data="wait")
    await asyncio.sleep(0.05)
    await layer.group_send("room", {"type": "ev.quick", "n": 1})
    await layer.group_send("room", {"type": "ev.quick", "n": 2})
    assert [entry[:2] for entry in Member.log] == [("frame", "wait")]
    Member.gate.set()
    assert await socket.receive_from() == "quick 1"
    assert await socket.receive_from() == "quick 2"
    assert [entry[:2] for entry in Member.log] == [
        ("frame", "wait"),
        ("frame done", "wait"),
        ("quick", 1),
        ("quick", 2),
    ]
    await socket.disconnect()


async def test_one_handler_at_a_time_in_arrival_order_under_a_burst():
    socket = await connected()
    layer = get_channel_layer()
    for n in range(1, 6):
        await layer.group_send("room", {"type": "ev.wait" if n % 2 else "ev.quick", "n": n})
    Member.gate.set()
    for n in range(1, 6):
        assert await socket.receive_from() == f"{'waited' if n % 2 else 'quick'} {n}"
    kinds = [entry[:2] for entry in Member.log]
    assert kinds == [
        ("wait", 1),
        ("waited", 1),
        ("quick", 2),
        ("wait", 3),
        ("waited", 3),
        ("quick", 4),
        ("wait", 5),
        ("waited", 5),
    ]
    await socket.disconnect()


class Plain(AsyncConsumer):
    """No WebSocket protocol to turn a handler's error into a close."""

    async def join(self, message):
        await self.channel_layer.group_add("plain", self.channel_name)
        await self.send({"type": "joined"})

    async def ev_quick(self, message):
        await self.send({"type": "quick", "n": message["n"]})

    ev_raise = Member.ev_raise
    ev_stop = Member.ev_stop


async def plain_member():
    app = ApplicationCommunicator(Plain.as_asgi(), {"type": "plain"})
    await app.send_input({"type": "join"})
    assert (await app.receive_output())["type"] == "joined"
    await get_channel_layer().group_send("plain", {"type": "ev.quick", "n": 0})
    assert (await app.receive_output())["n"] == 0  # its reader task runs from here on
    return app


async def test_a_handler_that_raises_ends_its_consumer_not_the_sender():
    app, bystander = await plain_member(), await plain_member()
    await get_channel_layer().group_send("plain", {"type": "ev.raise"})  # does not raise
    with pytest.raises(RuntimeError, match="boom in a handler"):
        await app.wait(1)
    with pytest.raises(RuntimeError, match="boom in a handler"):
        await bystander.wait(1)


async def test_stop_consumer_from_an_eager_handler_ends_the_consumer_quietly():
    app = await plain_member()
    await get_channel_layer().group_send("plain", {"type": "ev.stop"})
    await app.wait(1)  # ends, without an error


async def test_a_websocket_handler_that_raises_closes_its_connection():
    socket = await connected()
    await get_channel_layer().group_send("room", {"type": "ev.raise"})
    assert (await socket.receive_output())["code"] == 1011


async def test_a_timeout_in_a_handler_that_waits_cancels_the_handler_not_the_sender():
    socket = await connected()
    await get_channel_layer().group_send("room", {"type": "ev.timeout"})
    await asyncio.sleep(0.2)  # the sender (this task) is not cancelled by it
    assert await socket.receive_from() == "timed out"
    assert Member.log == [("timed out",)]
    await socket.disconnect()


@pytest.mark.parametrize("taken_over", [True, False])
async def test_a_consumer_cancelled_while_its_handler_waits(taken_over):
    socket = await connected()
    await get_channel_layer().group_send("room", {"type": "ev.wait", "n": 1})
    (consumer,) = Member.instances
    if taken_over:
        await asyncio.sleep(0.05)  # the reader task has gone on with the handler
    consumer._reading.cancel()  # else before the reader task has taken the handler over
    await asyncio.sleep(0.05)
    assert [entry[:2] for entry in Member.log] == [("wait", 1), ("cancelled", 1)]
    assert Member.log[1][2] is True
    assert consumer._reading.cancelled()
    await socket.disconnect()


async def test_the_client_leaving_while_a_handler_waits_cancels_the_handler():
    socket = await connected()
    await get_channel_layer().group_send("room", {"type": "ev.wait", "n": 1})
    await socket.disconnect()
    assert [entry[:2] for entry in Member.log] == [("wait", 1), ("cancelled", 1)]


async def test_what_an_eager_handler_sends_is_queued_not_handled_in_it():
    socket = await connected()
    other = await connected(Other)
    await get_channel_layer().group_send("room", {"type": "ev.forward", "n": 1})
    assert ("forwarded", 1, 0) in Member.log  # Other's handler had not run inside it
    assert await other.receive_from() == "quick 1"
    await socket.disconnect()
    await other.disconnect()


async def test_every_member_has_a_broadcast_before_what_a_handler_sends_because_of_it(
    monkeypatch,
):
    monkeypatch.setattr("channels_layer.mailbox.FAN_OUT_BATCH", 1)  # one member a pass
    forwarder, both = await connected(), await connected(Both)
    await get_channel_layer().group_send("room", {"type": "ev.forward", "n": 1})
    assert await both.receive_from() == "quick 1"
    assert [entry[:2] for entry in Both.log] == [("outer", 1), ("quick", 1)]
    await forwarder.disconnect()
    await both.disconnect()


async def test_a_handler_may_use_the_history_of_the_group_that_reached_it(settings):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_layer.memory.InMemoryChannelLayer",
            "CONFIG": {"history": {"hist.*": {"size": 5, "ttl": 60}}},
        }
    }
    socket = await connected(Historian)
    sent = await asyncio.wait_for(
        get_channel_layer().group_send("hist.room", {"type": "ev.quick", "n": 1}), 1
    )
    assert Historian.log == [("position", sent.offset)]  # handled within, with no deadlock
    assert await socket.receive_from() == "quick 1"
    await socket.disconnect()


@pytest.mark.parametrize("call", ["send", "group_send"])
async def test_the_layers_call_time_leaves_out_the_handlers_it_ran(call):
    socket = await connected()
    layer = get_channel_layer()
    timings = CALL_SECONDS.labels("memory", call)
    _, before = timings.read()
    if call == "send":
        await layer.send(Member.instances[-1].channel_name, {"type": "ev.slow"})
    else:
        await layer.group_send("room", {"type": "ev.slow"})
    assert Member.log == [("slow",)]
    assert timings.read()[1] - before < 0.05
    await socket.disconnect()


async def test_a_message_put_from_the_readers_own_context_is_left_to_the_reader():
    socket = await connected()
    (consumer,) = Member.instances
    layer = get_channel_layer()
    payload = layer.serialize({"type": "ev.quick", "n": 1})
    # As a callback scheduled by the reader task would: its context is the one entered.
    consumer._eager.context.run(layer._mailboxes.put, consumer.channel_name, payload, 60, None)
    assert Member.log == []
    assert await socket.receive_from() == "quick 1"
    assert Member.log[0][2] is consumer._reading
    await socket.disconnect()


async def test_sync_consumers_are_not_handled_in_the_senders_call():
    socket = await connected(SyncMember)
    layer = get_channel_layer()
    await layer.group_send("room", {"type": "ev.quick", "n": 1})
    await layer.group_send("room", {"type": "ev.quick", "n": 2})
    assert SyncMember.log == []
    assert await socket.receive_from() == "quick 1"
    assert await socket.receive_from() == "quick 2"
    assert SyncMember.log == [("quick", 1), ("quick", 2)]
    await socket.disconnect()


async def test_receive_called_directly_is_woken_as_before():
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add("room", channel)
    receiving = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(0)
    await layer.group_send("room", {"type": "ev.quick", "n": 1})
    await layer.send(channel, {"type": "ev.quick", "n": 2})
    assert (await receiving)["n"] == 1
    assert (await layer.receive(channel))["n"] == 2
