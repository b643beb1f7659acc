"""Ending the layers' background tasks for certain, on every supported Python.

A cancellation can be swallowed on its way through a library: on Python 3.11 a
cancellation that arrives while ``asyncio.wait_for`` is finishing is lost (CPython
gh-86296), and a redis-py read cancelled at the wrong moment may retry the read instead of
ending. The task is then marked as cancelling but carries on, and a ``close()`` that awaits
it hangs, and so does ``asyncio.run()`` when it cancels what is left. So readers call
``raise_if_cancelled()`` on every turn of their loop, and ``stop()`` does not rely on the
cancellation alone: it cuts the tasks' connections (which ends any read still waiting) and
gives up on a task after a bounded time, with one log line.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

logger = logging.getLogger(__name__)

# Seconds given to cancelled tasks, then to cutting their connections, then to the tasks
# again: ``stop()`` returns within three of these.
GRACE = 0.5


def raise_if_cancelled() -> None:
    """Raise ``CancelledError`` if this task was asked to stop, even if a library caught
    the ``CancelledError`` meant for it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def stop(
    tasks: Iterable[asyncio.Future[Any]], cut: Callable[[], Awaitable[None]], what: str
) -> None:
    """Cancel ``tasks``, close their connections with ``cut()`` and wait for them, each
    step bounded by ``GRACE``; a task that still has not ended is left and logged."""
    pending = {task for task in tasks if not task.done()}
    for task in pending:
        task.cancel()
    if pending:
        _, pending = await asyncio.wait(pending, timeout=GRACE)
    await bounded(cut(), GRACE)
    if pending:
        _, pending = await asyncio.wait(pending, timeout=GRACE)
    if pending:
        logger.warning(
            "%d %s task(s) did not stop within %.1f s of being cancelled; left behind",
            len(pending),
            what,
            3 * GRACE,
        )


async def bounded(awaitable: Awaitable[Any], seconds: float) -> None:
    """Await ``awaitable`` for at most ``seconds``, then cancel it and move on; errors are
    logged at debug level (this is for tidying connections that are going away)."""
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait([task], timeout=seconds)
    if not done:
        task.cancel()
    elif not task.cancelled() and task.exception() is not None:
        logger.debug("Ignoring %r while tidying a Redis connection", task.exception())
