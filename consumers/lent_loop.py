"""Lending an event loop to ``async_to_sync`` in a thread of our own, as asgiref's
``sync_to_async`` does in its threads."""

from __future__ import annotations

import asyncio
import os

from asgiref.sync import SyncToAsync


def lend_loop_to_async_to_sync(loop: asyncio.AbstractEventLoop | None) -> None:
    """Make ``async_to_sync`` in this thread run its coroutines on ``loop`` (None: stop),
    as it does in a thread of asgiref's ``sync_to_async``.

    The one place that touches asgiref's private state: the ``main_event_loop``,
    ``main_event_loop_pid`` and ``task_context`` attributes of ``SyncToAsync.threadlocal``,
    as ``SyncToAsync.thread_handler`` sets them and ``AsyncToSync.__call__`` reads them in
    asgiref 3.13 (hence the pin asgiref>=3.13,<3.14; a test in
    tests/consumers/test_threads.py fails if a release changes them).
    """
    local = SyncToAsync.threadlocal
    if loop is None:
        local.main_event_loop = None
        return
    local.main_event_loop, local.main_event_loop_pid = loop, os.getpid()
    local.task_context = None
