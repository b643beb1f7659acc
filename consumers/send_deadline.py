"""A deadline on each WebSocket send, for servers that make a send wait on a slow client.

Uvicorn and Hypercorn make a send wait while the client does not read (memory stays
bounded) and may never give up. Past ``CONSUMERS_WEBSOCKET_SEND_TIMEOUT`` seconds a send
raises ``TimeoutError``, an ``OSError``, so the consumer ends as when the client has gone.

Why not ``asyncio.timeout`` around each send: it schedules and cancels a timer per frame,
about 7 us here, a fifth of what Uvicorn itself spends on an echo. Almost every send ends
at once, without suspending: its first step runs here, and only a send that suspends gets
a deadline (a send that never suspends cannot wait on anyone). A connection keeps one timer
for its oldest unfinished send, moved on only when it fires. Expiry cancels the sending
task and turns that cancellation into ``TimeoutError``, exactly as ``asyncio.timeout`` does
(a cancellation from elsewhere stays a cancellation).

A send made while the layer hands a broadcast to several idle consumers is written once
every one of them has run its handler (``channels_layer.handover.later``), in order with
the connection's other sends, as the sync consumers' ``Outbox`` writes: a write that cannot
end at once goes on in a task of its own, and the connection's next send waits for it; one
that finds the client gone makes the next send raise, and any other error is logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from threading import get_ident
from typing import Any, Protocol

from django.core.signals import setting_changed

from channels_layer import handover
from consumers import metrics
from consumers.stepping import Step, resume
from consumers.types import Message, Scope, Send

logger = logging.getLogger("consumers.consumer")


# What ``next`` gives for a send's first step that ended it (no awaitable yields it).
_STEP_ENDED: Any = object()
# The watch's own count, which ``SendDeadline`` does in place for a text frame.
_SENT = metrics.WebSocketWatch.sent


class _Sending:
    """One send in progress: its deadline, and the task's cancellation count at its start."""

    __slots__ = ("cancelling", "deadline", "expired")

    def __init__(self, deadline: float, cancelling: int) -> None:
        self.deadline = deadline
        self.cancelling = cancelling
        self.expired = False


class _Calls:
    """A plain ``sent`` callable as a ``Counter``."""

    __slots__ = ("sent",)

    def __init__(self, sent: Callable[[Message], None]) -> None:
        self.sent = sent


class Counter(Protocol):
    """What counts each message sent (``metrics.WebSocketWatch``)."""

    def sent(self, message: Message) -> None: ...


class SendDeadline:
    """``send`` with a deadline of ``timeout`` seconds on each call; ``sent``, if given, is
    called with each message sent (the metrics' count, without a coroutine of its own), as
    is ``counter.sent``: the watch itself is kept, not its bound method (an object less a
    connection for the collector to scan). A ``metrics.WebSocketWatch``'s count of an ASCII
    text frame sent at once is done here, in place."""

    __slots__ = (
        "_behind",
        "_counter",
        "_done",
        "_gone",
        "_loop",
        "_scope",
        "_send",
        "_sending",
        "_tally",
        "_timeout",
        "_timer",
    )

    def __init__(
        self,
        send: Send,
        scope: Scope,
        timeout: float,
        sent: Callable[[Message], None] | None = None,
        *,
        counter: Counter | None = None,
    ) -> None:
        self._send = send
        self._counter = counter if sent is None else _Calls(sent)
        # The watch's tally, for ``__call__`` to count a text frame in place (as the
        # consumer counts one received): a Python call less a frame sent. Not if the
        # watch's ``sent`` was replaced (a test's patch): that one is called, as before.
        watching = type(counter) is metrics.WebSocketWatch and metrics.WebSocketWatch.sent is _SENT
        self._tally = metrics.tally if watching else None
        self._scope = scope
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._done = _done_future(self._loop)  # what a quick send gives (``done_send``)
        # The sends in progress, by task (a consumer may send from more than one); made at
        # the first send that waits, as most connections' sends never do.
        self._sending: dict[asyncio.Task[object], _Sending] | None = None
        self._timer: asyncio.TimerHandle | None = None
        # What the next send waits for: a write left by a hand-over still going on in its
        # own task (or done, with the client gone); None, as for most connections always.
        self._behind: asyncio.Future[None] | None = None
        self._gone = False

    def __call__(self, message: Message) -> Awaitable[None]:
        """Start sending ``message``; await what this returns, at once, for the rest.

        Not a coroutine: the first step runs in the call, and a send that ends there (the
        usual case) gives a future already done, which costs less to await than a
        coroutine of its own (an error it raised is raised by the call)."""
        # Stepped by ``next(step, _STEP_ENDED)``, not ``send(None)`` in a ``try``: a coroutine
        # that returns ends ``next`` without raising, where ``send`` raised StopIteration
        # into this frame for every frame sent (its wrapper costs less: -0.12 us a send).
        if self._behind is not None:
            return self._in_turn(message)
        later = handover.later
        if later is not None and later[0] == get_ident():  # written after the hand-over
            left = later[1]
            left.append(self)
            # A copy (35 ns): a send that returned has been taken, and its dict may be reused.
            left.append({**message})
            return self._done
        step = self._send(message).__await__()
        suspended_on = next(step, _STEP_ENDED)
        if suspended_on is _STEP_ENDED:
            tally = self._tally
            if (
                tally is not None
                and message.get("type") == "websocket.send"
                and (text := message.get("text")) is not None
                and text.isascii()
            ):  # _count(message), without its call
                tally.frames_out += 1
                tally.bytes_out += len(text)
            elif self._counter is not None:
                self._counter.sent(message)
            return self._done
        return self._wait(step, suspended_on, message)

    def run_later(self, message: Message) -> None:
        """Write what a handler sent during a hand-over (``handover.Later``)."""
        if self._gone:
            return
        behind = self._behind
        if behind is not None and not behind.done():
            self._behind = self._loop.create_task(self._write_behind(message, behind))
            return
        try:
            step = self._send(message).__await__()
            suspended_on = next(step, _STEP_ENDED)
        except OSError:
            self._gone = True
            self._behind = self._done
            return
        except (Exception, asyncio.CancelledError):  # not the sender's cancellation: logged
            logger.exception("Could not send %r to the client", message.get("type"))
            return
        if suspended_on is _STEP_ENDED:
            self._count(message)
        else:
            self._behind = self._loop.create_task(
                self._write_behind(message, None, step, suspended_on)
            )

    async def _write_behind(
        self,
        message: Message,
        earlier: asyncio.Future[None] | None,
        step: Step | None = None,
        suspended_on: Any = None,
    ) -> None:
        """A write left by a hand-over that did not end at once (``step``), or one after an
        ``earlier`` such write: it goes on here, within the deadline."""
        try:
            if earlier is not None:
                await asyncio.wait((earlier,))
                if self._gone:
                    return
                step = self._send(message).__await__()
                suspended_on = next(step, _STEP_ENDED)
                if suspended_on is _STEP_ENDED:
                    self._count(message)
                    return
            assert step is not None  # noqa: S101  for mypy: given when there is no earlier
            await self._wait(step, suspended_on, message)
        except OSError:  # the client has gone, or stopped reading past the deadline
            self._gone = True
        except Exception:
            logger.exception("Could not send %r to the client", message.get("type"))

    @property
    def writing(self) -> bool:
        """Whether a write a hand-over left for this connection is still going on."""
        behind = self._behind
        return behind is not None and not behind.done()

    async def settled(self) -> None:
        """Once the writes a hand-over left for this connection are out (or failed): the
        consumer does not end before them."""
        while (behind := self._behind) is not None and not behind.done():
            await asyncio.wait((behind,))

    async def _in_turn(self, message: Message) -> None:
        """A send after a hand-over's write that has not ended: once it has."""
        await self.settled()
        if self._gone:
            raise ConnectionResetError("the client has gone: an earlier write failed")
        self._behind = None
        await self(message)

    async def _wait(self, step: Step, suspended_on: Any, message: Message) -> None:
        """The rest of a send that suspended, within the deadline."""
        task = asyncio.current_task()
        if task is None:  # not from a task: nothing to cancel
            await resume(step, suspended_on)
            self._count(message)
            return
        sending = _Sending(self._loop.time() + self._timeout, task.cancelling())
        sendings = self._sending
        if sendings is None:
            sendings = self._sending = {}
        sendings[task] = sending
        if self._timer is None:
            self._timer = self._loop.call_at(sending.deadline, self._expire)
        try:
            await resume(step, suspended_on)
        except BaseException as error:
            # As asyncio.timeout: our cancellation, and no other since, is a timeout.
            if (
                sending.expired
                and task.uncancel() <= sending.cancelling
                and isinstance(error, asyncio.CancelledError)
            ):
                self._give_up()
                raise TimeoutError from error
            raise
        else:
            if sending.expired:
                task.uncancel()  # the send ended without the cancellation
            self._count(message)
        finally:
            del sendings[task]

    def _count(self, message: Message) -> None:
        """The count of a message sent: a text frame's in place (``__call__`` does this
        inline), anything else by the counter."""
        tally = self._tally
        if (
            tally is not None
            and message.get("type") == "websocket.send"
            and (text := message.get("text")) is not None
            and text.isascii()
        ):
            tally.frames_out += 1
            tally.bytes_out += len(text)
        elif self._counter is not None:
            self._counter.sent(message)

    def _expire(self) -> None:
        """Cancel the sends past their deadline; come back for the next one, if any."""
        self._timer = None
        now = self._loop.time()
        upcoming = None
        for task, sending in (self._sending or {}).items():
            if sending.expired:
                continue
            if sending.deadline <= now:
                sending.expired = True
                task.cancel()
            elif upcoming is None or sending.deadline < upcoming:
                upcoming = sending.deadline
        if upcoming is not None:
            self._timer = self._loop.call_at(upcoming, self._expire)

    def _give_up(self) -> None:
        metrics.slow_client_dropped()
        logger.warning(
            "Giving up on the WebSocket of %s on %s: it stopped reading (a send waited "
            "over CONSUMERS_WEBSOCKET_SEND_TIMEOUT, %s s)",
            ":".join(map(str, self._scope.get("client") or ("?",))),
            self._scope.get("path", "?"),
            self._timeout,
        )


# What a send that ended at once gives, shared by the connections on the last loop seen (one
# a connection was 264 B): done, so awaiting it never touches its loop; of the running loop,
# so ensure_future() and wait_for() take it; nothing can cancel or call back a done future.
# A caller may skip awaiting it (``send is not done_send``): awaiting a done future raises and
# catches a StopIteration, 0.1 us on Python 3.12+.
# Until the first ``SendDeadline``, an object no send returns (a send returning None is
# still awaited, and fails as it did).
done_send: Any = object()


def _done_future(loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
    global done_send  # a one-entry cache: a server has one loop
    done = done_send
    if not isinstance(done, asyncio.Future) or done.get_loop() is not loop:
        done = loop.create_future()
        done.set_result(None)
        done_send = done
    return done


def send_within_deadline(send: Send, scope: Scope) -> Send:
    """``send`` bounded by ``CONSUMERS_WEBSOCKET_SEND_TIMEOUT`` (default 10 s); a metrics
    watch's ``send`` is unwrapped, its count run here."""
    timeout = _timeout
    if timeout is None:
        timeout = _read_timeout()
    send, watch = metrics.unwatched(send)
    return SendDeadline(send, scope, timeout, counter=watch)


# The setting, read at the first connection and again after it changes: reading an unset
# setting through Django's lazy settings raised and caught an AttributeError per connect.
_timeout: float | None = None


def _read_timeout() -> float:
    global _timeout
    from django.conf import settings

    _timeout = float(getattr(settings, "CONSUMERS_WEBSOCKET_SEND_TIMEOUT", 10))
    return _timeout


def _forget_timeout(*, setting: str, **kwargs: Any) -> None:
    global _timeout
    if setting == "CONSUMERS_WEBSOCKET_SEND_TIMEOUT":
        _timeout = None


# The same signal object as django.test.signals.setting_changed (override_settings).
setting_changed.connect(_forget_timeout)
