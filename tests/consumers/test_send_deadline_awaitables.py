"""The send deadline steps a coroutine send as it is, and any other awaitable a send returns
(a future, an object with ``__await__``) through its ``__await__``: both end, wait, count
and time out alike."""

from __future__ import annotations

import asyncio

import pytest

from consumers.send_deadline import SendDeadline

SCOPE = {"type": "websocket", "path": "/ws/x/", "client": ("127.0.0.1", 5000)}
FRAME = {"type": "websocket.send", "text": "x"}


class Awaiting:
    """An awaitable that is not a coroutine: it waits for ``ready``, then records the send."""

    def __init__(self, ready: asyncio.Event, sent: list) -> None:
        self.ready = ready
        self.sent = sent

    def __await__(self):
        yield from self.ready.wait().__await__()
        self.sent.append(FRAME)


def sends(kind: str, ready: asyncio.Event, sent: list):
    async def coroutine_send(message):
        await ready.wait()
        sent.append(message)

    def future_send(message):
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if ready.is_set():
            sent.append(message)
            future.set_result(None)
        else:
            loop.create_task(ready.wait()).add_done_callback(
                lambda _: (sent.append(message), future.set_result(None))
            )
        return future

    def object_send(message):
        return Awaiting(ready, sent)

    return {"coroutine": coroutine_send, "future": future_send, "object": object_send}[kind]


@pytest.mark.parametrize("kind", ["coroutine", "future", "object"])
async def test_each_kind_of_send_ends_waits_and_counts(kind):
    ready, sent, counted = asyncio.Event(), [], []
    ready.set()
    send = SendDeadline(sends(kind, ready, sent), SCOPE, timeout=1.0, sent=counted.append)
    await send(FRAME)  # ends at once
    ready.clear()
    asyncio.get_running_loop().call_later(0.05, ready.set)
    await send(FRAME)  # waits, within the deadline
    assert sent == [FRAME, FRAME]
    assert counted == [FRAME, FRAME]


@pytest.mark.parametrize("kind", ["coroutine", "future", "object"])
async def test_each_kind_of_send_times_out(kind):
    ready, sent = asyncio.Event(), []
    send = SendDeadline(sends(kind, ready, sent), SCOPE, timeout=0.1)
    with pytest.raises(TimeoutError):
        await send(FRAME)
    assert sent == []
    assert asyncio.current_task().cancelling() == 0
