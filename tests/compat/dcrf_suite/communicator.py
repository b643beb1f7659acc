"""The ``tests.communicator`` helper djangochannelsrestframework's tests import; its sdist
leaves it out, so this is our own version of what it provides.

Like the library's own, it overrides ``receive_output`` through asgiref's ``future`` and
``output_queue`` so a timeout leaves the application running, which is the use of the
testing API this suite relies on.
"""

import asyncio
from contextlib import asynccontextmanager

from channels.testing import WebsocketCommunicator


class Communicator(WebsocketCommunicator):
    connected = False

    async def receive_output(self, timeout=1):
        if self.future.done():
            self.future.result()
        try:
            async with asyncio.timeout(timeout):
                return await self.output_queue.get()
        except TimeoutError:
            if self.future.done():
                self.future.result()
            raise

    async def connect(self, timeout=1):
        self.connected, subprotocol = await super().connect(timeout)
        return self.connected, subprotocol

    async def disconnect(self, code=1000, timeout=1):
        await super().disconnect(code, timeout)
        self.connected = False

    async def receive_many_json_from(self, timeout=1):
        """Every JSON frame that arrives until none comes for ``timeout`` seconds."""
        frames = []
        while True:
            try:
                frames.append(await self.receive_json_from(timeout=timeout))
            except TimeoutError:
                return frames


@asynccontextmanager
async def connected_communicator(consumer, path="/testws/"):
    communicator = Communicator(consumer, path)
    accepted, _ = await communicator.connect()
    try:
        assert accepted, "the consumer refused the connection"
        yield communicator
    finally:
        if communicator.connected:
            await communicator.disconnect()
