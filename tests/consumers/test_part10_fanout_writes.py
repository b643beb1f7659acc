"""A broadcast handed to several idle consumers writes their frames after every member's
handler has run (``channels_layer.handover.later``, ``SendDeadline.run_later``), in order
with each connection's other sends; a write that cannot end at once, or fails, is handled
as the sync consumers' ``Outbox`` handles it."""

import asyncio
import logging
import threading

from channels_layer import get_channel_layer, handover
from consumers import metrics
from consumers.generic.websocket import AsyncWebsocketConsumer
from consumers.send_deadline import SendDeadline

GROUP = "part10"


class Member(AsyncWebsocketConsumer):
    log: list = []

    async def connect(self):
        await self.accept()
        await self.channel_layer.group_add(GROUP, self.channel_name)

    async def disconnect(self, code):
        type(self).log.append((self.scope["name"], "disconnected", code))

    async def ev_note(self, message):
        name = self.scope["name"]
        type(self).log.append((name, "handled", message["n"]))
        await self.send(text_data=f"note {message['n']}")
        for extra in message.get("more", ()):
            await self.send(text_data=extra)
        if message.get("close"):
            await self.close(4000)
        type(self).log.append((name, "after send", message["n"]))


class Client:
    """One connection's server side: a ``receive`` queue, and a ``send`` that records what
    it was given, and can be made to wait (``block``) or raise (``fail``)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.block: asyncio.Event | None = None
        self.fail: BaseException | None = None
        self.task: asyncio.Task | None = None

    async def receive(self):
        return await self.inbox.get()

    async def send(self, message):
        if self.fail is not None:
            raise self.fail
        if self.block is not None:
            await self.block.wait()
        Member.log.append((self.name, "sent", message.get("text") or message["type"]))


async def _settle():
    for _ in range(20):
        await asyncio.sleep(0)


async def _members(*names: str) -> dict[str, Client]:
    """Connected members, each with its layer reader started and idle (eager)."""
    Member.log = []
    app = Member.as_asgi()
    clients = {}
    for name in names:
        client = clients[name] = Client(name)
        scope = {"type": "websocket", "path": "/ws/", "name": name, "headers": []}
        client.task = asyncio.ensure_future(app(scope, client.receive, client.send))
        await client.inbox.put({"type": "websocket.connect"})
    await _settle()
    layer = get_channel_layer()
    await layer.group_send(GROUP, {"type": "ev.note", "n": 0})  # starts every reader
    await _settle()
    Member.log = []
    return clients


async def _end(clients: dict[str, Client]) -> None:
    for client in clients.values():
        if not client.task.done():
            await client.inbox.put({"type": "websocket.disconnect", "code": 1000})
    await asyncio.wait([client.task for client in clients.values()], timeout=2)


def _of(name: str) -> list:
    return [entry[1:] for entry in Member.log if entry[0] == name]


async def test_the_members_frames_are_written_after_every_handler_ran():
    clients = await _members("a", "b", "c")
    await get_channel_layer().group_send(GROUP, {"type": "ev.note", "n": 1})
    kinds = [kind for _, kind, _ in Member.log]
    assert kinds == ["handled", "after send"] * 3 + ["sent"] * 3
    assert [entry[0] for entry in Member.log if entry[1] == "sent"] == ["a", "b", "c"]
    await _end(clients)


async def test_a_members_writes_keep_their_order_with_its_close():
    clients = await _members("a", "b")
    await get_channel_layer().group_send(
        GROUP, {"type": "ev.note", "n": 1, "more": ["x", "y"], "close": True}
    )
    await _settle()
    for name in ("a", "b"):
        sent = [what for kind, what in _of(name) if kind == "sent"]
        assert sent == ["note 1", "x", "y", "websocket.close"]
    await _end(clients)


async def test_one_receiver_writes_in_its_handler():
    clients = await _members("a")
    await get_channel_layer().group_send(GROUP, {"type": "ev.note", "n": 1})
    assert _of("a") == [("handled", 1), ("sent", "note 1"), ("after send", 1)]
    await _end(clients)


async def test_a_write_that_waits_goes_on_and_the_next_send_waits_for_it():
    clients = await _members("a", "b", "c")
    clients["b"].block = asyncio.Event()
    layer = get_channel_layer()
    await layer.group_send(GROUP, {"type": "ev.note", "n": 1})
    await layer.group_send(GROUP, {"type": "ev.note", "n": 2})
    await _settle()
    for name in ("a", "c"):
        assert [what for kind, what in _of(name) if kind == "sent"] == ["note 1", "note 2"]
    assert [kind for kind, _ in _of("b")] == ["handled", "after send", "handled"]
    clients["b"].block.set()
    await _settle()
    assert [what for kind, what in _of("b") if kind == "sent"] == ["note 1", "note 2"]
    assert ("after send", 2) in _of("b")
    await _end(clients)


async def test_a_write_past_the_deadline_ends_the_connection_at_its_next_send(settings):
    settings.CONSUMERS_WEBSOCKET_SEND_TIMEOUT = 0.05
    clients = await _members("a", "b")
    clients["b"].block = asyncio.Event()  # never set: b stopped reading
    dropped = metrics.tally.slow_dropped
    layer = get_channel_layer()
    await layer.group_send(GROUP, {"type": "ev.note", "n": 1})
    await asyncio.sleep(0.2)
    assert metrics.tally.slow_dropped == dropped + (1 if metrics.enabled() else 0)
    assert not clients["b"].task.done()  # as an Outbox: it learns at its next send
    await layer.group_send(GROUP, {"type": "ev.note", "n": 2})
    await asyncio.wait_for(clients["b"].task, 2)
    assert ("disconnected", 1006) in _of("b")
    assert [what for kind, what in _of("a") if kind == "sent"] == ["note 1", "note 2"]
    await _end(clients)


async def test_a_client_gone_at_the_write_ends_the_connection_at_its_next_send():
    clients = await _members("a", "b", "c")
    clients["b"].fail = ConnectionResetError("gone")
    layer = get_channel_layer()
    await layer.group_send(GROUP, {"type": "ev.note", "n": 1})
    await layer.group_send(GROUP, {"type": "ev.note", "n": 2})
    await asyncio.wait_for(clients["b"].task, 2)
    assert ("disconnected", 1006) in _of("b")
    for name in ("a", "c"):
        assert [what for kind, what in _of(name) if kind == "sent"] == ["note 1", "note 2"]
    await _end(clients)


async def test_a_write_the_server_refuses_is_logged_and_the_rest_go_on(caplog):
    clients = await _members("a", "b")
    clients["b"].fail = RuntimeError("refused")
    with caplog.at_level(logging.ERROR, "consumers.consumer"):
        await get_channel_layer().group_send(GROUP, {"type": "ev.note", "n": 1})
    assert [r.getMessage() for r in caplog.records] == [
        "Could not send 'websocket.send' to the client"
    ]
    clients["b"].fail = None
    await get_channel_layer().group_send(GROUP, {"type": "ev.note", "n": 2})
    assert [what for kind, what in _of("b") if kind == "sent"] == ["note 2"]
    assert [what for kind, what in _of("a") if kind == "sent"] == ["note 1", "note 2"]
    await _end(clients)


async def test_another_threads_hand_over_leaves_this_threads_sends_alone():
    sent = []

    async def send(message):
        sent.append(message)

    deadline = SendDeadline(send, {"type": "websocket"}, 10)
    others: list = []
    handover.later = (threading.get_ident() + 1, others)
    try:
        deadline({"type": "websocket.send", "text": "now"})
    finally:
        handover.later = None
    assert sent == [{"type": "websocket.send", "text": "now"}]
    assert others == []


async def test_a_large_fan_out_writes_every_few_members(monkeypatch):
    monkeypatch.setattr(handover, "LATER_KEPT", 4)  # two writes of a message each
    clients = await _members("a", "b", "c")
    await get_channel_layer().group_send(GROUP, {"type": "ev.note", "n": 1})
    steps = [(name, kind) for name, kind, _ in Member.log if kind != "after send"]
    assert steps == [
        ("a", "handled"),
        ("b", "handled"),
        ("a", "sent"),
        ("b", "sent"),
        ("c", "handled"),
        ("c", "sent"),
    ]
    await _end(clients)
