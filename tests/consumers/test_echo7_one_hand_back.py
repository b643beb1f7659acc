"""A sync handler's end rides on the wake-up its send asked for: a handler that sends and
ends hands one callback back to the loop, not two, and its result, error, order of sends
and a cancelled run behave as before."""

import asyncio
import threading

import pytest

from consumers import threads
from consumers.threads import Outbox, SyncPool


def counting_hand_backs(monkeypatch):
    """Every ``hand_back`` callback, by name, as pool threads and puts call it."""
    called: list[str] = []
    real = threads.hand_back

    def counting(loop, callback, target, value):
        called.append(callback.__name__)
        return real(loop, callback, target, value)

    monkeypatch.setattr(threads, "hand_back", counting)
    return called


def held_send(sent):
    """A send that waits until the test lets it go; ``started`` is set once one waits."""
    started, go = threading.Event(), asyncio.Event()

    async def send(message):
        started.set()
        await go.wait()
        sent.append(message["n"])

    return send, started, go


async def test_a_handler_that_ends_while_its_send_is_under_way_costs_no_second_hand_back(
    monkeypatch,
):
    called = counting_hand_backs(monkeypatch)
    sent: list[int] = []
    send, started, go = held_send(sent)
    outbox = Outbox(send)

    def handler():
        outbox.put({"n": 1})
        assert started.wait(5)  # the loop is sending it now: a look at the queue is due
        return "result"

    run = asyncio.ensure_future(outbox.run(SyncPool(1), handler))
    async with asyncio.timeout(3):
        while not started.is_set():
            await asyncio.sleep(0.001)
    await asyncio.sleep(0.05)  # the handler has ended meanwhile
    go.set()
    assert await asyncio.wait_for(run, 3) == "result"
    assert sent == [1]
    assert called == ["_woken"]  # the end: no callback of its own
    assert outbox.idle and not outbox._wake_scheduled


async def test_an_error_after_a_send_comes_back_the_same_way(monkeypatch):
    called = counting_hand_backs(monkeypatch)
    sent: list[int] = []
    send, started, go = held_send(sent)
    outbox = Outbox(send)

    def handler():
        outbox.put({"n": 1})
        outbox.put({"n": 2})
        assert started.wait(5)
        raise KeyError("boom")

    run = asyncio.ensure_future(outbox.run(SyncPool(1), handler))
    async with asyncio.timeout(3):
        while not started.is_set():
            await asyncio.sleep(0.001)
    await asyncio.sleep(0.05)
    go.set()
    with pytest.raises(KeyError, match="boom"):
        await asyncio.wait_for(run, 3)
    assert sent == [1, 2]
    assert called == ["_woken"]


async def test_a_handler_that_sends_nothing_still_wakes_its_task(monkeypatch):
    called = counting_hand_backs(monkeypatch)

    async def send(message):
        raise AssertionError("nothing to send")

    outbox = Outbox(send)
    assert await asyncio.wait_for(outbox.run(SyncPool(1), lambda: 7), 3) == 7
    assert called == ["ended"]


async def test_an_end_after_the_loop_looked_at_the_queue_wakes_the_task():
    """The handler sends, the loop sends it and finds the queue empty, and only then does
    the handler end: the end hands back a wake-up of its own."""
    sent: list[int] = []
    out = threading.Event()

    async def send(message):
        sent.append(message["n"])
        out.set()

    outbox = Outbox(send)

    def handler():
        outbox.put({"n": 1})
        assert out.wait(5)
        while outbox._wake_scheduled:  # the loop clears it right after the send
            threading.Event().wait(0.001)
        outbox.put({"n": 2})
        return "late"

    assert await asyncio.wait_for(outbox.run(SyncPool(1), handler), 3) == "late"
    assert sent == [1, 2]


async def test_a_cancelled_runs_late_end_leaves_the_outbox_working():
    sent: list[int] = []
    released = threading.Event()

    async def send(message):
        sent.append(message["n"])

    outbox = Outbox(send)
    pool = SyncPool(1)

    def handler():
        outbox.put({"n": 1})
        released.wait(5)
        outbox.put({"n": 2})
        return "ignored"

    run = asyncio.ensure_future(outbox.run(pool, handler))
    async with asyncio.timeout(3):
        while sent != [1]:
            await asyncio.sleep(0.001)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    released.set()
    async with asyncio.timeout(3):
        while sent != [1, 2]:
            await asyncio.sleep(0.001)
    await outbox.flush()
    for n in (3, 4):
        assert await asyncio.wait_for(outbox.run(pool, outbox.put, {"n": n}), 3) is None
    assert sent == [1, 2, 3, 4]
    assert outbox.idle and not outbox._wake_scheduled
