"""The bounded thread pool that runs sync consumer code, and the helper that hops onto it.

Django Channels runs every sync handler of a process on one shared thread (asgiref's
thread-sensitive mode), so one slow ORM call stalls every connection. Here sync code runs on
a pool of ``CONSUMERS_SYNC_THREADS`` threads (default 20). A connection never has two
handlers running at once, because its consumer awaits each handler before it takes the next
message; different connections run in parallel, up to the pool size. Each call still goes
through asgiref's ``SyncToAsync``, so ``async_to_sync`` inside it reaches back to the event
loop and context variables flow into the thread as usual.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from asgiref.sync import SyncToAsync
from django.conf import settings

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_SYNC_THREADS = 20

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None


def sync_executor() -> ThreadPoolExecutor:
    """The process-wide pool, created on first use with the size from settings."""
    global _executor
    with _lock:
        if _executor is None:
            size = getattr(settings, "CONSUMERS_SYNC_THREADS", DEFAULT_SYNC_THREADS)
            if not isinstance(size, int) or isinstance(size, bool) or size < 1:
                raise ValueError(f"CONSUMERS_SYNC_THREADS must be a positive int, got {size!r}")
            _executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="consumers-sync")
        return _executor


def in_pool(func: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """Wrap a sync callable so that awaiting it runs it on the consumers' pool."""
    return SyncToAsync(func, thread_sensitive=False, executor=sync_executor())
