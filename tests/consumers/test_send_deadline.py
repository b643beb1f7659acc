"""The WebSocket send deadline (Uvicorn, Hypercorn): one timer per connection, not per send.

It must behave as ``asyncio.timeout`` around each send did: a send waiting past the
deadline raises ``TimeoutError`` (logged once, counted), another cancellation stays a
cancellation, and a send that ends in time leaves its task as it found it.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from consumers import metrics
from consumers.send_deadline import SendDeadline

SCOPE = {"type": "websocket", "path": "/ws/x/", "client": ("127.0.0.1", 5000)}
FRAME = {"type": "websocket.send", "text": "x"}


class Client:
    """An ASGI send whose client reads only while ``reading`` is set."""

    def __init__(self) -> None:
        self.reading = asyncio.Event()
        self.reading.set()
        self.sent = 0

    async def send(self, message: dict) -> None:
        await self.reading.wait()
        self.sent += 1


async def test_a_send_waiting_past_the_deadline_raises_timeout_error(caplog):
    client = Client()
    send = SendDeadline(client.send, SCOPE, timeout=0.2)
    dropped = metrics.tally.slow_dropped
    for _ in range(50):  # the quick sends before it do not move its deadline
        await send(FRAME)
    client.reading.clear()
    started = asyncio.get_running_loop().time()
    with caplog.at_level(logging.WARNING, "consumers.consumer"), pytest.raises(TimeoutError):
        await send(FRAME)
    waited = asyncio.get_running_loop().time() - started
    assert 0.2 <= waited < 0.5
    assert asyncio.current_task().cancelling() == 0
    assert [r.getMessage() for r in caplog.records] == [
        "Giving up on the WebSocket of 127.0.0.1:5000 on /ws/x/: it stopped reading (a send "
        "waited over CONSUMERS_WEBSOCKET_SEND_TIMEOUT, 0.2 s)"
    ]
    assert metrics.tally.slow_dropped == dropped + (1 if metrics.enabled() else 0)


async def test_a_send_that_ends_in_time_after_an_earlier_one_timed_out_is_kept():
    client = Client()
    send = SendDeadline(client.send, SCOPE, timeout=0.15)
    client.reading.clear()
    with pytest.raises(TimeoutError):
        await send(FRAME)
    asyncio.get_running_loop().call_later(0.1, client.reading.set)
    await send(FRAME)  # waits 0.1 s of its own 0.15
    assert client.sent == 1


async def test_another_cancellation_stays_a_cancellation():
    client = Client()
    client.reading.clear()
    send = SendDeadline(client.send, SCOPE, timeout=5)
    task = asyncio.ensure_future(send(FRAME))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_sends_from_two_tasks_each_have_their_own_deadline():
    """A stuck send of one task times out while the other task's sends go through."""
    stuck, quick = Client(), Client()
    stuck.reading.clear()

    async def either(message: dict) -> None:
        await (stuck if message["text"] == "stuck" else quick).send(message)

    send = SendDeadline(either, SCOPE, timeout=0.2)
    waiting = asyncio.ensure_future(send({"type": "websocket.send", "text": "stuck"}))

    async def keep_sending() -> None:
        for _ in range(30):
            await send(FRAME)
            await asyncio.sleep(0.01)

    sender = asyncio.ensure_future(keep_sending())
    with pytest.raises(TimeoutError):
        await waiting
    await sender  # not cancelled by the other task's deadline
    assert quick.sent == 30 and stuck.sent == 0
