"""The four WebSocket consumer classes at the API's floor (see ``bench.floor``)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import threading
from collections.abc import Awaitable
from typing import Any

Message = dict[str, Any]


class StopConsumer(Exception):
    pass


class Groups:
    """An in-process channel layer with groups only: a group send runs each member's
    handler in the sender's task, one after another (what the least a fan-out does)."""

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
            try:
                await getattr(member, name)(message)
            except Exception:  # one member's failure is its own  # noqa: S112
                continue


LAYER = Groups()


class _Consumer:
    groups: list[str] = []
    channel_layer = LAYER

    @classmethod
    def as_asgi(cls) -> Any:
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await cls()(scope, receive, send)

        return app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.scope = scope
        self.base_send = send
        try:
            while True:
                message = await receive()
                kind = message["type"]
                if kind == "websocket.receive":
                    await self._frame(message)
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


class AsyncJsonWebsocketConsumer(AsyncWebsocketConsumer):
    def _frame(self, message: Message) -> Awaitable[None]:
        return self.receive_json(json.loads(message["text"]))

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        pass

    def send_json(self, content: Any) -> Any:
        return self.base_send({"type": "websocket.send", "text": json.dumps(content)})


class _HandlerThread:
    """One thread for every sync handler, fed in batches: a frame is queued with no thread
    woken while the thread is busy, and the handlers it ran come back to the loop in one
    call a batch: what a thread hop a frame costs at least (``run_in_executor``, with its
    futures and a wake-up each way per frame, costs much more: part11-floor.md)."""

    def __init__(self) -> None:
        self.jobs: collections.deque[tuple[Any, Message, asyncio.Future[None]]] = (
            collections.deque()
        )
        self.wake = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        threading.Thread(target=self._run, daemon=True).start()

    def submit(self, consumer: Any, message: Message) -> asyncio.Future[None]:
        self.loop = loop = asyncio.get_running_loop()
        done = loop.create_future()
        self.jobs.append((consumer, message, done))
        self.wake.set()
        return done

    def _run(self) -> None:
        while True:
            self.wake.wait()
            self.wake.clear()
            finished = []
            while self.jobs:
                consumer, message, done = self.jobs.popleft()
                with contextlib.suppress(Exception):  # the floor handles no error
                    consumer._run(message)
                finished.append(done)
            assert self.loop is not None
            self.loop.call_soon_threadsafe(_finish, finished)


def _finish(finished: list[asyncio.Future[None]]) -> None:
    for done in finished:
        done.set_result(None)


_handlers: _HandlerThread | None = None


class WebsocketConsumer(_Consumer):
    """Handlers on one thread (``_HandlerThread``); what a handler sends goes out, in
    order, when it returns."""

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
