"""Consumers: ASGI applications written as one handler method per message type.

A message ``{"type": "chat.message"}`` is handled by ``chat_message``. A consumer listens to
two sources at once: the ASGI ``receive`` of its connection and, when a channel layer is
configured, its own layer channel (``self.channel_name``), so other processes and consumers
can reach it. Messages are handled one at a time, each source's in its arrival order; a
frame that arrives while the layer side has its turn waits for up to
``LAYER_MESSAGES_PER_TURN`` layer messages, some of which may have come after it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar

from channels_layer import DEFAULT_CHANNEL_LAYER, BaseChannelLayer, get_channel_layer
from consumers import metrics
from consumers.eager import EagerReader
from consumers.exceptions import ClientGone, StopConsumer
from consumers.inline_attributes import learn_attributes
from consumers.outbox import Outbox
from consumers.send_deadline import SendDeadline, send_within_deadline
from consumers.threads import close_old_connections_here, sync_pool
from consumers.turn import Turn
from consumers.types import Message, Receive, Scope, Send

logger = logging.getLogger("consumers.consumer")

# Seconds a cancelled layer reader gets to end before the consumer ends without it.
READER_STOP_TIMEOUT = 2.0
Handler = Callable[[Message], Any]
# Layer messages a consumer handles in one turn before a frame that waits, as long as one
# waits when the last is done (so some may have come after the frame): enough to keep a
# busy socket's channel from filling, few enough that a frame waits for a bounded number
# of (usually quick) handlers.
LAYER_MESSAGES_PER_TURN = 32


def get_handler_name(message: Mapping[str, Any]) -> str:
    """The method name for a message: its ``type`` with dots turned into underscores."""
    if "type" not in message:
        raise ValueError(f"Incoming message has no 'type' key: {_preview(message)}")
    kind = message["type"]
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"Message 'type' must be a non-empty str, got {kind!r}")
    if kind.startswith("_"):
        raise ValueError(f"Malformed message type {kind!r}: it may not start with an underscore")
    name = _names.get(kind)
    if name is None:
        name = kind.replace(".", "_")
        if len(_names) < NAMES_KEPT:
            _names[kind] = name
    return name


# Message types found valid, and their method names: a frame's type is looked up, not
# checked again. Bounded, as layer messages from other processes bring their own types.
_names: dict[str, str] = {}
NAMES_KEPT = 512


def _from_daphne(send: Send) -> bool:
    """Daphne's send (its ``handle_reply``, perhaps behind middleware) writes at once and
    never waits for the client; ``consumers.daphne`` bounds what waits unsent instead."""
    modules = sys.modules
    if "daphne.server" not in modules:  # no Daphne in this process: the usual answer, at once
        return False
    adaptation = modules.get("consumers.daphne")
    if adaptation is not None and adaptation.serving:
        return True
    server = getattr(getattr(send, "func", None), "__self__", None)
    return type(server).__module__ == "daphne.server"


def _bounded(scope: Scope, send: Send) -> Send:
    """A WebSocket's ``send`` within ``CONSUMERS_WEBSOCKET_SEND_TIMEOUT``: not on Daphne,
    nor for an ``Outbox``'s, whose own ``send`` is bounded already (sync consumers)."""
    if scope.get("type") != "websocket" or _from_daphne(send):
        return send
    if isinstance(getattr(send, "__self__", None), Outbox):
        return send
    return send_within_deadline(send, scope)


def _failed(reading: asyncio.Task[None] | None) -> bool:
    """Whether the layer reader ended with an error."""
    return (
        reading is not None
        and reading.done()
        and not reading.cancelled()
        and reading.exception() is not None
    )


def _preview(message: Mapping[str, Any]) -> str:
    text = repr(message)
    return text if len(text) <= 200 else text[:200] + "..."


class AsyncConsumer:
    """Base consumer whose handlers are coroutines running on the event loop."""

    channel_layer_alias: ClassVar[str] = DEFAULT_CHANNEL_LAYER
    channel_layer: BaseChannelLayer | None
    channel_name: str | None = None
    scope: Scope
    # The layer side's state, set on the instance only once it changes: four stores and
    # dict entries less per connection, which most connections never change but _ready.
    _reading: asyncio.Task[None] | None = None
    _eager: EagerReader | None = None
    _frame_waiting = False
    _ready: asyncio.Future[None] | None = None
    # The handler timer ``metrics.handling`` keeps on the consumer at its first message.
    _consumers_handling: metrics._Handling | metrics._NotMeasured | None = None
    # Every attribute a consumer sets on itself, for ``as_asgi`` to teach the class (see
    # ``inline_attributes.learn_attributes``).
    _instance_attributes: ClassVar[tuple[str, ...]] = (
        "scope",
        "_asgi_send",
        "channel_layer",
        "channel_name",
        "_turn",
        "_connection_side",
        "_ready",
        "_consumers_handling",
        "_eager",
        "_reading",
        "_frame_waiting",
    )

    def __init__(self, **initkwargs: Any) -> None:
        for key, value in initkwargs.items():
            if not hasattr(type(self), key):
                raise TypeError(
                    f"{type(self).__name__}() got an unexpected keyword argument {key!r}: "
                    "as_asgi() only accepts names of class attributes"
                )
            setattr(self, key, value)

    @classmethod
    def as_asgi(cls, **initkwargs: Any) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
        """An ASGI application that makes a new consumer for each connection."""
        # Validates the keywords at routing time, not at the first request.
        learn_attributes(cls(**initkwargs))

        def start(scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
            return cls(**initkwargs)(scope, receive, send)

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            await start(scope, receive, send)

        # A coroutine function, as servers and asgiref check; our routers call start()
        # instead, which leaves out this coroutine: one frame less a connection.
        app._asgi_start = start  # type: ignore[attr-defined]
        start.app = app  # type: ignore[attr-defined]
        app.consumer_class = cls  # type: ignore[attr-defined]
        app.consumer_initkwargs = initkwargs  # type: ignore[attr-defined]
        functools.update_wrapper(app, cls, updated=())
        return app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle messages from the connection and the layer channel one at a time.

        This task reads the connection, in this one coroutine for the connection's life (a
        frame per connection, resumed at each of its wake-ups). Layer messages are read by a
        second task, started
        when the layer says the first one is ready (``when_ready``): until then the consumer
        waits on a future, not on a task and its frames, which is what most connections
        that only sit in a group cost. Once started, the task stays parked in ``receive``
        (ending and restarting it per message made broadcasts to 1,000 clients over Redis
        twice as slow at the p99). Each side reads
        its next message only after handling the last, and a lock gives the handlers
        turns, so nothing is read far ahead (a busy consumer leaves messages where they
        are, and competing worker instances share a channel's work). A layer turn takes
        the layer messages already waiting, up to ``LAYER_MESSAGES_PER_TURN``, when a frame
        waits: one each would let a socket busy posting handle one room broadcast per post
        while its channel fills up. When the layer side
        stops (StopConsumer or an error) it cancels this task, which then raises the same.
        (Methods and attributes, not closures: an idle connection should cost little.)
        """
        self.scope = scope
        self._asgi_send = _bounded(scope, send)
        del send  # what the server or a watch gave: kept in this frame for life otherwise
        self.channel_layer = layer = get_channel_layer(self.channel_layer_alias)
        # The server's own receive, the metrics' count after it: one coroutine less a frame.
        receive, watch = metrics.unwatched(receive)
        try:
            if layer is None:
                while True:
                    message = await receive()
                    if watch is not None:
                        watch.received(message)
                    await self.dispatch(message)
            self.channel_name = await layer.new_channel()
            self._turn = turn = Turn(self)
            connection_side = asyncio.current_task()
            assert connection_side is not None  # noqa: S101  for mypy: called from a task
            self._connection_side = connection_side
            del connection_side  # a cycle with the task's error (the traceback holds this frame)
            # _reading, _eager, _frame_waiting and _ready start as the class's defaults.
            if not await self._idle():
                self._reading = asyncio.ensure_future(self._read_layer())
            try:
                while True:
                    message = await receive()
                    if watch is not None:
                        watch.received(message)
                    if turn.held:  # take_now() in place: two calls less a frame
                        self._frame_waiting = True  # seen by the layer side while it waits
                        await turn.take()
                        self._frame_waiting = False
                    else:
                        turn.held = True
                    try:
                        await self.dispatch(message)
                    finally:
                        if turn._waiters:
                            turn.release()
                        else:  # release() with nobody waiting
                            turn.held = False
            except asyncio.CancelledError:
                # The reader's error, raised here with no local of this frame (which its
                # traceback holds) on it or its task: a cycle the collector would find.
                if _failed(self._reading):
                    raise self._reading.exception() from None  # type: ignore[union-attr,misc]
                raise
            finally:
                if self._ready is not None:
                    self._ready.cancel()
                if self._reading is not None:
                    self._reading.cancel()
                    await self._reader_stopped(self._reading)
                    # A cancelled task keeps its error, whose traceback holds the reader's
                    # frame, which holds the task: let go of it.
                    if self._eager is not None:
                        self._eager.task = None  # so claims are refused from now on
                    self._reading = self._eager = None
                # Nor any reference back to the consumer: a closed connection leaves no
                # cycle (21-31 objects) for a full collection to find (part9-bcast.md).
                turn._consumer = None
                # Nor to this task: ended by an error (or cancelled), it keeps it, and with
                # it this frame and the consumer.
                del self._connection_side
                if isinstance(send := self._asgi_send, SendDeadline) and send.writing:
                    await send.settled()  # what a hand-over left is out before the end
        except (StopConsumer, ClientGone):  # not contextlib.suppress: an object per connection
            return

    async def _reader_stopped(self, reading: asyncio.Task[None]) -> None:
        """Wait for the cancelled layer reader, a bounded time: one that swallows its
        cancellation (redis-py's ``wait_for`` on Python 3.11, CPython gh-86296) must not
        keep the consumer from ending."""
        await asyncio.wait({reading}, timeout=READER_STOP_TIMEOUT)
        if not reading.done():
            logger.warning(
                "The layer reader of %s did not stop within %s s of its cancellation; "
                "the consumer ends without it",
                self.channel_name,
                READER_STOP_TIMEOUT,
            )
        elif not reading.cancelled():
            reading.exception()  # retrieved: it has been reported where it was raised

    async def _idle(self) -> bool:
        """Wait for the first layer message without a task; False if the layer can't."""
        # For mypy: only called once the consumer has a layer and a channel.
        assert self.channel_layer is not None and self.channel_name is not None  # noqa: S101
        self._ready = await self.channel_layer.when_ready(self.channel_name)
        if self._ready is None:
            return False
        self._ready.add_done_callback(self._turn)  # self._start_reading
        return True

    def _start_reading(self, ready: asyncio.Future[None]) -> None:
        if not ready.cancelled() and not self._connection_side.done():
            if isinstance(self, SyncConsumer):  # its handlers' threads: no eager dispatch
                self._reading = asyncio.ensure_future(self._read_layer())
            else:
                self._eager = EagerReader(self)
                self._reading = self._eager.start(self._read_layer())

    async def _read_layer(self) -> None:
        # For mypy: only started once the consumer has a layer and a channel.
        assert self.channel_layer is not None and self.channel_name is not None  # noqa: S101
        eager = self._eager
        try:
            while True:
                # Handed: a handler the layer began in its sender's call (consumers.eager).
                handed = None
                if eager is not None and (ready := await eager.offered()) is not None:
                    try:
                        await ready
                    except asyncio.CancelledError as error:
                        if not eager.cancelled(error):
                            raise
                    handed = eager.take_handed()
                if handed is None:
                    message = await self.channel_layer.receive(self.channel_name)
                    await self._turn.take()
                try:
                    if handed is None:
                        await self.dispatch(message)
                    else:
                        await handed
                    handled = 1
                    while (
                        self._frame_waiting
                        and handled < LAYER_MESSAGES_PER_TURN
                        and await self._layer_message_waiting()
                    ):
                        await self.dispatch(await self.channel_layer.receive(self.channel_name))
                        handled += 1
                finally:
                    self._turn.release()
        except Exception:
            if hasattr(self, "_connection_side"):  # gone once the consumer has ended
                self._connection_side.cancel()
            raise

    async def _layer_message_waiting(self) -> bool:
        """Whether the layer channel's ``receive`` would return at once (False if the layer
        cannot tell)."""
        assert self.channel_layer is not None and self.channel_name is not None  # noqa: S101
        ready = await self.channel_layer.when_ready(self.channel_name)
        if ready is None:
            return False
        if ready.done():
            return True
        ready.cancel()
        return False

    async def dispatch(self, message: Message) -> None:
        """Call the handler named by the message's type."""
        # ``with metrics.handling(self)``, less its calls (``ended`` is only ``observe``
        # for a call that did not raise, unless the timer counts a worker's jobs).
        timer = self._consumers_handling or metrics.handling(self)
        started = metrics.clock()
        try:
            await self._handler(message)(message)
        except BaseException as error:
            timer.ended(started, type(error))
            raise
        if timer.job:
            timer.ended(started)
        else:
            timer.observe(metrics.clock() - started)

    def _handler(self, message: Message) -> Callable[[Message], Any]:
        try:
            name = _names[message["type"]]
        except (KeyError, TypeError):  # not seen yet, or no valid type: checked
            name = get_handler_name(message)
        # Annotated, not ``cast()``: a call of its own, 80 ns of a broadcast member's ~250 here.
        handler: Handler | None = getattr(self, name, None)
        if handler is None:
            raise ValueError(
                f"{type(self).__name__} has no handler for message type {message['type']!r} "
                f"(define a method named {name!r})"
            )
        return handler

    @property
    def base_send(self) -> Send:
        """The connection's own send, by Channels' name (demultiplexers and hand-written
        consumers await it with raw ASGI messages); setting it reroutes every send, as
        on Channels."""
        return self._asgi_send

    @base_send.setter
    def base_send(self, send: Send) -> None:
        self._asgi_send = send

    async def send(self, message: Message) -> None:
        """Send an ASGI message to the client's connection; ``ClientGone`` if it has left."""
        try:
            await self._asgi_send(message)
        except OSError as error:
            raise ClientGone(f"the client has gone: {error!r}") from error


class SyncConsumer(AsyncConsumer):
    """Consumer with plain (sync) handlers, safe for the ORM and other blocking code.

    Handlers run on the bounded pool of ``consumers.threads``: one at a time for this
    connection, in parallel with other connections. Database connections past their age
    are closed around each handler, as Django does around a request. ``send`` hands the
    message to the event loop and returns at once; messages go out in order, and all of a
    handler's messages are out before the next message is handled.
    """

    _instance_attributes = (
        "_pool",
        "_outbox",
        "_handler_send",
        *AsyncConsumer._instance_attributes,
    )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._pool = sync_pool()
        self._outbox = Outbox(_bounded(scope, send))
        self._handler_send: Callable[[Message], None] = self._outbox.put
        try:
            await super().__call__(scope, receive, self._outbox.send_now)
        finally:
            await self._outbox.flush()  # what a thread of the application's own sent last

    async def dispatch(self, message: Message) -> None:
        outbox = self._outbox
        try:
            await outbox.run(self._pool, self._run_handler, self._handler(message), message)
        finally:
            if not outbox.idle:  # a cancelled run: what its handler sent still goes out
                await outbox.flush()
        if outbox.gone:
            raise ClientGone("the client has gone")

    @staticmethod
    def _run_handler(handler: Handler, message: Message) -> None:
        close_old_connections_here()
        try:
            timer, started = metrics.handling(getattr(handler, "__self__", None)), metrics.clock()
            try:
                handler(message)
            except BaseException as error:
                timer.ended(started, type(error))
                raise
            if timer.job:
                timer.ended(started)
            else:  # what ended() does then, without its call
                timer.observe(metrics.clock() - started)
        finally:
            close_old_connections_here()

    def send(self, message: Message) -> None:  # type: ignore[override]
        """Send an ASGI message to the client's connection, from handler code."""
        self._handler_send(message)

    @property  # type: ignore[override]
    def base_send(self) -> Callable[[Message], None]:
        """The connection's own send for handler code, as on Channels: a plain call that
        queues the message in order with ``send()``'s; setting it reroutes every send."""
        return self._handler_send

    @base_send.setter
    def base_send(self, send: Callable[[Message], None]) -> None:
        self._handler_send = send
