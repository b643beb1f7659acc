"""Consumers that join history groups: what was missed, in order and once, then live.

Driven through the testing communicators against real layers (in memory and on Redis),
with the recovery protocol of consumers/static/consumers/socket.js: the positions ride in
the handshake's ``?recover=``, the server answers ``consumers.joined``,
``consumers.recovered`` or ``consumers.recovery_failed``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from urllib.parse import quote

import pytest

from channels_layer import channel_layers
from channels_layer.memory import InMemoryChannelLayer
from consumers.generic.websocket import AsyncJsonWebsocketConsumer, JsonWebsocketConsumer
from consumers.history import (
    Position,
    ResumableJsonMixin,
    SharedReads,
    SyncResumableJsonMixin,
)
from consumers.testing import WebsocketCommunicator

GROUP = "room.1"
HISTORY = {"room.*": {"size": 1000, "ttl": 600}}


class Room(ResumableJsonMixin, AsyncJsonWebsocketConsumer):
    history_batch = 7  # several batches per recovery, so sends overlap the reading

    async def connect(self):
        await self.accept()
        await self.history_join(GROUP, self.client_position(GROUP))

    async def note(self, event):
        await self.send_json(event)


class SyncRoom(SyncResumableJsonMixin, JsonWebsocketConsumer):
    history_batch = 7

    def connect(self):
        self.accept()
        self.history_join(GROUP, self.client_position(GROUP))

    def note(self, event):
        self.send_json(event)


class PingingRoom(Room):
    ping_interval = 0.1


class SyncPingingRoom(SyncRoom):
    ping_interval = 0.1


CONSUMERS = {"async": Room, "sync": SyncRoom}


@pytest.fixture(params=["memory", "redis"])
def layer(request, settings, make_layer):
    settings.CHANNEL_LAYERS = {}  # the layer below, nothing from the project's settings
    if request.param == "memory":
        layer = InMemoryChannelLayer(history=HISTORY)
    else:
        layer = make_layer(history=HISTORY)
    channel_layers.set("default", layer)
    return layer


def connect_to(consumer, since: dict[str, Position] | None = None) -> WebsocketCommunicator:
    path = "/ws/"
    if since is not None:
        asked = {group: {"epoch": p.epoch, "offset": p.offset} for group, p in since.items()}
        path += "?recover=" + quote(json.dumps(asked))
    return WebsocketCommunicator(consumer.as_asgi(), path)


async def send_notes(layer, first: int, count: int, pause: float = 0) -> list[Position]:
    positions = []
    for number in range(first, first + count):
        positions.append(await layer.group_send(GROUP, {"type": "note", "n": number}))
        if pause:
            await asyncio.sleep(pause)
    return positions


async def frames_until(socket, done, timeout: float = 5) -> list[dict]:
    """Frames until ``done(frames)`` holds."""
    frames: list[dict] = []
    async with asyncio.timeout(timeout):
        while not done(frames):
            frames.append(await socket.receive_json_from(timeout=timeout))
    return frames


def notes(frames: list[dict]) -> list[int]:
    return [frame["n"] for frame in frames if frame["type"] == "note"]


@pytest.mark.parametrize("kind", CONSUMERS)
async def test_a_fresh_join_starts_from_now_and_says_where(layer, kind):
    await send_notes(layer, 1, 3)
    socket = connect_to(CONSUMERS[kind])
    assert (await socket.connect())[0]
    joined = await socket.receive_json_from()
    epoch = (await layer.group_position(GROUP)).epoch
    assert joined == {
        "type": "consumers.joined",
        "group": GROUP,
        "position": {"epoch": epoch, "offset": 3},
    }
    await send_notes(layer, 4, 1)
    live = await socket.receive_json_from()
    assert live == {
        "type": "note",
        "n": 4,
        "__position__": {"group": GROUP, "epoch": epoch, "offset": 4},
    }
    await socket.disconnect()


@pytest.mark.parametrize("kind", CONSUMERS)
async def test_recovery_delivers_each_missed_message_once_in_order_while_sends_go_on(layer, kind):
    sent = await send_notes(layer, 1, 40)
    since = sent[9]  # the client saw 1..10
    socket = connect_to(CONSUMERS[kind], {GROUP: since})
    # Sends keep coming while the consumer subscribes and reads the history in batches.
    sending = asyncio.create_task(send_notes(layer, 41, 60, pause=0.001))
    assert (await socket.connect())[0]
    await sending
    frames = await frames_until(socket, lambda got: 100 in notes(got))
    assert notes(frames) == list(range(11, 101))  # every one after 10, once, in order
    offsets = [f["__position__"]["offset"] for f in frames if f["type"] == "note"]
    assert offsets == list(range(11, 101))
    [recovered] = [f for f in frames if f["type"] == "consumers.recovered"]
    # It comes after the history and before the live messages; its count says how many
    # were missed, its position where the live ones follow.
    count = recovered["count"]
    assert count >= 30
    assert frames.index(recovered) == count
    assert recovered["position"] == {"epoch": since.epoch, "offset": 10 + count}
    assert await socket.receive_nothing(0.2)
    await socket.disconnect()


@pytest.mark.parametrize("kind", CONSUMERS)
async def test_another_epoch_fails_recovery_and_the_consumer_is_live_anyway(layer, kind):
    await send_notes(layer, 1, 5)
    current = await layer.group_position(GROUP)
    socket = connect_to(CONSUMERS[kind], {GROUP: Position("an-old-epoch", 3)})
    assert (await socket.connect())[0]
    failed = await socket.receive_json_from()
    assert failed == {
        "type": "consumers.recovery_failed",
        "group": GROUP,
        "position": {"epoch": current.epoch, "offset": 5},
    }
    await send_notes(layer, 6, 2)
    assert notes([await socket.receive_json_from() for _ in range(2)]) == [6, 7]
    await socket.disconnect()


@pytest.mark.parametrize("kind", CONSUMERS)
async def test_a_position_older_than_what_is_kept_fails_recovery(settings, kind):
    settings.CHANNEL_LAYERS = {}
    layer = InMemoryChannelLayer(history={"room.*": {"size": 5, "ttl": 600}})
    channel_layers.set("default", layer)
    sent = await send_notes(layer, 1, 20)
    socket = connect_to(CONSUMERS[kind], {GROUP: sent[1]})  # 3..15 are gone
    assert (await socket.connect())[0]
    failed = await socket.receive_json_from()
    assert failed["type"] == "consumers.recovery_failed"
    assert failed["position"] == {"epoch": sent[0].epoch, "offset": 20}
    await send_notes(layer, 21, 1)
    assert notes([await socket.receive_json_from()]) == [21]
    await socket.disconnect()


async def test_a_position_from_the_future_is_refused_not_trusted(layer):
    sent = await send_notes(layer, 1, 3)
    socket = connect_to(Room, {GROUP: Position(sent[0].epoch, 1000)})
    assert (await socket.connect())[0]
    failed = await socket.receive_json_from()
    assert failed["type"] == "consumers.recovery_failed"
    assert failed["position"]["offset"] == 3
    await send_notes(layer, 4, 1)  # not dropped as "seen": the cursor is at 3, not 1000
    assert notes([await socket.receive_json_from()]) == [4]
    await socket.disconnect()


async def test_a_gap_in_live_delivery_is_filled_from_the_history(settings):
    """A consumer whose channel was full misses live messages (the layer skips full
    members); the next one it gets shows the gap, and the history fills it. (Until a next
    message comes, nothing shows the gap: a README limit.)"""
    settings.CHANNEL_LAYERS = {}
    layer = InMemoryChannelLayer(history=HISTORY, capacity=5)
    channel_layers.set("default", layer)
    socket = connect_to(Room)
    assert (await socket.connect())[0]
    assert (await socket.receive_json_from())["type"] == "consumers.joined"
    await send_notes(layer, 1, 30)  # no pause: the channel holds 5, the rest are skipped
    assert notes([await socket.receive_json_from() for _ in range(5)]) == [1, 2, 3, 4, 5]
    assert await socket.receive_nothing(0.1)
    await send_notes(layer, 31, 1)
    frames = await frames_until(socket, lambda got: 31 in notes(got))
    assert notes(frames) == list(range(6, 32))
    await socket.disconnect()


async def test_consumers_recovering_the_same_group_share_their_reads(layer):
    sent = await send_notes(layer, 1, 100)
    reads = []
    original = layer.group_history

    async def counted(*args, **kwargs):
        reads.append(args)
        await asyncio.sleep(0.01)  # a Redis round trip, during which others come
        return await original(*args, **kwargs)

    layer.group_history = counted
    sockets = [connect_to(Room, {GROUP: sent[0]}) for _ in range(20)]
    await asyncio.gather(*(socket.connect() for socket in sockets))
    for socket in sockets:
        frames = await frames_until(socket, lambda got: got and got[-1]["type"] != "note")
        assert notes(frames) == list(range(2, 101))
        assert frames[-1]["type"] == "consumers.recovered"
    # 99 messages in batches of 7 is 15 reads for one consumer; 20 alone would make 300.
    assert len(reads) < 3 * 15, len(reads)
    await asyncio.gather(*(socket.disconnect() for socket in sockets))


async def test_a_malformed_recovery_request_is_logged_and_joins_from_now(layer, caplog):
    await send_notes(layer, 1, 2)
    socket = WebsocketCommunicator(Room.as_asgi(), "/ws/?recover=" + quote('{"room.1": 5}'))
    with caplog.at_level(logging.WARNING, "consumers.history"):
        assert (await socket.connect())[0]
        joined = await socket.receive_json_from()
    assert joined["type"] == "consumers.joined" and joined["position"]["offset"] == 2
    assert "the epoch of 'room.1' must be a short string" in caplog.text
    await socket.disconnect()


async def test_positions_for_groups_the_consumer_does_not_join_are_ignored(layer):
    await layer.group_send("room.2", {"type": "note", "n": 0})
    other = await layer.group_position("room.2")
    socket = connect_to(Room, {"room.2": Position(other.epoch, 0)})
    assert (await socket.connect())[0]
    assert (await socket.receive_json_from())["type"] == "consumers.joined"
    assert await socket.receive_nothing(0.1)  # nothing of room.2
    await socket.disconnect()


@pytest.mark.parametrize("pinging", [PingingRoom, SyncPingingRoom])
async def test_pings_go_out_and_pongs_never_reach_the_handlers(layer, pinging):
    socket = connect_to(pinging)
    assert (await socket.connect())[0]
    assert (await socket.receive_json_from())["type"] == "consumers.joined"
    assert await socket.receive_json_from(timeout=1) == {"type": "consumers.ping", "interval": 0.1}
    await socket.send_to(text_data='{"type":"consumers.pong"}')
    assert await socket.receive_json_from(timeout=1) == {"type": "consumers.ping", "interval": 0.1}
    await socket.disconnect()


async def test_a_group_without_history_is_joined_live(layer, caplog):
    class Plain(Room):
        async def connect(self):
            await self.accept()
            await self.history_join("lobby", self.client_position("lobby"))

    socket = connect_to(Plain)
    with caplog.at_level(logging.INFO, "consumers.history"):
        assert (await socket.connect())[0]
        joined = await socket.receive_json_from()
    assert joined == {"type": "consumers.joined", "group": "lobby", "position": None}
    assert "lobby has no history" in caplog.text
    await layer.group_send("lobby", {"type": "note", "n": 1})
    assert await socket.receive_json_from() == {"type": "note", "n": 1}
    await socket.disconnect()


class TellsItsChannel(Room):
    async def connect(self):
        await super().connect()
        await self.send_json({"type": "channel", "name": self.channel_name})


async def test_a_live_message_of_a_new_epoch_fails_recovery_first_then_arrives(layer):
    await send_notes(layer, 1, 3)
    socket = connect_to(TellsItsChannel)
    assert (await socket.connect())[0]
    assert (await socket.receive_json_from())["type"] == "consumers.joined"
    channel = (await socket.receive_json_from())["name"]
    old = await layer.group_position(GROUP)
    await layer.flush()  # the history is gone: new epochs (and the membership, given back)
    await layer.group_add(GROUP, channel)
    [new] = await send_notes(layer, 4, 1)
    assert new.epoch != old.epoch and new.offset == 1
    failed = await socket.receive_json_from()
    assert failed == {
        "type": "consumers.recovery_failed",
        "group": GROUP,
        "position": {"epoch": new.epoch, "offset": 0},
    }
    live = await socket.receive_json_from()
    assert live["n"] == 4 and live["__position__"]["epoch"] == new.epoch
    await send_notes(layer, 5, 1)
    assert notes([await socket.receive_json_from()]) == [5]
    await socket.disconnect()


async def test_a_shared_read_is_only_shared_with_callers_that_asked_before_it_began():
    shared: SharedReads[int] = SharedReads()
    began: list[float] = []
    release = asyncio.Event()

    async def make() -> int:
        began.append(asyncio.get_running_loop().time())
        await release.wait()
        return len(began)

    loop = asyncio.get_running_loop()
    early = [asyncio.create_task(shared.read("k", make, loop.time())) for _ in range(5)]
    await asyncio.sleep(0.01)  # the first read is running
    late = [asyncio.create_task(shared.read("k", make, loop.time())) for _ in range(5)]
    await asyncio.sleep(0.01)
    assert len(began) == 1  # the late callers wait for the next read, not a read each
    release.set()
    assert await asyncio.gather(*early) == [1] * 5
    assert await asyncio.gather(*late) == [2] * 5  # one more read, begun after they asked
    assert len(began) == 2 and began[1] >= began[0]
