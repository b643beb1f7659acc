"""Eager dispatch at its edges (found in review): what Channels users' code and tests saw
before it must still hold when a layer message is handled in the sender's call."""

import asyncio
import logging
import secrets
import sys
import time

from channels_layer import channel_layers, get_channel_layer
from channels_layer.metrics import CALL_SECONDS
from consumers.generic.websocket import AsyncWebsocketConsumer
from consumers.testing import WebsocketCommunicator
from tests.redis_servers import REDIS_URL


class Member(AsyncWebsocketConsumer):
    groups = ["room"]
    instances: list = []

    async def connect(self):
        self.x = "unset"
        self.seen: list = []
        type(self).instances.append(self)
        await self.accept()

    async def receive(self, text_data=None, bytes_data=None):
        self.x = text_data

    async def show_x(self, message):
        await self.send(text_data=f"x={self.x}")

    async def ev_exc_info(self, message):
        self.seen.append(sys.exc_info()[1])
        await self.send(text_data="exc_info")

    async def ev_boom(self, message):
        raise RuntimeError("the handler's own")

    async def ev_slow(self, message):
        time.sleep(0.1)
        await self.send(text_data="slow")


async def connected():
    Member.instances = []
    socket = WebsocketCommunicator(Member.as_asgi(), "/ws/")
    assert (await socket.connect())[0]
    consumer = Member.instances[-1]
    await get_channel_layer().send(consumer.channel_name, {"type": "show.x"})
    assert await socket.receive_from() == "x=unset"  # its layer task runs: now idle
    return socket, consumer


async def test_a_frame_given_before_a_layer_message_is_handled_first():
    """As in Channels: a test sends a frame, then asks over the layer for what it set."""
    socket, consumer = await connected()
    await socket.send_to(text_data="1")
    await get_channel_layer().send(consumer.channel_name, {"type": "show.x"})
    assert await socket.receive_from() == "x=1"
    await socket.disconnect()


async def test_a_loop_whose_task_factory_takes_no_context_still_delivers():
    """An older tracing library's ``factory(loop, coro)``: no eager hand-over, but every
    message still arrives."""
    loop = asyncio.get_running_loop()
    loop.set_task_factory(lambda loop, coro: asyncio.Task(coro, loop=loop))
    try:
        socket, consumer = await connected()
        await socket.send_to(text_data="2")
        await get_channel_layer().send(consumer.channel_name, {"type": "show.x"})
        assert await socket.receive_from() == "x=2"
        await socket.disconnect()
    finally:
        loop.set_task_factory(None)


async def test_a_sender_handling_an_exception_does_not_pass_it_to_the_handlers():
    socket, consumer = await connected()
    try:
        raise KeyError("the sender's own")
    except KeyError:
        await get_channel_layer().group_send("room", {"type": "ev.exc_info"})
    assert await socket.receive_from() == "exc_info"
    assert consumer.seen == [None]
    await socket.disconnect()


async def test_a_handlers_error_is_not_chained_to_the_senders(caplog):
    socket, _ = await connected()
    caplog.set_level(logging.ERROR)
    try:
        raise KeyError("the sender's own")
    except KeyError:
        await get_channel_layer().group_send("room", {"type": "ev.boom"})
    assert (await socket.receive_output())["code"] == 1011
    (record,) = [record for record in caplog.records if record.exc_info]
    assert isinstance(record.exc_info[1], RuntimeError)
    assert record.exc_info[1].__context__ is None


async def test_the_redis_layers_send_time_leaves_out_the_handlers_it_ran(settings):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_layer.redis.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "prefix": f"eager-edges-{secrets.token_hex(6)}"},
        }
    }
    channel_layers.reset()
    socket, consumer = await connected()
    timings = CALL_SECONDS.labels("redis", "send")
    _, before = timings.read()
    await get_channel_layer().send(consumer.channel_name, {"type": "ev.slow"})
    assert await socket.receive_from() == "slow"
    assert timings.read()[1] - before < 0.05  # the handler alone took 0.1 s
    await socket.disconnect()
    await get_channel_layer().flush()
    await get_channel_layer().close()
