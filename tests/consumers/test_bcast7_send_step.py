"""``SendDeadline`` steps the server's send with ``next()`` on its ``__await__()``, and
``AsyncWebsocketConsumer.send`` skips awaiting the done future of a send that ended: a send
that returns a value, raises in its first step, or suspends and is then cancelled or
timed out behaves as when it was stepped with ``send(None)``."""

from __future__ import annotations

import asyncio

import pytest

from consumers.generic.websocket import AsyncWebsocketConsumer
from consumers.send_deadline import SendDeadline

SCOPE = {"type": "websocket", "path": "/ws/x/", "client": ("127.0.0.1", 5000)}
FRAME = {"type": "websocket.send", "text": "x"}


async def test_a_send_that_returns_a_value_ends_at_once_and_counts_once():
    counted = []

    async def send(message):
        return "ignored"

    deadline = SendDeadline(send, SCOPE, timeout=1.0, sent=counted.append)
    waiting = deadline(FRAME)
    assert waiting.done()  # the shared done future: nothing left to run
    await waiting
    assert counted == [FRAME]


async def test_an_error_in_the_first_step_is_raised_by_the_call_and_not_counted():
    counted = []

    async def send(message):
        raise OSError("gone")

    deadline = SendDeadline(send, SCOPE, timeout=1.0, sent=counted.append)
    with pytest.raises(OSError, match="gone"):
        deadline(FRAME)
    assert counted == []


async def test_a_suspended_coroutine_send_is_closed_when_its_task_is_cancelled():
    closed, counted = [], []

    async def send(message):
        try:
            await asyncio.sleep(10)
        finally:
            closed.append(True)

    deadline = SendDeadline(send, SCOPE, timeout=5.0, sent=counted.append)
    task = asyncio.ensure_future(deadline(FRAME))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert closed == [True]
    assert counted == []


async def test_a_suspended_coroutine_send_past_its_deadline_is_a_timeout():
    async def send(message):
        await asyncio.sleep(10)

    deadline = SendDeadline(send, SCOPE, timeout=0.05)
    with pytest.raises(TimeoutError):
        await deadline(FRAME)
    assert asyncio.current_task().cancelling() == 0


class Echo(AsyncWebsocketConsumer):
    pass


async def test_a_send_that_ended_at_once_is_sent_and_counted_without_waiting():
    sent, counted = [], []

    async def server_send(message):
        sent.append(message)

    consumer = Echo()
    consumer.base_send = SendDeadline(server_send, SCOPE, timeout=1.0, sent=counted.append)
    await consumer.send(text_data="x")
    assert sent == counted == [FRAME]


async def test_any_other_awaitable_a_send_gives_is_still_awaited():
    loop = asyncio.get_running_loop()
    pending = loop.create_future()
    consumer = Echo()
    consumer.base_send = lambda message: pending
    sending = asyncio.ensure_future(consumer.send(text_data="x"))
    await asyncio.sleep(0.01)
    assert not sending.done()  # waits on the server's future
    pending.set_result(None)
    await sending


async def test_a_send_that_returns_none_still_fails_to_be_awaited():
    consumer = Echo()
    consumer.base_send = lambda message: None
    with pytest.raises(TypeError):
        await consumer.send(text_data="x")
