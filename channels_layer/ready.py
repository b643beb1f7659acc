"""What a consumer waits on for its first message (``Mailboxes.when_ready``), and the
eager receiver a sender may hand that message to instead (see ``mailbox``'s invariants)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from .handover import EagerReceiver

if TYPE_CHECKING:
    from .mailbox import Mailboxes, _Queue


class _Ready(asyncio.Future[None]):
    """A ``when_ready`` future: withdrawn from its channel's waiters when cancelled, by
    itself rather than a done callback (a partial and a context: 300 B a connection).
    With an ``eager`` receiver (``offer_eagerly``), a sender may hand it a message while
    it waits, instead of resolving it."""

    __slots__ = ("_channel", "_mailboxes", "eager")

    def __init__(self, mailboxes: Mailboxes, channel: str) -> None:
        super().__init__(loop=asyncio.get_running_loop())
        self._mailboxes = mailboxes
        self._channel = channel
        self.eager: EagerReceiver | None = None

    def wake(self) -> None:
        """Resolve it now, out of its channel's waiters (its receiver has work to do)."""
        with self._mailboxes._lock:
            queue = self._mailboxes._channels.get(self._channel)
            if queue is not None and self in queue:
                queue.remove(self)
                self._mailboxes._forget_if_idle(self._channel, queue)
        if not self.done():
            self.set_result(None)

    def cancel(self, msg: Any = None) -> bool:
        if not super().cancel(msg):
            return False
        self._mailboxes._withdraw(self._channel, self)
        return True


def _idle_receiver(queue: _Queue, running: asyncio.AbstractEventLoop | None) -> _Ready | None:
    """The receiver first in line, if it is eager, on the running loop and claims the
    message now; hold the lock."""
    for waiter in queue:
        if waiter.done():
            continue  # gone: _wake_one skips it too
        if type(waiter) is not _Ready or waiter.eager is None or waiter.get_loop() is not running:
            return None
        return waiter if waiter.eager.claim() else None
    return None


def offer_eagerly(ready: asyncio.Future[None], receiver: EagerReceiver) -> bool:
    """Let senders on ``ready``'s loop hand ``receiver`` their messages while ``ready``
    (from ``Mailboxes.when_ready``) waits; False if ``ready`` is not one of those."""
    if not isinstance(ready, _Ready):
        return False
    ready.eager = receiver
    return True
