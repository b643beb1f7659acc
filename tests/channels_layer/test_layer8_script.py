"""Issue 20, part 8: the inbox send script reads a batch's capacity counts with the
sequence number (one HMGET) and writes them with it (one HSET), instead of one HINCRBY per
call; capacity holds as before, refused calls in a batch included."""

import asyncio

import pytest
import redis

from channels_layer.exceptions import ChannelFull

pytestmark = pytest.mark.single_server


def _calls(client: redis.Redis, command: str) -> int:
    return client.info("commandstats").get(f"cmdstat_{command}", {"calls": 0})["calls"]


@pytest.fixture
def server(redis_servers):
    (started,) = redis_servers(1)
    return started


async def _send_all(layer, sends) -> list[BaseException | None]:
    results = await asyncio.gather(
        *(layer.send(channel, {"type": "m", "n": n}) for n, channel in enumerate(sends)),
        return_exceptions=True,
    )
    return [result if isinstance(result, BaseException) else None for result in results]


async def test_a_batch_is_counted_without_a_call_per_message(make_layer, server):
    url = f"redis://127.0.0.1:{server.port}"
    sender, receiver = make_layer(hosts=[url]), make_layer(hosts=[url])
    a, b = await receiver.new_channel(), await receiver.new_channel()
    client = redis.Redis(port=server.port)
    pending = sender._key("pending", receiver.client_prefix)
    await sender.send(a, {"type": "warm"})  # connected, script loaded
    before = {name: _calls(client, name) for name in ("hincrby", "hmget", "hset", "evalsha")}
    assert await _send_all(sender, [a, b] * 10) == [None] * 20
    calls = {name: _calls(client, name) - before[name] for name in before}
    assert calls["hincrby"] == 0  # was one per message
    assert calls["hmget"] == calls["hset"] == calls["evalsha"] < 20  # one each per batch
    assert client.hget(pending, a) == b"11" and client.hget(pending, b) == b"10"
    for channel, expected in ((a, 11), (b, 10)):
        for _ in range(expected):
            await asyncio.wait_for(receiver.receive(channel), 2)
    for _ in range(100):  # the taken counts are flushed on the receiver's loop turns
        if client.hget(pending, a) is None and client.hget(pending, b) is None:
            break
        await asyncio.sleep(0.01)
    assert client.hget(pending, a) is None and client.hget(pending, b) is None


async def test_refused_calls_in_a_batch_leave_the_count_at_capacity(make_layer, server):
    url = f"redis://127.0.0.1:{server.port}"
    sender = make_layer(hosts=[url], channel_capacity={"specific.*": 3})
    receiver = make_layer(hosts=[url], channel_capacity={"specific.*": 3})
    full, other = await receiver.new_channel(), await receiver.new_channel()
    client = redis.Redis(port=server.port)
    pending = sender._key("pending", receiver.client_prefix)
    errors = await _send_all(sender, [full, other, full, full, full, other, full])
    assert [type(error) for error in errors] == [
        type(None),
        type(None),
        type(None),
        type(None),
        ChannelFull,
        type(None),
        ChannelFull,
    ]
    assert client.hget(pending, full) == b"3" and client.hget(pending, other) == b"2"
    received = [(await asyncio.wait_for(receiver.receive(full), 2))["n"] for _ in range(3)]
    assert received == [0, 2, 3]  # in order, the refused ones missing
    for _ in range(100):
        if client.hget(pending, full) is None:
            break
        await asyncio.sleep(0.01)
    await sender.send(full, {"type": "m", "n": 7})  # room again once they were taken
    assert (await asyncio.wait_for(receiver.receive(full), 2))["n"] == 7
