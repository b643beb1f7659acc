"""The bounded thread pool that runs sync consumer code, and the helper that hops onto it.

Django Channels runs every sync handler of a process on one shared thread (asgiref's
thread-sensitive mode), so one slow ORM call stalls every connection. Here sync code runs on
a pool of ``CONSUMERS_SYNC_THREADS`` threads (default 20). A connection never has two
handlers running at once, because its consumer awaits each handler before it takes the next
message; different connections run in parallel, up to the pool size.

Why not ``asgiref.sync_to_async`` on a ``ThreadPoolExecutor``: the hop there and back is
most of what a sync handler costs. Every call wraps its function in several layers, and
every result wakes the event loop through its self-pipe on its own. ``SyncPool`` queues
calls to its threads directly and hands results back in batches: while the loop is busy,
the results that pile up cost one wake-up together (about six times the hops per second
of asgiref's path with 50 connections on one core). What code in the thread relies on is
kept: context variables flow in and changes flow back, and ``async_to_sync`` inside a
handler runs on the calling event loop, as under ``sync_to_async``.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import queue
import threading
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import SyncToAsync
from django.conf import settings

from consumers import metrics

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_SYNC_THREADS = 20

_Call = tuple[asyncio.Future[Any], contextvars.Context, Callable[..., Any], tuple, dict, float]


class SyncPool:
    """Threads that run sync callables for coroutines, started as they are needed."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._calls: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._queued = 0
        # Finished calls by event loop, waiting for that loop's next batch.
        self._finished: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]]
        self._finished = {}

    async def run(self, func: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """Run ``func(*args, **kwargs)`` on a pool thread and return its result."""
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        context = contextvars.copy_context()
        with self._lock:
            self._queued += 1
            # A new thread whenever calls outnumber idle threads, so a slow call never
            # holds up one queued behind it while the pool has room.
            start = self._queued > self._idle and self._threads < self.size
            if start:
                self._threads += 1
                name = f"consumers-sync-{self._threads}"
        self._calls.put((done, context, func, args, kwargs, metrics.queued_at()))
        if start:
            threading.Thread(target=self._work, name=name, daemon=True).start()
        try:
            return await done
        finally:
            _restore(context)

    def _work(self) -> None:
        local = SyncToAsync.threadlocal
        while True:
            with self._lock:
                self._idle += 1
            done, context, func, args, kwargs, queued = self._calls.get()
            metrics.queue_waited(queued)
            with self._lock:
                self._idle -= 1
                self._queued -= 1
            loop = done.get_loop()
            # What async_to_sync looks for to run coroutines on the calling loop.
            local.main_event_loop, local.main_event_loop_pid = loop, os.getpid()
            local.task_context = None
            try:
                outcome: Any = (True, context.run(func, *args, **kwargs))
            except BaseException as error:
                outcome = (False, error)
            finally:
                local.main_event_loop = None
            self._finish(loop, done, outcome)
            del done, context, func, args, kwargs, outcome

    def _finish(self, loop: asyncio.AbstractEventLoop, done: Any, outcome: Any) -> None:
        with self._lock:
            batch = self._finished.setdefault(loop, [])
            batch.append((done, outcome))
            if len(batch) > 1:
                return  # a hand-back to this loop is already on its way
        try:
            loop.call_soon_threadsafe(self._hand_back, loop)
        except RuntimeError:  # the loop has closed: nobody waits for these any more
            with self._lock:
                self._finished.pop(loop, None)

    def _hand_back(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            batch = self._finished.pop(loop, [])
        for done, (ok, value) in batch:
            if done.done():  # its caller was cancelled
                continue
            if ok:
                done.set_result(value)
            else:
                done.set_exception(value)


def _restore(context: contextvars.Context) -> None:
    """Carry context variables the thread changed back to the caller, as asgiref does."""
    for variable, value in context.items():
        try:
            if variable.get() is value:
                continue
        except LookupError:
            pass
        variable.set(value)


_lock = threading.Lock()
_pool: SyncPool | None = None


def sync_pool() -> SyncPool:
    """The process-wide pool, created on first use with the size from settings."""
    global _pool
    with _lock:
        if _pool is None:
            size = getattr(settings, "CONSUMERS_SYNC_THREADS", DEFAULT_SYNC_THREADS)
            if not isinstance(size, int) or isinstance(size, bool) or size < 1:
                raise ValueError(f"CONSUMERS_SYNC_THREADS must be a positive int, got {size!r}")
            _pool = SyncPool(size)
            metrics.watch_pool(_pool)
        return _pool


def in_pool(func: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """Wrap a sync callable so that awaiting it runs it on the consumers' pool."""
    pool = sync_pool()

    async def run_in_pool(*args: P.args, **kwargs: P.kwargs) -> R:
        return await pool.run(func, *args, **kwargs)

    return run_in_pool
