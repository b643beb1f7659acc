"""The sync pool and the outbox: what code in a pool thread relies on, the pool's bound, and
how what a thread sends gets back to the loop."""

import asyncio
import contextvars
import os
import threading
import time

import pytest
from asgiref.sync import SyncToAsync, async_to_sync, sync_to_async

from consumers import threads
from consumers.outbox import Outbox
from consumers.threads import SyncPool, lend_loop_to_async_to_sync

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")


async def test_results_exceptions_and_arguments_come_back():
    pool = SyncPool(2)
    assert await pool.run(divmod, 7, 2) == (3, 1)
    assert await pool.run(int, "ff", base=16) == 255
    with pytest.raises(ZeroDivisionError):
        await pool.run(divmod, 1, 0)


async def test_context_variables_flow_in_and_changes_flow_back():
    pool = SyncPool(2)
    request_id.set("outer")

    def handler():
        seen = request_id.get()
        request_id.set("set in the thread")
        return seen

    assert await pool.run(handler) == "outer"
    assert request_id.get() == "set in the thread"


async def test_async_to_sync_inside_runs_on_the_calling_loop():
    pool = SyncPool(2)
    loop = asyncio.get_running_loop()

    async def where():
        return asyncio.get_running_loop()

    assert await pool.run(async_to_sync(where)) is loop


async def test_a_slow_call_never_holds_up_the_next_while_there_is_room():
    pool = SyncPool(4)
    started = time.perf_counter()
    slow = asyncio.ensure_future(pool.run(time.sleep, 1))
    await asyncio.sleep(0)
    fast = [await pool.run(lambda: time.perf_counter() - started) for _ in range(3)]
    assert max(fast) < 0.5
    await slow


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux's scheduling policies")
async def test_waking_a_pool_thread_does_not_preempt_the_loops_thread_when_asked():
    pool = SyncPool(1, batch_threads=True)
    assert await pool.run(os.sched_getscheduler, 0) == os.SCHED_BATCH
    assert os.sched_getscheduler(0) != os.SCHED_BATCH  # the caller's thread is left alone
    assert await SyncPool(1).run(os.sched_getscheduler, 0) != os.SCHED_BATCH  # the default


@pytest.mark.parametrize(("value", "batch"), [(None, False), (True, True), (False, False)])
def test_the_process_pool_takes_its_scheduling_from_settings(settings, monkeypatch, value, batch):
    monkeypatch.setattr(threads, "_pool", None)
    if value is not None:
        settings.CONSUMERS_SYNC_THREADS_BATCH = value
    assert threads.sync_pool().batch_threads is batch


def test_a_wrong_scheduling_setting_is_refused(settings, monkeypatch):
    monkeypatch.setattr(threads, "_pool", None)
    settings.CONSUMERS_SYNC_THREADS_BATCH = "yes"
    with pytest.raises(ValueError, match="CONSUMERS_SYNC_THREADS_BATCH must be a bool"):
        threads.sync_pool()


async def test_the_pool_never_grows_past_its_size():
    pool = SyncPool(3)
    running, most = 0, 0
    guard = threading.Lock()

    def job():
        nonlocal running, most
        with guard:
            running += 1
            most = max(most, running)
        time.sleep(0.02)
        with guard:
            running -= 1
        return threading.current_thread().name

    names = await asyncio.gather(*(pool.run(job) for _ in range(30)))
    assert most == 3
    assert len(set(names)) == 3


async def test_a_cancelled_caller_does_not_break_the_pool():
    pool = SyncPool(1)
    waiting = asyncio.ensure_future(pool.run(time.sleep, 0.2))
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await pool.run(lambda: "next") == "next"


def test_callers_on_several_loops_each_get_their_own_results():
    pool = SyncPool(4)

    def caller(n):
        return asyncio.run(pool.run(lambda: n * n))

    results = {}
    threads = [
        threading.Thread(target=lambda n=n: results.__setitem__(n, caller(n))) for n in range(5)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert results == {n: n * n for n in range(5)}


async def test_we_lend_the_loop_through_the_same_thread_local_state_asgiref_sets():
    """The pinned asgiref's ``sync_to_async`` leaves in its thread exactly the state
    ``lend_loop_to_async_to_sync`` sets; a release that changes it fails here."""

    def state():
        local = vars(SyncToAsync.threadlocal)
        return {name: local[name] for name in sorted(local)}

    theirs = await sync_to_async(state)()
    loop = asyncio.get_running_loop()

    def ours():
        lend_loop_to_async_to_sync(loop)
        return state()

    mine = await asyncio.to_thread(ours)
    assert set(theirs) == set(mine) == {"main_event_loop", "main_event_loop_pid", "task_context"}
    assert mine["main_event_loop"] is theirs["main_event_loop"] is loop
    assert mine["main_event_loop_pid"] == theirs["main_event_loop_pid"]


async def test_a_thread_the_loop_was_taken_back_from_runs_async_to_sync_on_its_own_loop():
    loop = asyncio.get_running_loop()

    async def where():
        return asyncio.get_running_loop()

    def lent_then_taken_back():
        lend_loop_to_async_to_sync(loop)
        lent = async_to_sync(where)()
        lend_loop_to_async_to_sync(None)
        return lent, async_to_sync(where)()

    lent, own = await asyncio.to_thread(lent_then_taken_back)
    assert lent is loop
    assert own is not loop


async def test_a_result_for_a_loop_that_has_closed_is_dropped_and_the_pool_works_on():
    pool = SyncPool(1)
    release = threading.Event()
    started = threading.Event()

    def blocked():
        started.set()
        release.wait(5)
        return "too late"

    def abandoned_caller():
        loop = asyncio.new_event_loop()
        caller = loop.create_task(pool.run(blocked))
        loop.run_until_complete(asyncio.to_thread(started.wait, 5))
        caller.cancel()
        loop.run_until_complete(asyncio.wait([caller]))
        loop.close()  # with the call still running on the pool's only thread

    await asyncio.to_thread(abandoned_caller)
    release.set()
    assert await pool.run(lambda: "next") == "next"
    assert not threads._pending  # nothing kept for the closed loop


async def test_the_outbox_sends_what_threads_put_in_order_before_flush_returns():
    sent = []

    async def send(message):
        await asyncio.sleep(0)  # a real server's send suspends
        sent.append(message["n"])

    outbox = Outbox(send)
    pool = SyncPool(1)

    def handler(start):
        for n in range(start, start + 100):
            outbox.put({"type": "websocket.send", "n": n})

    await pool.run(handler, 0)
    await outbox.flush()
    assert sent == list(range(100))
    await pool.run(handler, 100)
    await outbox.send_now({"type": "websocket.send", "n": -1})
    assert sent == [*range(200), -1]


async def test_the_outbox_drops_what_is_put_after_the_client_has_gone():
    sent = []

    async def send(message):
        if message["n"] == 2:
            raise ConnectionResetError("the client has gone")
        sent.append(message["n"])

    outbox = Outbox(send)
    for n in range(5):
        outbox.put({"type": "websocket.send", "n": n})
    await outbox.flush()
    outbox.put({"type": "websocket.send", "n": 5})
    await outbox.flush()
    assert sent == [0, 1]
    assert outbox.gone


def test_a_put_after_the_loop_has_closed_neither_raises_nor_keeps_the_message():
    async def send(message):
        raise AssertionError("nothing can be sent once the loop has closed")

    loop = asyncio.new_event_loop()
    outbox = loop.run_until_complete(_make_outbox(send))
    loop.close()
    thread = threading.Thread(target=outbox.put, args=({"type": "websocket.send"},))
    thread.start()
    thread.join(5)
    assert outbox.gone
    assert not outbox._queued


async def _make_outbox(send):
    return Outbox(send)
