"""The sync pool: what code in a pool thread relies on, and its bound."""

import asyncio
import contextvars
import threading
import time

import pytest
from asgiref.sync import async_to_sync

from consumers.threads import SyncPool

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
