"""Which pool thread takes a sync call, and when one is woken (consumers.pool_queue)."""

import asyncio
import threading
import time

import pytest

from consumers import pool_queue
from consumers.threads import SyncPool


async def warm(pool, threads):
    """Start ``threads`` threads in ``pool`` and let them all go idle."""
    gate = threading.Barrier(threads, timeout=5)
    await asyncio.gather(*(pool.run(gate.wait) for _ in range(threads)))
    assert pool._threads == threads
    async with asyncio.timeout(3):
        while pool._idle != threads:
            await asyncio.sleep(0.01)


async def test_a_slow_call_never_holds_up_one_queued_in_the_same_turn():
    """Both calls are queued before any thread runs: the thread that takes the slow one
    must not keep the other waiting for it while idle threads sleep."""
    pool = SyncPool(4)
    await warm(pool, 4)
    started = time.perf_counter()
    slow = asyncio.ensure_future(pool.run(time.sleep, 1))
    fast = asyncio.ensure_future(pool.run(time.perf_counter))
    assert await fast - started < 0.5
    await slow


async def test_a_busy_loops_calls_need_no_wake_up_each(monkeypatch):
    """A thread that has ended a call spins instead of sleeping while calls keep coming, so
    connections running sync calls one after another (each waits for its last) do not wake
    a thread for each call."""
    wakes = []
    act = pool_queue.PoolQueue._act

    def counting(self, wake):
        wakes.append(wake)
        act(self, wake)

    monkeypatch.setattr(pool_queue.PoolQueue, "_act", counting)
    pool = SyncPool(4)

    async def connection():
        for _ in range(40):
            await pool.run(int)

    await asyncio.gather(*(connection() for _ in range(50)))
    assert len(wakes) < 200  # of 2,000 calls


async def test_idle_pool_threads_do_not_spin_on():
    pool = SyncPool(4)
    await asyncio.gather(*(pool.run(int) for _ in range(200)))
    await asyncio.sleep(0.05)
    before = time.process_time()
    await asyncio.sleep(0.3)
    assert time.process_time() - before < 0.03


async def test_the_metrics_see_the_threads_idle_and_nothing_queued_once_calls_end():
    pool = SyncPool(3)
    await warm(pool, 3)
    with pool._lock:
        assert (pool._threads, pool._idle, pool._queued) == (3, 3, 0)


async def test_calls_queued_beyond_the_pools_size_run_as_threads_come_free():
    pool = SyncPool(2)
    order = []

    def job(n):
        time.sleep(0.01)
        order.append(n)
        return n

    assert await asyncio.gather(*(pool.run(job, n) for n in range(20))) == list(range(20))
    assert sorted(order) == list(range(20))
    assert pool._threads == 2


async def test_a_thread_that_could_not_start_leaves_the_pool_able_to_start_another():
    pool = SyncPool(2)
    start = pool._calls._start
    failures = []

    def fails_once(number):
        if not failures:
            failures.append(number)
            raise RuntimeError("can't start new thread")
        start(number)

    pool._calls._start = fails_once
    with pytest.raises(RuntimeError, match="can't start new thread"):
        await pool.run(int)
    assert await asyncio.wait_for(pool.run(lambda: "ran"), 3) == "ran"
