"""``bench.floor``, the benchmark's reference for what the Channels API itself costs: the
consumers the benchmark builds on it must do their job (the load generator counts replies,
not what they say), or the floor would read cheaper than it is."""

from __future__ import annotations

import json

from bench.apps.routes import build
from consumers.testing import WebsocketCommunicator

application = build("bench.floor", http=None)


async def connected(path: str) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(application, path)
    accepted, _ = await communicator.connect()
    assert accepted
    return communicator


async def test_async_and_json_echo_say_back_what_came() -> None:
    echo, json_echo = await connected("/ws/echo/"), await connected("/ws/json/")
    for text in ("one", "two"):
        await echo.send_to(text_data=text)
        assert await echo.receive_from() == text
    await json_echo.send_to(text_data=json.dumps({"text": "x", "n": 1}))
    assert json.loads(await json_echo.receive_from()) == {"text": "x", "n": 1}
    await echo.disconnect()
    await json_echo.disconnect()


async def test_sync_echo_runs_off_the_loop_and_keeps_each_connections_order() -> None:
    first, second = await connected("/ws/sync/"), await connected("/ws/sync/")
    for number in range(20):
        await first.send_to(text_data=f"a{number}")
        await second.send_to(text_data=f"b{number}")
    assert [await first.receive_from() for _ in range(20)] == [f"a{n}" for n in range(20)]
    assert [await second.receive_from() for _ in range(20)] == [f"b{n}" for n in range(20)]
    await first.disconnect()
    await second.disconnect()


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


def test_the_harness_measures_the_floor_beside_bare_and_not_over_redis(tmp_path) -> None:
    from tests.test_bench import tiny_run

    data = tiny_run(tmp_path, "floor,bare", "echo,broadcast", 90)
    table = (tmp_path / "latest.md").read_text()
    assert "| bare | API floor | ours/Channels |" in table
    floor = data["medians"]["uvicorn"]["floor"]
    assert all(floor[f"{variant}.rps"] > 0 for variant in ("async", "sync", "json"))
    assert floor["mem20.lost"] == 0
    # Two processes over Redis need a layer the floor does not have: not run, not faked.
    assert not [key for key in floor if key.startswith("redis")]
    assert "redis20.lost" in data["medians"]["uvicorn"]["bare"]
