"""Eager dispatch: a layer message for an idle consumer is handled in its sender's call.

A broadcast to 1,000 consumers woke 1,000 parked layer readers, and the loop then resumed
each one to take its message and dispatch it: a task switch per member, about as much CPU
as the handler's own send. When a consumer's layer reader waits on an empty channel and its
turn is free, the layer's mailbox hands it the message instead (``EagerReader``, an
``EagerReceiver`` of ``channels_layer.mailbox``): the handler's first step runs right there,
as the reader task (``current_task()``) and in the reader task's context, so a handler that
does not suspend (the usual ``await self.send(...)``) ends within the sender's call. One that
suspends is handed to the reader task, which goes on with it exactly where it stopped, as if
it had run it all along; one that raises has the reader task raise it. The sender sees
neither, nor waits for either.

Per consumer nothing changes: one handler at a time (the eager handler holds the turn), in
arrival order (a message queued, or a handler running, means no eager hand-over), and a
consumer cancelled while its handler waits sees the cancellation in the handler.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Awaitable, Generator
from typing import TYPE_CHECKING, Any

from channels_layer.ready import offer_eagerly
from consumers.stepping import resume

if TYPE_CHECKING:
    from consumers.consumer import AsyncConsumer

# The dict ``current_task()`` reads on Python 3.11 (``_asyncio``'s own when built): writing
# it in ``handle`` is what ``_enter_task``/``_leave_task`` do, less their checks and calls.
# None from 3.12 on, where ``_swap_current_task`` (in C) does it in one call.
if sys.version_info >= (3, 12):
    from asyncio.tasks import _swap_current_task

    _current_tasks = None
else:
    from asyncio.tasks import _current_tasks  # type: ignore[attr-defined]

    _swap_current_task: Any = None  # never called: ``_current_tasks`` is written instead


class Handed:
    """The rest of a handler that suspended (or raised) in its eager first step, for the
    reader task to await: it goes on as ``await`` would have."""

    __slots__ = ("_error", "_step", "_suspended_on")

    def __init__(self, step: Any, suspended_on: Any, error: BaseException | None = None) -> None:
        self._step = step
        self._suspended_on = suspended_on
        self._error = error

    def cancelled(self, error: asyncio.CancelledError) -> None:
        """The reader was cancelled before it went on: as a task cancelled while it
        waits, cancel what the handler waits on, or else throw the cancellation in."""
        waiting = self._suspended_on
        if self._step is None or (isinstance(waiting, asyncio.Future) and waiting.cancel()):
            return
        self._error = error

    def __await__(self) -> Generator[Any, Any, None]:
        return _go_on(self._step, self._suspended_on, self._error)


def _go_on(step: Any, suspended_on: Any, error: BaseException | None) -> Generator[Any, Any, None]:
    if step is None:
        assert error is not None  # noqa: S101  for mypy: a handler that raised
        raise error
    if error is not None:  # a cancellation before the reader went on: the handler's
        try:
            suspended_on = step.throw(error)
        except StopIteration:
            return
    yield from resume(step, suspended_on)


# What ``next`` gives for a handler's first step that ended (see ``_first_step``).
_ENDED: Any = object()


def _first_step(consumer: AsyncConsumer, message: Any) -> Handed | None:
    """Run the handler's first step: None if it ended there, else what is left of it.

    Stepped with ``next(step, _ENDED)``, not ``step.send(None)``: a coroutine that returns
    None (a handler, as a rule) ends ``next`` without the ``StopIteration`` (and its
    traceback) ``send`` raises and this frame would catch, about 0.1-0.2 us a member of
    every broadcast."""
    try:
        step = consumer.dispatch(message).__await__()
        suspended_on = next(step, _ENDED)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as error:
        return Handed(None, None, error)
    if suspended_on is _ENDED:
        return None
    return Handed(step, suspended_on)


class EagerReader:
    """A consumer's layer reader, as the mailbox sees it while it waits (``offered``).

    It keeps its consumer's turn and connection side itself: a claim reads them for each
    member of a broadcast, and going through the consumer would read two more objects
    (the consumer and its ``__dict__``), two more cache misses a member at 10,000."""

    __slots__ = ("_consumer", "_loop", "_side", "_turn", "context", "handed", "task")

    def __init__(self, consumer: AsyncConsumer) -> None:
        self._consumer = consumer
        self._turn = consumer._turn
        self._side = consumer._connection_side
        self._loop = asyncio.get_running_loop()
        self.context = contextvars.copy_context()  # the reader task's: handlers run in it
        self.task: asyncio.Task[None] | None = None
        self.handed: Handed | None = None

    def start(self, reading: Awaitable[None]) -> asyncio.Task[None]:
        """Start the reader task in ``context``. A loop whose task factory takes no
        ``context`` (an older tracing library's ``factory(loop, coro)``) gets a plain
        task, and this consumer no eager hand-over (``claim`` sees no task)."""
        try:
            self.task = self._loop.create_task(reading, context=self.context)  # type: ignore[arg-type]
        except TypeError:
            return self._loop.create_task(reading)  # type: ignore[arg-type]
        return self.task

    async def offered(self) -> asyncio.Future[None] | None:
        """The layer's ready future for the next message, offered to senders (``claim``);
        None if the layer can't tell (then ``receive`` it). The reader awaits it in its
        own frame (``_read_layer``): a coroutine for the wait, parked with every idle
        reader, would be one object more a member for the collector (issue 20)."""
        consumer = self._consumer
        assert consumer.channel_layer is not None and consumer.channel_name is not None  # noqa: S101
        ready = await consumer.channel_layer.when_ready(consumer.channel_name)
        if ready is not None:
            offer_eagerly(ready, self)
        return ready

    def cancelled(self, error: asyncio.CancelledError) -> bool:
        """The reader was cancelled in its wait: False to raise it, True if a handler was
        handed over first (it sees the cancellation instead, as when the reader ran it)."""
        handed = self.handed
        if handed is None:
            return False
        handed.cancelled(error)
        return True

    def take_handed(self) -> Handed | None:
        """After the wait: the rest of a handler handed over (its consumer's turn taken)
        to await, or None to receive the message."""
        handed, self.handed = self.handed, None
        return handed

    # channels_layer.mailbox.EagerReceiver

    def claim(self) -> bool:
        task = self.task
        if task is None or task.cancelling():
            return False
        # A connection side woken (a frame given to it) but not yet run goes first, as the
        # frame arrived first: its wait is over, the turn still free.
        waiting = getattr(self._side, "_fut_waiter", None)
        if waiting is None or waiting.done():
            return False
        turn = self._turn  # its take_now(), less a call a member
        if turn.held:
            return False
        turn.held = True
        return True

    def release(self) -> None:
        self._turn.release()

    def handle(self, message: Any) -> bool:
        task = self.task
        assert task is not None  # noqa: S101  for mypy: claimed, so started
        if task.cancelling():  # since the claim: as a reader woken, then cancelled
            self.release()
            return False
        # The reader task is the current task while the handler runs, then the sender's
        # again; on 3.11 by writing the dict itself: two Python calls less a member.
        loop, current = self._loop, _current_tasks
        if current is None:
            previous = _swap_current_task(loop, task)
        else:
            previous = current.get(loop)
            current[loop] = task
        try:
            handed = self.context.run(_first_step, self._consumer, message)
        except RuntimeError:  # its context is entered (a callback of the reader's sent)
            handed = Handed(self._consumer.dispatch(message), None)  # for the reader to run
        finally:
            if current is None:
                _swap_current_task(loop, previous)
            elif previous is None:
                del current[loop]
            else:
                current[loop] = previous
        if handed is None:
            turn = self._turn  # its release(), less a call a member when nobody waits
            if turn._waiters:
                turn.release()
            else:
                turn.held = False
            return False
        self.handed = handed
        return True
