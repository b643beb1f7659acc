"""``ScriptBatcher``: one batch in flight, the calls made meanwhile leave together in the
next (one EVALSHA per script and keys), in the order they were made; a lone call is one
round trip. Each test has a redis-server of its own, whose command counts it reads."""

import asyncio

import pytest
import redis
from redis.asyncio import Redis

from channels_layer import script_batcher
from channels_layer.script_batcher import ScriptBatcher

# Returns, for each call (one ARGV each), its argument and the list's length after the push:
# the order in which Redis saw the calls.
PUSH = """
local results = {}
for i = 1, #ARGV do
  results[#results + 1] = {ARGV[i], redis.call('RPUSH', KEYS[1], ARGV[i])}
end
return results
"""


def evalsha_calls(port: int) -> int:
    stats = redis.Redis(port=port).info("commandstats")
    return stats.get("cmdstat_evalsha", {}).get("calls", 0)


@pytest.fixture
def server_port(redis_servers):
    (server,) = redis_servers(1)
    return server.port


async def test_a_lone_call_is_one_round_trip_and_later_calls_share_the_next(server_port):
    client = Redis(port=server_port)
    batcher = ScriptBatcher(client, {"push": PUSH})
    assert await batcher.call("push", ["list"], ["first"]) == [b"first", 1]  # loads it
    before = evalsha_calls(server_port)
    assert await batcher.call("push", ["list"], ["alone"]) == [b"alone", 2]
    assert evalsha_calls(server_port) - before == 1
    # One call goes out; the 30 made while it is on its way leave together, in order.
    lone = batcher.call("push", ["list"], ["lead"])
    await asyncio.sleep(0)  # its batch is written
    later = [batcher.call("push", ["list"], [f"m{n}"]) for n in range(30)]
    results = await asyncio.gather(lone, *later)
    assert [name for name, _ in results] == [b"lead"] + [f"m{n}".encode() for n in range(30)]
    assert [length for _, length in results] == list(range(3, 34))
    assert evalsha_calls(server_port) - before == 3
    await client.aclose()


async def test_a_script_redis_forgot_is_loaded_again(server_port):
    client = Redis(port=server_port)
    batcher = ScriptBatcher(client, {"push": PUSH})
    assert await batcher.call("push", ["list"], ["a"]) == [b"a", 1]
    await client.script_flush()
    assert await asyncio.gather(
        batcher.call("push", ["list"], ["b"]), batcher.call("push", ["other"], ["c"])
    ) == [[b"b", 2], [b"c", 1]]
    await client.aclose()


async def test_an_error_reaches_its_callers_only_and_the_batcher_goes_on(server_port):
    client = Redis(port=server_port)
    await client.set("text", "not a list")
    batcher = ScriptBatcher(client, {"push": PUSH})
    wrong = batcher.call("push", ["text"], ["x"])
    right = batcher.call("push", ["list"], ["y"])
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        await wrong
    assert await right == [b"y", 1]
    assert await batcher.call("push", ["list"], ["z"]) == [b"z", 2]
    await client.aclose()


async def test_a_redis_restart_costs_the_next_call_nothing(redis_servers):
    """The kept connection dies with the server; the next call reconnects once, as the
    layer's clients do, instead of failing."""
    (server,) = redis_servers(1)
    client = Redis(port=server.port)
    batcher = ScriptBatcher(client, {"push": PUSH})
    assert await batcher.call("push", ["list"], ["a"]) == [b"a", 1]
    server.kill()
    server.start()
    assert await batcher.call("push", ["list"], ["b"]) == [b"b", 1]  # a fresh server
    await client.aclose()


def test_the_installed_redis_py_has_the_private_write_batches_use():
    from redis.asyncio.connection import AbstractConnection

    assert callable(getattr(AbstractConnection, script_batcher.BARE_WRITE, None))


async def test_without_redis_pys_private_write_batches_use_the_public_one(server_port, monkeypatch):
    monkeypatch.setattr(script_batcher, "BARE_WRITE", "_a_name_redis_py_does_not_have")
    client = Redis(port=server_port)
    batcher = ScriptBatcher(client, {"push": PUSH})
    results = await asyncio.gather(*(batcher.call("push", ["list"], [f"m{n}"]) for n in range(5)))
    assert results == [[f"m{n}".encode(), n + 1] for n in range(5)]
    await client.aclose()


async def test_a_caller_awaiting_each_call_in_turn_gets_no_task_per_call(server_port):
    """Its next call, made as the last reply arrives, is picked up by the batch that is
    still going (one turn of the loop later), not by a new task on a turn of its own."""
    client = Redis(port=server_port)
    batcher = ScriptBatcher(client, {"push": PUSH})
    await batcher.call("push", ["list"], ["load"])
    loop = asyncio.get_running_loop()
    created = 0

    def counting_factory(loop, coroutine, **kwargs):
        nonlocal created
        created += 1
        return asyncio.Task(coroutine, loop=loop, **kwargs)

    loop.set_task_factory(counting_factory)
    try:
        for n in range(20):
            assert await batcher.call("push", ["list"], [f"m{n}"]) == [f"m{n}".encode(), n + 2]
    finally:
        loop.set_task_factory(None)
    assert created <= 1
    await client.aclose()


ECHO = "return {ARGV}"  # one result per call: its arguments


async def test_arguments_of_every_type_reach_the_script_as_redis_py_would_write_them(
    server_port,
):
    client = Redis(port=server_port)
    batcher = ScriptBatcher(client, {"echo": ECHO})
    args = ["é", b"\x00\xff\r\n", 12, -3, 1.5, "", b"x" * 10_000]
    assert await batcher.call("echo", ["k"], args) == [
        "é".encode(),
        b"\x00\xff\r\n",
        b"12",
        b"-3",
        b"1.5",
        b"",
        b"x" * 10_000,
    ]
    with pytest.raises(redis.DataError):
        await batcher.call("echo", ["k"], [True])
    assert await batcher.call("echo", ["k"], ["after"]) == [b"after"]
    await client.aclose()


async def test_a_result_callback_runs_before_the_future_resolves_even_if_it_was_cancelled(
    server_port,
):
    client = Redis(port=server_port)
    batcher = ScriptBatcher(client, {"push": PUSH})
    seen = []
    kept = batcher.call(
        "push", ["list"], ["kept"], lambda result: seen.append((result, kept.done()))
    )
    dropped = batcher.call("push", ["list"], ["dropped"], seen.append)
    dropped.cancel()  # its caller went away: the call still goes out, and reports
    failing = batcher.call("push", ["list"], ["failing"], lambda result: 1 / 0)
    assert await kept == [b"kept", 1]
    assert await failing == [b"failing", 3]  # a failing callback spoils no one's result
    assert seen == [([b"kept", 1], False), [b"dropped", 2]]
    await client.aclose()
