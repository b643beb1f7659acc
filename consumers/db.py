"""Run ORM code from async code without leaking stale database connections."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, overload

from asgiref.sync import SyncToAsync
from django.db import close_old_connections

from consumers.threads import in_pool

P = ParamSpec("P")
R = TypeVar("R")


def _closing_old_connections(func: Callable[P, R]) -> Callable[P, R]:
    """Close connections past CONN_MAX_AGE (or broken) before and after ``func``, as Django
    does around each request: long-lived consumers would otherwise hold dead connections."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        close_old_connections()
        try:
            return func(*args, **kwargs)
        finally:
            close_old_connections()

    return wrapper


@overload
def database_sync_to_async(
    func: Callable[P, R], *, thread_sensitive: bool = False
) -> Callable[P, Awaitable[R]]: ...


@overload
def database_sync_to_async(
    func: None = None, *, thread_sensitive: bool = False
) -> Callable[[Callable[P, R]], Callable[P, Awaitable[R]]]: ...


def database_sync_to_async(func: Any = None, *, thread_sensitive: bool = False) -> Any:
    """``sync_to_async`` for ORM code: usable bare or as ``@database_sync_to_async()``.

    By default the call runs on the consumers' bounded pool, in parallel with other
    connections. ``thread_sensitive=True`` keeps asgiref's single shared thread instead, for
    code that must share a thread with the rest of Django's sync code.
    """

    def wrap(f: Callable[P, R]) -> Callable[P, Awaitable[R]]:
        safe = _closing_old_connections(f)
        if thread_sensitive:
            return SyncToAsync(safe, thread_sensitive=True)
        return in_pool(safe)

    return wrap if func is None else wrap(func)
