"""A Redis ``receive()`` on a loop that is not the layer's home loop (``async_to_sync``
from a worker thread): it asks the home loop to start the inbox reader once, then waits
parked; it does not hop to the home loop again and again until a message comes."""

import asyncio
import time

from channels_layer.redis import RedisChannelLayer


async def test_a_receive_off_the_home_loop_parks_after_one_hop(make_layer):
    layer: RedisChannelLayer = make_layer()
    channel = await layer.new_channel()
    starts = 0
    start_reading = layer._delivery.start_reading

    async def counting() -> None:
        nonlocal starts
        starts += 1
        await start_reading()

    layer._delivery.start_reading = counting  # type: ignore[method-assign]

    async def receive_on_its_own_loop() -> tuple[dict, int, float]:
        receiving = asyncio.ensure_future(layer.receive(channel))
        cpu = time.process_time()
        await asyncio.sleep(0.3)
        parked_starts, cpu = starts, time.process_time() - cpu
        await layer.send(channel, {"type": "m"})
        return await asyncio.wait_for(receiving, 2), parked_starts, cpu

    message, parked_starts, cpu = await asyncio.to_thread(asyncio.run, receive_on_its_own_loop())
    assert message == {"type": "m"}
    assert parked_starts <= 2  # hopped home to start the reader, then parked
    assert cpu < 0.15  # waiting took no CPU to speak of
