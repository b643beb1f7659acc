"""Issue 20, part 5: what the cheaper send path must keep. The send script counts a
message with one HINCRBY and takes it back when the channel was full; a batch written to
the batcher's own connection has one deadline, not a timer per write and per reply."""

import asyncio

import pytest
import redis
from redis.asyncio import Redis

from channels_layer import ChannelFull
from channels_layer.script_batcher import ScriptBatcher

ONE = "local results = {} for i = 1, #ARGV do results[i] = 1 end return results"
TWO = "local results = {} for i = 1, #ARGV do results[i] = 2 end return results"


async def test_refused_sends_leave_a_full_channels_count_at_its_capacity(make_layer):
    """However many sends a full channel refuses, one message taken makes room for one."""
    sender, receiver = make_layer(capacity=2), make_layer(capacity=2)
    channel = await receiver.new_channel()
    await sender.send(channel, {"type": "n", "n": 0})
    await sender.send(channel, {"type": "n", "n": 1})
    for _ in range(5):
        with pytest.raises(ChannelFull):
            await sender.send(channel, {"type": "n", "n": -1})
    assert (await asyncio.wait_for(receiver.receive(channel), 2))["n"] == 0
    for _ in range(100):  # the taken count reaches Redis in a batch, just after
        try:
            await sender.send(channel, {"type": "n", "n": 2})
            break
        except ChannelFull:
            await asyncio.sleep(0.01)
    else:
        pytest.fail("taking a message from a full channel did not make room")
    with pytest.raises(ChannelFull):
        await sender.send(channel, {"type": "n", "n": 3})
    assert [(await receiver.receive(channel))["n"] for _ in range(2)] == [1, 2]


@pytest.fixture
def server_port(redis_servers):
    (server,) = redis_servers(1)
    return server.port


async def test_a_batch_has_one_deadline_not_a_timer_per_reply(server_port, monkeypatch):
    client = Redis(port=server_port)  # redis-py's default socket_timeout: a deadline is set
    batcher = ScriptBatcher(client, {"one": ONE, "two": TWO})
    await asyncio.gather(batcher.call("one", ["a"], ["x"]), batcher.call("two", ["b"], ["x"]))
    loop = asyncio.get_running_loop()
    timers: list[float] = []
    call_at = loop.call_at

    def counting_call_at(when, callback, *args, **kwargs):
        timers.append(when)
        return call_at(when, callback, *args, **kwargs)

    monkeypatch.setattr(loop, "call_at", counting_call_at)
    # Three EVALSHAs in one batch (two scripts, two sets of keys).
    results = await asyncio.gather(
        batcher.call("one", ["a"], ["x"]),
        batcher.call("two", ["b"], ["y"]),
        batcher.call("one", ["c"], ["z"]),
    )
    assert results == [1, 2, 1]
    assert len(timers) == 1
    await client.aclose()


async def test_a_batch_redis_does_not_answer_is_sent_again_after_the_socket_timeout(
    server_port,
):
    """On a fresh connection, whose connecting waits for Redis as redis-py's does."""
    client = Redis(port=server_port, socket_timeout=0.3)
    batcher = ScriptBatcher(client, {"one": ONE})
    assert await batcher.call("one", ["a"], ["x"]) == 1
    pauser = redis.Redis(port=server_port)
    pauser.execute_command("CLIENT", "PAUSE", 1000, "ALL")
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await batcher.call("one", ["a"], ["y"]) == 1
    assert 0.3 <= loop.time() - started < 2.5
    pauser.close()
    await client.aclose()
