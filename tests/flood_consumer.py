"""A consumer that floods its client when asked, for the slow-client drills (tests/e2e's
bare application and tests/reliability's Daphne application): ``"count size"`` sends
``count`` binary frames of ``size`` bytes; anything else is echoed. Import it once Django
is set up."""

import asyncio

from consumers.generic.websocket import AsyncWebsocketConsumer


class Flood(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        count, _, size = (text_data or "").partition(" ")
        if count.isdigit() and size.isdigit():
            frame = b"x" * int(size)
            for _ in range(int(count)):
                await self.send(bytes_data=frame)
                await asyncio.sleep(0)  # a real producer yields between messages
        else:
            await self.send(text_data=text_data, bytes_data=bytes_data)
