"""A broadcast member's eager first step (consumers.eager): a handler that ends there
costs no exception, one that returns a value or suspends still goes on as before."""

import asyncio
import sys

from channels_layer import get_channel_layer
from consumers.generic.websocket import AsyncWebsocketConsumer
from consumers.testing import WebsocketCommunicator


class Member(AsyncWebsocketConsumer):
    groups = ["fanout6"]
    instances: list = []
    gate: asyncio.Event | None = None

    async def connect(self):
        type(self).instances.append(self)
        await self.accept()

    async def ev_quick(self, message):
        await self.send(text_data=f"quick {message['n']}")

    async def ev_value(self, message):
        await self.send(text_data=f"value {message['n']}")
        return 42  # a value ends the coroutine too

    async def ev_wait(self, message):
        assert self.gate is not None
        await self.gate.wait()
        await self.send(text_data=f"waited {message['n']}")


async def connected():
    socket = WebsocketCommunicator(Member.as_asgi(), "/ws/")
    assert (await socket.connect())[0]
    # The first layer message starts the reader task; the next ones are handed over.
    await get_channel_layer().send(Member.instances[-1].channel_name, {"type": "ev.quick", "n": 0})
    assert await socket.receive_from() == "quick 0"
    return socket


def first_step_exceptions(calls):
    """The exceptions C functions raised into ``_first_step`` while ``calls`` ran."""
    seen = []

    def profile(frame, event, arg):
        if event == "c_exception" and frame.f_code.co_name == "_first_step":
            seen.append(getattr(arg, "__qualname__", repr(arg)))

    sys.setprofile(profile)
    try:
        calls()
    finally:
        sys.setprofile(None)
    return seen


async def test_a_handler_that_ends_in_its_first_step_raises_nothing_there():
    Member.instances = []
    sockets = [await connected() for _ in range(3)]
    layer = get_channel_layer()
    loop = asyncio.get_running_loop()
    sending = []

    def group_send():
        # Stepped by hand, inside the profile: the hand-over runs in this call.
        step = layer.group_send("fanout6", {"type": "ev.quick", "n": 1}).__await__()
        sending.append(next(step, None))

    seen = first_step_exceptions(group_send)
    assert sending == [None]  # group_send ended in that one step
    assert seen == []  # coroutine.send raised StopIteration here for each member before
    for socket in sockets:
        assert await socket.receive_from() == "quick 1"
        await socket.disconnect()
    assert loop.is_running()


async def test_handlers_that_return_a_value_or_suspend_go_on_in_order():
    Member.instances = []
    Member.gate = asyncio.Event()
    sockets = [await connected() for _ in range(2)]
    layer = get_channel_layer()
    await layer.group_send("fanout6", {"type": "ev.value", "n": 1})
    await layer.group_send("fanout6", {"type": "ev.wait", "n": 2})
    await layer.group_send("fanout6", {"type": "ev.quick", "n": 3})  # queued behind it
    for socket in sockets:
        assert await socket.receive_from() == "value 1"
        assert await socket.receive_nothing()
    Member.gate.set()
    for socket in sockets:
        assert await socket.receive_from() == "waited 2"
        assert await socket.receive_from() == "quick 3"
        await socket.disconnect()
