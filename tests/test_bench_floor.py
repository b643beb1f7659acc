"""``bench.floor``, the benchmark's reference for what the Channels API itself costs: the
consumers the benchmark builds on it must do their job (the load generator counts replies,
not what they say), and keep what the API promises, or the floor would read cheaper than
it is."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import pytest
from django.urls import path

from bench.apps.routes import build
from bench.floor import routing
from bench.floor.generic import websocket
from consumers.testing import WebsocketCommunicator

application = build("bench.floor", http=None)


async def connected(path: str, app: Any = application) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(app, path)
    accepted, _ = await communicator.connect()
    assert accepted
    return communicator


async def test_async_and_json_echo_say_back_what_came() -> None:
    echo, json_echo = await connected("/ws/echo/"), await connected("/ws/json/")
    for text in ("one", "two"):
        await echo.send_to(text_data=text)
        assert await echo.receive_from() == text
    content = {"text": "x", "n": 1, "list": [1.5, None, True]}
    await json_echo.send_to(text_data=json.dumps(content))
    assert json.loads(await json_echo.receive_from()) == content
    await echo.disconnect()
    await json_echo.disconnect()


async def test_sync_echo_keeps_each_connections_order() -> None:
    first, second = await connected("/ws/sync/"), await connected("/ws/sync/")
    for number in range(20):
        await first.send_to(text_data=f"a{number}")
        await second.send_to(text_data=f"b{number}")
    assert [await first.receive_from() for _ in range(20)] == [f"a{n}" for n in range(20)]
    assert [await second.receive_from() for _ in range(20)] == [f"b{n}" for n in range(20)]
    await first.disconnect()
    await second.disconnect()


class Threads(websocket.WebsocketConsumer):
    """Says which thread ran it; ``fail`` raises, ``slow`` takes 0.3 s."""

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data == "fail":
            raise RuntimeError("a handler's own error")
        if text_data == "slow":
            time.sleep(0.3)
        self.send(text_data=str(threading.get_ident()))


threads_app = routing.URLRouter([path("threads/", Threads.as_asgi())])


async def test_a_sync_handler_runs_off_the_loop_and_its_error_stays_its_own() -> None:
    failing, other = (
        await connected("/threads/", threads_app),
        await connected("/threads/", threads_app),
    )
    await failing.send_to(text_data="fail")
    await other.send_to(text_data="x")
    assert int(await other.receive_from()) != threading.get_ident()
    assert await failing.receive_nothing()
    await failing.send_to(text_data="x")  # the handlers' thread goes on
    assert int(await failing.receive_from()) != threading.get_ident()
    await failing.disconnect()
    await other.disconnect()


async def test_a_cancelled_connection_does_not_strand_the_others_of_its_batch() -> None:
    cancelled, other = (
        await connected("/threads/", threads_app),
        await connected("/threads/", threads_app),
    )
    await cancelled.send_to(text_data="slow")
    await asyncio.sleep(0.05)  # its handler runs; the next frame joins the same batch
    await other.send_to(text_data="x")
    cancelled.future.cancel()
    assert await other.receive_from(timeout=2)
    await other.disconnect()


class Room(websocket.AsyncWebsocketConsumer):
    """Broadcasts each frame; ``slow`` members' handlers suspend; each handler changes the
    event it got, which another member must not see."""

    groups = ["floor-test-room"]
    handling = 0  # handlers of this consumer running at once, at most

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data == "slow":
            self.slow = True
            await self.send(text_data="slow now")
            return
        await self.channel_layer.group_send(
            "floor-test-room", {"type": "room.message", "text": text_data}
        )

    async def room_message(self, event: dict[str, Any]) -> None:
        self.handling += 1
        assert self.handling == 1, "two handlers at once"
        if getattr(self, "slow", False):
            await asyncio.sleep(0.2)
        event["text"] += "!"
        await self.send(text_data=event["text"])
        self.handling -= 1


room_app = routing.URLRouter([path("room/", Room.as_asgi())])


async def test_a_broadcast_gives_each_member_its_copy_and_one_handler_at_a_time() -> None:
    members = [await connected("/room/", room_app) for _ in range(3)]
    await members[2].send_to(text_data="slow")
    assert await members[2].receive_from() == "slow now"
    await members[0].send_to(text_data="one")
    await members[0].send_to(text_data="two")
    # The slow member's handlers wait in a task of their own: the others are not held up.
    for member in members[:2]:
        assert [await member.receive_from(timeout=0.15) for _ in range(2)] == ["one!", "two!"]
    assert [await members[2].receive_from() for _ in range(2)] == ["one!", "two!"]
    for member in members:
        await member.disconnect()


async def test_a_broadcast_reaches_every_member_and_a_left_one_no_more() -> None:
    members = [await connected("/ws/broadcast/") for _ in range(3)]
    await members[0].send_to(text_data="hello")
    assert [await member.receive_from() for member in members] == ["hello"] * 3
    await members[2].disconnect()
    await members[1].send_to(text_data="again")
    assert [await member.receive_from() for member in members[:2]] == ["again"] * 2
    assert await members[2].receive_nothing()
    for member in members[:2]:
        await member.disconnect()


@pytest.mark.timeout(150)  # the harness's own limit is 90 s (it stops its children then)
def test_the_harness_measures_the_floor_beside_bare_and_not_over_redis(tmp_path) -> None:
    from tests.test_bench import tiny_run

    data = tiny_run(tmp_path, "floor,bare", "echo,broadcast", 90)
    table = (tmp_path / "latest.md").read_text()
    assert "| bare | API floor | ours/Channels |" in table
    assert "| async echo round trips, API floor/bare |" in table  # the ratio table's row
    floor = data["medians"]["uvicorn"]["floor"]
    assert all(floor[f"{variant}.rps"] > 0 for variant in ("async", "sync", "json"))
    assert floor["mem20.lost"] == 0
    # Two processes over Redis need a layer the floor does not have: not run, not faked.
    assert not [key for key in floor if key.startswith("redis")]
    assert "redis20.lost" in data["medians"]["uvicorn"]["bare"]
