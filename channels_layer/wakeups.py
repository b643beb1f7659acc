"""The one way the layer wakes code on another thread's event loop (see ``mailbox``'s
invariants): a callback or a future's result goes through the loop that owns it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


def call_soon_on(loop: asyncio.AbstractEventLoop, callback: Callable[..., Any], *args: Any) -> bool:
    """Run ``callback(*args)`` on ``loop`` soon, from any thread; False if the loop has
    closed, so nothing will ever run there (its waiters are gone with it)."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        return False
    return True


def wake(waiter: asyncio.Future[None]) -> bool:
    """Resolve ``waiter`` on its own loop, from any thread; False if nobody will see it
    (it is done already, or its loop has closed)."""
    loop = waiter.get_loop()
    if waiter.done() or loop.is_closed():
        return False
    if loop is running_loop():
        waiter.set_result(None)
        return True
    return call_soon_on(loop, _resolve, waiter)


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The running loop of this thread, or None."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():  # it may have been cancelled while the wake-up was in flight
        waiter.set_result(None)
