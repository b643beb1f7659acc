"""An eager handler that ends in its first step gives its consumer's turn back at once
(``EagerReader.handle`` frees it itself when nobody waits for it, and hands it to the first
waiter otherwise, as ``Turn.release`` does)."""

import asyncio

from channels_layer import get_channel_layer
from consumers.generic.websocket import AsyncWebsocketConsumer
from consumers.testing import WebsocketCommunicator


class Member(AsyncWebsocketConsumer):
    instances: list = []

    async def connect(self):
        type(self).instances.append(self)
        await self.accept()

    async def ev_note(self, message):
        await self.send(text_data=f"note {message['n']}")


async def _idle_member():
    Member.instances = []
    socket = WebsocketCommunicator(Member.as_asgi(), "/ws/")
    assert (await socket.connect())[0]
    member = Member.instances[-1]
    await get_channel_layer().send(member.channel_name, {"type": "ev.note", "n": 0})
    assert await socket.receive_from() == "note 0"  # its reader started, now idle
    return socket, member


async def test_a_handler_that_ends_frees_the_turn():
    socket, member = await _idle_member()
    reader, turn = member._eager, member._turn
    assert reader.claim() and turn.held
    assert reader.handle({"type": "ev.note", "n": 1}) is False  # ended in the call
    assert not turn.held
    assert await socket.receive_from() == "note 1"
    await socket.disconnect()


async def test_a_handler_that_ends_hands_the_turn_to_its_first_waiter():
    socket, member = await _idle_member()
    reader, turn = member._eager, member._turn
    assert reader.claim()
    waiting = asyncio.get_running_loop().create_future()
    turn._waiters = [waiting]  # as a connection side parked in take()
    assert reader.handle({"type": "ev.note", "n": 1}) is False
    assert waiting.done() and turn.held  # still held: the waiter has it now
    assert turn._waiters == []
    turn.release()
    assert not turn.held
    assert await socket.receive_from() == "note 1"
    await socket.disconnect()


async def test_a_broadcast_to_idle_members_leaves_every_turn_free():
    sockets = [await _idle_member() for _ in range(3)]
    layer = get_channel_layer()
    for _, member in sockets:
        await layer.group_add("part9", member.channel_name)
    await layer.group_send("part9", {"type": "ev.note", "n": 7})
    for socket, member in sockets:
        assert not member._turn.held
        assert await socket.receive_from() == "note 7"
        await layer.group_discard("part9", member.channel_name)
        await socket.disconnect()
