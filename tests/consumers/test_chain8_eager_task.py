"""An eager hand-over makes the member's reader task current while its handler runs and puts
back whatever was current before, including no task at all (``consumers.eager.handle``
writes asyncio's current-task dict itself on Python 3.11)."""

import asyncio

from channels_layer import get_channel_layer
from consumers.generic.websocket import AsyncWebsocketConsumer
from consumers.testing import WebsocketCommunicator


class Seen(AsyncWebsocketConsumer):
    """Records the current task each of its layer handlers ran as."""

    instances: list = []
    tasks: list = []

    async def connect(self):
        type(self).instances.append(self)
        await self.accept()

    async def ev_note(self, message):
        type(self).tasks.append(asyncio.current_task())
        await self.send(text_data=f"note {message['n']}")


async def _idle_member() -> tuple[WebsocketCommunicator, Seen]:
    Seen.instances, Seen.tasks = [], []
    socket = WebsocketCommunicator(Seen.as_asgi(), "/ws/")
    assert (await socket.connect())[0]
    member = Seen.instances[-1]
    # The first layer message starts the reader task; it then waits, idle, for the next.
    await get_channel_layer().send(member.channel_name, {"type": "ev.note", "n": 0})
    assert await socket.receive_from() == "note 0"
    return socket, member


async def test_a_hand_over_from_outside_any_task_leaves_no_current_task():
    socket, member = await _idle_member()
    loop = asyncio.get_running_loop()
    seen: dict = {}

    def from_a_callback() -> None:
        seen["before"] = asyncio.current_task()
        sending = get_channel_layer().send(member.channel_name, {"type": "ev.note", "n": 1})
        try:
            sending.send(None)  # the in-memory send does not suspend: it ends here
        except StopIteration:
            seen["ended"] = True
        seen["handled"] = len(Seen.tasks)  # 2: in this call, not later by the reader
        seen["after"] = asyncio.current_task()

    loop.call_soon(from_a_callback)
    assert await socket.receive_from() == "note 1"
    assert seen == {"before": None, "ended": True, "handled": 2, "after": None}
    reader = member._eager.task
    assert Seen.tasks[-1] is reader  # handled eagerly, as the reader task
    assert not reader.done()
    await socket.disconnect()


async def test_a_hand_over_from_a_task_gives_that_task_back():
    socket, member = await _idle_member()
    sender = asyncio.current_task()
    await get_channel_layer().send(member.channel_name, {"type": "ev.note", "n": 2})
    assert Seen.tasks[-1] is member._eager.task  # handled within the send, as the reader
    assert asyncio.current_task() is sender
    assert await socket.receive_from() == "note 2"
    await socket.disconnect()
