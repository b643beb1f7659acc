"""One Redis layer used from several event loops in turn, as sync code between async code
uses it (async_to_sync), and again after close()."""

import asyncio
import secrets
import threading
import time

import pytest
import redis
from asgiref.sync import async_to_sync

from channels_layer.redis import RedisChannelLayer
from tests.redis_servers import REDIS_URL


def new_layer(prefix):
    return RedisChannelLayer(hosts=[REDIS_URL], prefix=prefix, capacity=1000)


async def awaited(coroutine):
    return await coroutine


def in_a_thread(function, timeout=20):
    """Run ``function`` in a thread and fail if it has not returned within ``timeout``."""
    outcome = {}

    def target():
        try:
            outcome["result"] = function()
        except BaseException as error:  # reported below
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"did not return within {timeout} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result")


def subscribers(topic):
    return redis.Redis.from_url(REDIS_URL).pubsub_numsub(topic)[0][1]


def test_async_and_sync_turns_neither_duplicate_nor_reorder_messages():
    # The layer of one process: its consumers receive, its views and commands send.
    prefix = f"test-{secrets.token_hex(6)}"
    layer = sender = new_layer(prefix)
    main_loop = asyncio.new_event_loop()

    def run_in_main_loop(coroutine):  # an async test, Daphne, runworker
        return main_loop.run_until_complete(coroutine)

    def run_in_sync_code(coroutine):  # a view or command calling async_to_sync
        return async_to_sync(awaited)(coroutine)

    async def exchange(turn):
        for n in range(3):
            await sender.send(channel, {"type": "direct", "turn": turn, "n": n})
            await sender.group_send("room", {"type": "broadcast", "turn": turn, "n": n})
        return [await asyncio.wait_for(layer.receive(channel), 3) for _ in range(6)]

    def everything_left():
        async def drain():
            left = []
            while True:
                try:
                    left.append(await asyncio.wait_for(layer.receive(channel), 0.5))
                except TimeoutError:
                    return left

        return run_in_main_loop(drain())

    try:
        channel = run_in_main_loop(layer.new_channel())
        run_in_main_loop(layer.group_add("room", channel))
        for turn in range(6):
            run = run_in_main_loop if turn % 2 == 0 else run_in_sync_code
            got = in_a_thread(lambda run=run, turn=turn: run(exchange(turn)))
            assert sorted(got, key=lambda m: (m["n"], m["type"] == "broadcast")) == [
                {"type": kind, "turn": turn, "n": n}
                for n in range(3)
                for kind in ("direct", "broadcast")
            ], f"turn {turn}"
            for n in range(3):  # each direct message before the broadcast sent after it
                assert got.index({"type": "direct", "turn": turn, "n": n}) < got.index(
                    {"type": "broadcast", "turn": turn, "n": n}
                )
        assert everything_left() == []  # no broadcast was delivered twice
        topic = f"{prefix}:broadcast:room"
        deadline = time.monotonic() + 3
        while subscribers(topic) != 1 and time.monotonic() < deadline:
            run_in_main_loop(asyncio.sleep(0.05))
        assert subscribers(topic) == 1  # the replaced loops' subscriptions are gone
    finally:
        run_in_main_loop(layer.flush())
        run_in_main_loop(layer.close())
        main_loop.close()


@pytest.mark.parametrize("closing", ["close", "close_pools"])
def test_receive_after_close_works_on_a_new_loop_and_asyncio_run_exits(closing):
    prefix = f"test-{secrets.token_hex(6)}"
    layer = new_layer(prefix)

    async def use(text):
        channel = await layer.new_channel()
        await layer.group_add("room", channel)
        await layer.send(channel, {"type": "direct", "text": text})
        await layer.send("named", {"type": "named", "text": text})
        await layer.group_send("room", {"type": "broadcast", "text": text})
        got = [await asyncio.wait_for(layer.receive(channel), 3) for _ in range(2)]
        got.append(await asyncio.wait_for(layer.receive("named"), 3))
        started = time.monotonic()
        await getattr(layer, closing)()
        assert time.monotonic() - started < 2
        return [(message["type"], message["text"]) for message in got]

    expected = [("direct", "{}"), ("broadcast", "{}"), ("named", "{}")]
    for text in ("first loop", "second loop", "third loop"):
        got = in_a_thread(lambda text=text: asyncio.run(use(text)))
        assert got == [(kind, form.format(text)) for kind, form in expected]
    asyncio.run(layer.flush())
    asyncio.run(layer.close())
