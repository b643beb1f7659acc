"""The four WebSocket consumer classes at the API's floor (see ``bench.floor``)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import threading
from collections.abc import Awaitable, Generator
from typing import Any

Message = dict[str, Any]


class Groups:
    """An in-process channel layer with groups only. A group send runs each member's
    handler in the sender's call, with what the API promises kept at its least cost: each
    member gets its own copy, one handler at a time per consumer (a busy one takes it when
    its handler ends), and a handler that suspends (a send waiting on a slow client) goes
    on in a task of its own, not in the sender's."""

    extensions = ("groups",)

    def __init__(self) -> None:
        self.groups: dict[str, set[Any]] = {}

    def join(self, group: str, consumer: Any) -> None:
        self.groups.setdefault(group, set()).add(consumer)

    def leave(self, group: str, consumer: Any) -> None:
        self.groups.get(group, set()).discard(consumer)

    async def group_send(self, group: str, message: Message) -> None:
        name = message["type"].replace(".", "_")
        for member in list(self.groups.get(group, ())):
            if member._busy:
                member._later.append((name, dict(message)))
            else:
                member._busy = True
                if member._run_now(getattr(member, name)(dict(message))):
                    member._done()


LAYER = Groups()


class _Rest:
    """The rest of a coroutine whose first step ran elsewhere, for a task to await."""

    def __init__(self, step: Generator[Any, Any, Any], suspended_on: Any) -> None:
        self.step, self.suspended_on = step, suspended_on

    def __await__(self) -> Generator[Any, Any, None]:
        step, waiting = self.step, self.suspended_on
        while True:
            try:
                sent = yield waiting
            except BaseException as error:  # a cancellation: the handler's
                try:
                    waiting = step.throw(error)
                except StopIteration:
                    return
                continue
            try:
                waiting = step.send(sent)
            except StopIteration:
                return


class _Consumer:
    groups: list[str] = []
    channel_layer = LAYER
    _busy = False

    @classmethod
    def as_asgi(cls) -> Any:
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await cls()(scope, receive, send)

        return app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.scope = scope
        self.base_send = send
        self._later: collections.deque[tuple[str, Message]] = collections.deque()
        try:
            while True:
                message = await receive()
                kind = message["type"]
                if kind == "websocket.receive":
                    if not self.groups:  # no layer message can come: no turns to keep
                        await self._frame(message)
                        continue
                    while self._busy:  # a group message's handler goes on in a task
                        await asyncio.sleep(0)
                    self._busy = True
                    try:
                        await self._frame(message)
                    finally:
                        self._done()
                elif kind == "websocket.connect":
                    for group in self.groups:
                        LAYER.join(group, self)
                    await send({"type": "websocket.accept"})
                else:
                    return
        finally:
            for group in self.groups:
                LAYER.leave(group, self)

    def _frame(self, message: Message) -> Awaitable[None]:
        raise NotImplementedError

    def _run_now(self, handling: Any) -> bool:
        """Run a group message's handler (the consumer's turn taken) as far as it goes now:
        True if it ended, else it goes on in a task of its own, which then calls ``_done``."""
        step = handling.__await__()
        try:
            suspended_on = step.send(None)
        except StopIteration:
            return True
        except Exception:  # one member's failure is its own
            return True
        self._going_on = asyncio.ensure_future(self._go_on(_Rest(step, suspended_on)))
        return False

    async def _go_on(self, rest: _Rest) -> None:
        try:
            await rest
        finally:
            self._done()

    def _done(self) -> None:
        """A handler ended: the group messages that came meanwhile, then the turn is free."""
        while self._later:
            name, message = self._later.popleft()
            if not self._run_now(getattr(self, name)(message)):
                return
        self._busy = False


class AsyncWebsocketConsumer(_Consumer):
    """Only the user's ``receive`` is a coroutine: the frame's way to it and ``send`` are
    plain calls that give the next awaitable (``await self.send(...)`` still works)."""

    def _frame(self, message: Message) -> Awaitable[None]:
        text = message.get("text")
        if text is not None:
            return self.receive(text_data=text)
        return self.receive(bytes_data=message.get("bytes"))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        pass

    def send(self, text_data: str | None = None, bytes_data: bytes | None = None) -> Any:
        if text_data is not None:
            return self.base_send({"type": "websocket.send", "text": text_data})
        return self.base_send({"type": "websocket.send", "bytes": bytes_data})


# The stdlib's C scanner and encoder, called directly: its Python layers around them cost
# more than they do on a small frame, and a floor does not pay for them.
_scan = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_encode = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
    None, None, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True
)


class AsyncJsonWebsocketConsumer(AsyncWebsocketConsumer):
    def _frame(self, message: Message) -> Awaitable[None]:
        text = message["text"]
        content, end = _scan(text, 0)
        if end != len(text):
            raise ValueError("not one JSON document")
        return self.receive_json(content)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        pass

    def send_json(self, content: Any) -> Any:
        return self.base_send({"type": "websocket.send", "text": "".join(_encode(content, 0))})


class _HandlerThread:
    """One thread for every sync handler, fed in batches: a frame wakes it only when it is
    idle, and the handlers it ran come back to their loops in one call a batch: what a
    thread hop a frame costs at least (``run_in_executor``, with its futures and a wake-up
    each way per frame, costs much more: part11-floor.md). A handler's error is its
    connection's: the thread goes on."""

    def __init__(self) -> None:
        self.jobs: collections.deque[tuple[Any, Message, asyncio.Future[None]]] = (
            collections.deque()
        )
        self.wake = threading.Event()
        # Read by the loop without a lock: the thread looks at ``jobs`` again after setting
        # it, so a job queued as it goes idle is taken either way.
        self.idle = True
        threading.Thread(target=self._run, daemon=True).start()

    def submit(self, consumer: Any, message: Message) -> asyncio.Future[None]:
        done = asyncio.get_running_loop().create_future()
        self.jobs.append((consumer, message, done))
        if self.idle:
            self.wake.set()
        return done

    def _run(self) -> None:
        jobs = self.jobs
        while True:
            self.wake.wait()
            self.wake.clear()
            self.idle = False
            while jobs:
                finished: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
                while jobs:
                    consumer, message, done = jobs.popleft()
                    try:  # not contextlib.suppress: an object a job  # noqa: SIM105
                        consumer._run(message)
                    except BaseException:  # noqa: S110  the floor handles no error
                        pass
                    finished.setdefault(done.get_loop(), []).append(done)
                for loop, ended in finished.items():
                    with contextlib.suppress(RuntimeError):  # that loop has closed
                        loop.call_soon_threadsafe(_finish, ended)
                self.idle = True
                if jobs:  # queued as it went idle: taken now, woken or not
                    self.idle = False


def _finish(ended: list[asyncio.Future[None]]) -> None:
    for done in ended:
        if not done.done():  # its connection's task was cancelled
            done.set_result(None)


_handlers: _HandlerThread | None = None


class WebsocketConsumer(_Consumer):
    """Handlers on one thread (``_HandlerThread``); what a handler sends goes out, in
    order, when it returns, before the connection's next frame."""

    async def _frame(self, message: Message) -> None:
        global _handlers
        if _handlers is None:
            _handlers = _HandlerThread()
        self._sent: list[Message] = []
        await _handlers.submit(self, message)
        for sent in self._sent:
            await self.base_send(sent)

    def _run(self, message: Message) -> None:
        text = message.get("text")
        if text is not None:
            self.receive(text_data=text)
        else:
            self.receive(bytes_data=message.get("bytes"))

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        pass

    def send(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is not None:
            self._sent.append({"type": "websocket.send", "text": text_data})
        else:
            self._sent.append({"type": "websocket.send", "bytes": bytes_data})
