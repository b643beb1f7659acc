"""Issue 20, part 6: a send to another process's channel, made on the layer's home loop,
goes straight to its batcher (no ``run``/``call``/``script`` hops), and keeps what those
hops gave: retries while Redis is away, other loops handed to the home loop, ChannelFull."""

import asyncio
import threading

import pytest

from channels_layer import ChannelFull
from channels_layer.redis_connections import RedisConnections

pytestmark = pytest.mark.single_server


async def test_a_send_on_the_home_loop_skips_the_hops(make_layer, monkeypatch):
    sender, receiver = make_layer(), make_layer()
    channel = await receiver.new_channel()
    await sender.send(channel, {"type": "n", "n": 0})  # the home loop and its state made
    hops: list[str] = []
    for name in ("run", "call", "script"):
        original = getattr(RedisConnections, name)

        def counting(self, *args, _name=name, _original=original, **kwargs):
            hops.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(RedisConnections, name, counting)
    for n in range(1, 4):
        await sender.send(channel, {"type": "n", "n": n})
    assert hops == []
    monkeypatch.undo()
    assert [(await asyncio.wait_for(receiver.receive(channel), 2))["n"] for _ in range(4)] == [
        0,
        1,
        2,
        3,
    ]


async def test_a_send_is_retried_until_redis_is_back(make_layer, redis_servers):
    (server,) = redis_servers(1)
    sender = make_layer(hosts=[server.url], retry_timeout=5)
    receiver = make_layer(hosts=[server.url])
    channel = await receiver.new_channel()
    await sender.send(channel, {"type": "n", "n": 0})
    server.stop()
    loop = asyncio.get_running_loop()
    loop.call_later(0.5, server.start)
    await asyncio.wait_for(sender.send(channel, {"type": "n", "n": 1}), 8)
    assert (await asyncio.wait_for(receiver.receive(channel), 5))["n"] == 1


async def test_a_send_from_another_thread_goes_through_the_home_loop(make_layer):
    sender, receiver = make_layer(), make_layer()
    channel = await receiver.new_channel()
    await sender.send(channel, {"type": "n", "n": 0})
    thread = threading.Thread(
        target=lambda: asyncio.run(sender.send(channel, {"type": "n", "n": 1}))
    )
    thread.start()
    await asyncio.get_running_loop().run_in_executor(None, thread.join)
    assert [(await asyncio.wait_for(receiver.receive(channel), 2))["n"] for _ in range(2)] == [
        0,
        1,
    ]


async def test_a_full_channel_still_refuses(make_layer):
    sender, receiver = make_layer(capacity=1), make_layer(capacity=1)
    channel = await receiver.new_channel()
    await sender.send(channel, {"type": "n", "n": 0})
    with pytest.raises(ChannelFull):
        await sender.send(channel, {"type": "n", "n": 1})
