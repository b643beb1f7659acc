"""Where sync consumer code runs, and how what it does gets back to the event loop.

The consumer side's hard concurrency is in this module (the layer side's is in
``channels_layer.mailbox``): ``SyncPool``, the bounded threads that run sync handlers and
``database_sync_to_async`` calls, and how their ends get back to the loop; ``Outbox``,
which carries what a sync handler sends back to the loop, is in ``consumers.outbox``.

Invariants:

- A connection never has two handlers running at once: its consumer awaits each handler
  (``Outbox.run``) before it takes the next message. Different connections run in
  parallel, up to the pool size.
- The messages a handler sends reach the client in the order it sent them, while it runs,
  and all of them are out before its consumer handles the next message.
- Handler code runs on a pool thread; everything that touches a future, a task or the
  ASGI ``send`` runs on the consumer's event loop. A pool thread only puts into
  lock-guarded queues and hands callbacks to that loop (``hand_back``), which gives up on
  a loop that has closed.
- Wake-ups are batched: whatever pool threads hand back to a loop while it is busy
  (results and sends, of every connection) costs one wake-up of it together. The other
  way, a call goes to a pool thread already awake when there is one, and a thread that
  ends a call takes the next queued one, any connection's (``consumers.pool_queue``).
- Code in a pool thread sees the caller's context variables, and its changes flow back;
  ``async_to_sync`` there runs its coroutine on the caller's loop, as under
  ``sync_to_async`` (``lend_loop_to_async_to_sync``, the one place that touches asgiref's
  private state).

Django Channels runs every sync handler of a process on one shared thread (asgiref's
thread-sensitive mode), so one slow ORM call stalls every connection. Here sync code runs on
a pool of ``CONSUMERS_SYNC_THREADS`` threads (default 20).

Why not ``asgiref.sync_to_async`` on a ``ThreadPoolExecutor``: the hop there and back is
most of what a sync handler costs. Every call wraps its function in several layers, and
every result wakes the event loop through its self-pipe on its own. ``SyncPool`` queues
calls to its threads directly and hands results back in batches. Likewise a handler's
``send`` only queues the message, instead of blocking on a round trip to the loop for every
message (``async_to_sync``), and the consumer's task, which waits for the handler anyway,
sends it: no task of its own, and one wake-up for a frame's reply and the handler's end.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from django.conf import settings
from django.db import close_old_connections
from django.db.backends.signals import connection_created

from channels_layer.wakeups import call_soon_on
from consumers import metrics
from consumers.lent_loop import lend_loop_to_async_to_sync
from consumers.pool_queue import PoolQueue, wake_without_preempting

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_SYNC_THREADS = 20

# A call's end: (True, its result) or (False, what it raised).
Outcome = tuple[bool, Any]
# What runs on the loop when a call ends, as ``finish(target, outcome)``.
Finish = Callable[[Any, Any], None]
_Call = tuple[
    asyncio.AbstractEventLoop,
    Finish,
    Any,
    contextvars.Context,
    Callable[..., Any],
    tuple[Any, ...],
    dict[str, Any],
    float,
]

# What pool threads handed to each loop, waiting for that loop's next batch.
_pending: dict[asyncio.AbstractEventLoop, list[tuple[Finish, Any, Any]]] = {}
_pending_lock = threading.Lock()


def hand_back(loop: asyncio.AbstractEventLoop, callback: Finish, target: Any, value: Any) -> bool:
    """Run ``callback(target, value)`` on ``loop`` soon, from any thread; False if the loop
    has closed. Only the first callback of a batch wakes the loop; later ones join it."""
    entry = (callback, target, value)
    _pending_lock.acquire()  # not ``with``: a hot path, and ``with`` costs 0.2 us more
    try:
        batch = _pending.get(loop)
        if batch is not None and not loop.is_closed():
            batch.append(entry)
            return True
        # A loop that closed before running its batch never takes it: drop such batches
        # whenever a new one starts (there are as many as loops with work in flight).
        for closed in [other for other in _pending if other.is_closed()]:
            del _pending[closed]
        if loop.is_closed():
            return False
        _pending[loop] = [entry]
    finally:
        _pending_lock.release()
    if call_soon_on(loop, _run_batch, loop):
        return True
    with _pending_lock:  # the loop has closed: nobody waits for these any more
        _pending.pop(loop, None)
    return False


def _run_batch(loop: asyncio.AbstractEventLoop) -> None:
    _pending_lock.acquire()
    try:
        batch = _pending.pop(loop, ())
    finally:
        _pending_lock.release()
    for callback, target, value in batch:
        callback(target, value)


class SyncPool:
    """Threads that run sync callables for coroutines, started as they are needed; which
    thread takes a call, and when one is woken, is ``consumers.pool_queue``'s."""

    def __init__(self, size: int, batch_threads: bool = False) -> None:
        self.size = size
        self.batch_threads = batch_threads
        self._calls: PoolQueue[_Call] = PoolQueue(size, self._start)
        # What the metrics read, under ``_lock``.
        self._lock = self._calls.lock

    @property
    def _threads(self) -> int:
        return self._calls.threads

    @property
    def _idle(self) -> int:
        return self._calls.idle

    @property
    def _queued(self) -> int:
        return len(self._calls)

    async def run(self, func: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """Run ``func(*args, **kwargs)`` on a pool thread and return its result."""
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        context = contextvars.copy_context()
        self.submit(_settle, done, context, func, args, kwargs)
        try:
            return await done
        finally:
            restore_context(context)

    def submit(
        self,
        finish: Finish,
        target: Any,
        context: contextvars.Context,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        """Queue ``func(*args, **kwargs)`` to run in ``context`` on a pool thread; then
        ``finish(target, outcome)`` runs on the calling loop (unless it has closed)."""
        loop = asyncio.get_running_loop()
        self._calls.put((loop, finish, target, context, func, args, kwargs, metrics.queued_at()))

    def _start(self, number: int) -> None:
        name = f"consumers-sync-{number}"
        threading.Thread(target=self._work, name=name, daemon=True).start()

    def _check(self, _: None) -> None:
        self._calls.check()

    def _work(self) -> None:
        if self.batch_threads:
            wake_without_preempting()
        take = self._calls.take
        parked = threading.Lock()
        parked.acquire()
        returning = False
        # The loop lent to async_to_sync stays lent between calls (no code but the calls
        # runs in this thread), and changes with the caller's loop: 0.4 us a call less.
        lent: asyncio.AbstractEventLoop | None = None
        while True:
            call, backlog = take(parked, returning)
            returning = True
            loop, finish, target, context, func, args, kwargs, queued = call
            metrics.queue_waited(queued)
            # Calls wait behind this one: the loop checks whether they need another thread
            # once it runs, which is once this thread lets the GIL go (pool_queue).
            if backlog and not hand_back(loop, SyncPool._check, self, None):
                self._calls.check()
            if loop is not lent:
                lend_loop_to_async_to_sync(loop)
                lent = loop
            try:
                outcome: Outcome = (True, context.run(func, *args, **kwargs))
            except BaseException as error:
                outcome = (False, error)
            hand_back(loop, finish, target, outcome)
            del call, loop, finish, target, context, func, args, kwargs, outcome


def _settle(done: asyncio.Future[Any], outcome: Outcome) -> None:
    if done.done():  # its caller was cancelled
        return
    ok, value = outcome
    if ok:
        done.set_result(value)
    else:
        done.set_exception(value)


def restore_context(context: contextvars.Context) -> None:
    """Carry context variables the thread changed back to the caller, as asgiref does."""
    for variable, value in context.items():
        try:
            if variable.get() is value:
                continue
        except LookupError:
            pass
        variable.set(value)


class _ThreadDatabase(threading.local):
    """Whether this thread ever opened a database connection (``connection_created``); a
    class default, as a missing attribute of a thread-local costs an exception to read."""

    opened = False


_database = _ThreadDatabase()


def _opened(sender: Any, connection: Any, **kwargs: Any) -> None:
    _database.opened = True


connection_created.connect(_opened, dispatch_uid="consumers.threads.opened")


def close_old_connections_here() -> None:
    """Django's ``close_old_connections`` for this thread, as it runs around a request:
    connections past ``CONN_MAX_AGE`` or broken are closed. Django's connections belong to
    the thread that opened them, so in a thread that never opened one it has nothing to do
    (and is skipped: it cost more than an echo handler)."""
    if _database.opened:
        close_old_connections()


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
            batch = getattr(settings, "CONSUMERS_SYNC_THREADS_BATCH", False)
            if not isinstance(batch, bool):
                raise ValueError(f"CONSUMERS_SYNC_THREADS_BATCH must be a bool, got {batch!r}")
            _pool = SyncPool(size, batch_threads=batch)
            metrics.watch_pool(_pool)
        return _pool


def in_pool(func: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """Wrap a sync callable so that awaiting it runs it on the consumers' pool."""
    pool = sync_pool()

    async def run_in_pool(*args: P.args, **kwargs: P.kwargs) -> R:
        return await pool.run(func, *args, **kwargs)

    return run_in_pool
