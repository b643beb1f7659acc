"""Eager hand-over: a message for an idle receiver is handled in its sender's call.

``Mailboxes.put``/``put_many`` claim an idle ``EagerReceiver`` under their lock (nothing
queued before the message, the receiver waiting on the sender's loop); ``hand_over`` then
has each claimed receiver handle its message, outside the lock. No task switch per
message, which is most of what a broadcast to many idle consumers costs otherwise
(``consumers.eager`` is the consumer side).

A hand-over to several receivers runs their handlers first and what they left for ``later``
(their WebSocket writes, ``consumers.send_deadline``) after them, every ``LATER_KEPT``
entries: the handlers' Python then runs in a row, not each between two socket writes
(issue 20, part 10: a broadcast to 1,000 WebSockets over Redis reached its p99 12-23 %
sooner on Uvicorn and Hypercorn, in 3 of 3 alternating pairs; in memory -15 to +13 %).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from .flat_copy import copy_if_flat

logger = logging.getLogger("channels_layer.mailbox")

# Turns a message taken from a channel into what ``receive()`` returns (the layer's
# decoding); a ValueError drops the message (the decode logs why).
Decode = Callable[[str, bytes, Any], Any]


class EagerReceiver(Protocol):
    """A receiver that handles a message in the sender's call when it is idle (see
    ``Mailboxes.put``), instead of being woken to take it: no task switch per message."""

    def claim(self) -> bool:
        """Whether it can handle a message now, and if so, reserve itself for it. Called
        under the mailboxes' lock, on the receiver's own loop: no I/O, no callbacks."""

    def handle(self, message: Any) -> bool:
        """Handle the claimed message; never raises (the sender must not see its errors).
        True: wake the receiver's waiter, it has the rest of the work to do."""

    def release(self) -> None:
        """Give the claim back: the claimed message was dropped."""


# A message claimed by an idle eager receiver is four entries in a row of a hand-over list:
# channel, its waiter, payload, receipt. Not a tuple per claim: a fan-out to 10,000 idle
# members kept 10,000 of them alive until the hand-over, enough allocations to set off a
# dozen garbage collections, one of them of the older generation, in every broadcast.
Handing = Any  # str | _Ready | bytes | receipt


class _HandingOver(threading.local):
    """Whether this thread runs an eager hand-over now: a message sent from it goes to the
    queue, so eager handling nests one level deep at most."""

    running = False


handing_over = _HandingOver()


class Later(Protocol):
    """Work a receiver's handler leaves for after the hand-over (see ``later``)."""

    def run_later(self, argument: Any) -> None:
        """Do it; never raises (the sender must not see a receiver's errors)."""


# While a thread hands a message over to several receivers: that thread's id and the work
# its receivers' handlers left for after the last of them, each ``Later`` followed by its
# argument, in the order left. One for the process, read without a lock (the pair is set
# at once): code may add to the list only from that thread; a hand-over in another thread
# meanwhile does without.
later: tuple[int, list[Any]] | None = None
# Held by the thread that set ``later``, taken without waiting: two threads that both found
# ``later`` free and both set it left one's handler a frame kept and its next written first.
_later_taken = threading.Lock()
# Entries of ``later`` kept before they are run, within a hand-over: the writes it keeps
# alive (a message each) stay under the collector's first threshold (700 objects), which
# a fan-out to 1,000 that kept them all crossed once per broadcast (a young collection,
# then more of the older ones), and the first members wait for the few handlers before.
LATER_KEPT = 256


def hand_over(eager: list[Handing], decode: Decode, decode_once: bool) -> None:
    """Have the claimed receivers handle their messages, outside the mailboxes' lock (a
    handler may send), one level deep: what their handlers send is queued. With
    ``decode_once``, a fan-out's one payload is decoded once and each member gets its own
    copy of it (``flat_copy``)."""
    global later
    once = decode_once and len(eager) > 4
    decoded: bytes | None = None  # the payload and receipt of ``template``
    decoded_receipt: Any = None
    template: dict[str, Any] = {}
    handing_over.running = True
    mine: tuple[int, list[Any]] | None = None
    # Several receivers, and no other thread's hand-over keeps ``later``.
    if len(eager) > 4 and _later_taken.acquire(blocking=False):
        later = mine = (threading.get_ident(), [])
    try:
        entries = iter(eager)
        for position, (channel, ready, payload, receipt) in enumerate(
            zip(entries, entries, entries, entries, strict=True)
        ):
            receiver = ready.eager
            assert receiver is not None  # noqa: S101  for mypy: _idle_receiver's
            try:
                if payload is decoded and receipt is decoded_receipt:
                    message = template.copy()
                else:
                    message = decode(channel, payload, receipt)
                    if once and (copy := copy_if_flat(message)) is not None:
                        decoded, decoded_receipt, template = payload, receipt, copy
            except ValueError:  # dropped, as receive() drops it (logged by decode)
                receiver.release()
                continue
            except Exception:
                logger.exception("Dropped a message on %r: it could not be decoded", channel)
                receiver.release()
                continue
            except BaseException:  # KeyboardInterrupt (a signal) here: this claim too
                receiver.release()
                _release_later(eager, position)
                raise
            try:
                if receiver.handle(message):
                    ready.wake()
                if mine is not None and len(left := mine[1]) >= LATER_KEPT:
                    _run_later(left)
            except BaseException:  # KeyboardInterrupt, SystemExit: free the later claims
                _release_later(eager, position)
                raise
    finally:
        handing_over.running = False
        if mine is not None:
            later = None
            _later_taken.release()
            _run_later(mine[1])


def _run_later(left: list[Any]) -> None:
    """What the handlers left for after the hand-over, in the order they left it; emptied,
    even by a KeyboardInterrupt in it: the hand-over's end must not run any of it again."""
    entries = iter(left)
    try:
        for work, argument in zip(entries, entries, strict=True):
            try:
                work.run_later(argument)
            except Exception:  # a Later must not raise; if one does, the others still run
                logger.exception("A receiver's work after a hand-over failed")
    finally:
        left.clear()


def _release_later(eager: list[Handing], position: int) -> None:
    """Give back the claims after the ``position``-th: their messages are dropped."""
    for later in eager[position * 4 + 5 :: 4]:  # their waiters
        later.eager.release()
