"""Review of part 10's deferred fan-out writes (rev10): what a deferred write that raises a
``BaseException``, or a consumer that ends with a write still going on, must not break."""

import asyncio

import pytest

from channels_layer import get_channel_layer, handover
from consumers.exceptions import StopConsumer
from tests.consumers.test_part10_fanout_writes import GROUP, Member, _end, _members, _of, _settle


async def _sent(name: str) -> list:
    return [what for kind, what in _of(name) if kind == "sent"]


async def test_an_interrupt_in_a_kept_write_neither_repeats_writes_nor_keeps_claims(monkeypatch):
    """KeyboardInterrupt (a signal) in a write run every LATER_KEPT entries: the writes run
    before it are not run again, and the members not yet handled are not left claimed (their
    turn held for ever, so no message of theirs ever handled again)."""
    monkeypatch.setattr(handover, "LATER_KEPT", 4)  # run after every two members
    clients = await _members("a", "b", "c")
    clients["b"].fail = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        await get_channel_layer().group_send(GROUP, {"type": "ev.note", "n": 1})
    assert (await _sent("a")).count("note 1") == 1  # written once, not again after it
    clients["b"].fail = None
    await _settle()
    await get_channel_layer().group_send(GROUP, {"type": "ev.note", "n": 2})
    await _settle()
    assert ("handled", 2) in _of("c")  # c was released, not left claimed
    await _end(clients)


async def test_a_cancellation_from_a_deferred_write_is_not_the_senders():
    """A server's send that raises CancelledError in its first step (the cancellation of
    something it awaited): as any other error of a receiver's write, the sender sees
    nothing, and the other members' frames are written."""
    clients = await _members("a", "b", "c")
    clients["b"].fail = asyncio.CancelledError()
    await get_channel_layer().group_send(GROUP, {"type": "ev.note", "n": 1})  # must not raise
    assert await _sent("a") == ["note 1"]
    assert await _sent("c") == ["note 1"]
    await _end(clients)


class Quitter(Member):
    async def ev_bye(self, message):
        await self.send(text_data="bye")
        raise StopConsumer


async def test_a_consumer_does_not_end_before_its_deferred_write(monkeypatch):
    """A handler that sends and then ends its consumer (StopConsumer): the application does
    not return while the write it made is still going on (a slow client), as it did not when
    the handler's send waited in place; a server closes a connection whose application has
    returned, and the frame would be lost (and its task left pending)."""
    monkeypatch.setattr(Member, "ev_bye", Quitter.ev_bye, raising=False)
    clients = await _members("a", "b", "c")
    clients["b"].block = asyncio.Event()
    await get_channel_layer().group_send(GROUP, {"type": "ev.bye"})
    await _settle()
    assert clients["a"].task.done() and clients["c"].task.done()
    assert not clients["b"].task.done()  # its "bye" is not out yet
    clients["b"].block.set()
    await asyncio.wait_for(clients["b"].task, 2)
    assert await _sent("b") == ["bye"]
    await _end(clients)


class Reuser(Member):
    async def ev_twice(self, message):
        frame = {"type": "websocket.send", "text": "a"}
        await self.base_send(frame)
        frame["text"] = "b"  # the first send has returned: the server has taken it
        await self.base_send(frame)


async def test_a_message_changed_after_its_send_returned_is_written_as_sent(monkeypatch):
    """A send that returned has been taken: a handler may reuse its dict (ASGI servers read
    the message in the call). A deferred write must write what was sent, not what the dict
    holds after the handler ran."""
    monkeypatch.setattr(Member, "ev_twice", Reuser.ev_twice, raising=False)
    clients = await _members("a", "b")
    await get_channel_layer().group_send(GROUP, {"type": "ev.twice"})
    for name in ("a", "b"):
        assert await _sent(name) == ["a", "b"]
    await _end(clients)


async def test_communicators_of_a_group_receive_every_frame_in_order():
    """Channels-style tests: a group_send to several consumers under WebsocketCommunicator."""
    from consumers.testing import WebsocketCommunicator

    Member.log = []
    communicators = []
    for name in ("a", "b", "c"):
        communicator = WebsocketCommunicator(Member.as_asgi(), "/ws/")
        communicator.scope["name"] = name
        assert (await communicator.connect())[0]
        communicators.append(communicator)
    layer = get_channel_layer()
    await layer.group_send(GROUP, {"type": "ev.note", "n": 0})  # starts the readers
    await layer.group_send(GROUP, {"type": "ev.note", "n": 1, "more": ["x"], "close": True})
    for communicator in communicators:
        got = [await communicator.receive_output() for _ in range(4)]
        assert [m.get("text") or m["type"] for m in got] == [
            "note 0",
            "note 1",
            "x",
            "websocket.close",
        ]
        await communicator.disconnect()
