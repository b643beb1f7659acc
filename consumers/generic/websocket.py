"""WebSocket consumers: connect/receive/disconnect hooks over the ASGI WebSocket messages.

The protocol logic lives once, in ``WebsocketProtocol`` (``consumers.generic.protocol``):
checking frames, joining and leaving ``groups``, and turning a crash in a handler into a
1011 close for that connection alone. The four public classes here are thin sync and async
shells around it; the messages themselves are built in ``consumers.generic.frames``.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from consumers import send_deadline
from consumers.consumer import AsyncConsumer, SyncConsumer
from consumers.exceptions import AcceptConnection, ClientGone, DenyConnection, StopConsumer
from consumers.generic import protocol
from consumers.generic.frames import CLOSE_ABNORMAL as CLOSE_ABNORMAL
from consumers.generic.frames import CLOSE_INTERNAL_ERROR as CLOSE_INTERNAL_ERROR
from consumers.generic.frames import (
    CLOSE_INVALID_PAYLOAD,
    CLOSE_NO_STATUS,
    CLOSE_UNSUPPORTED_DATA,
    accept_message,
    close_message,
    frame_message,
    invalid_json,
)
from consumers.generic.frames import CLOSE_NORMAL as CLOSE_NORMAL
from consumers.generic.frames import CLOSE_TOO_BIG as CLOSE_TOO_BIG
from consumers.generic.jsonframes import MAX_JSON_DEPTH, dump_json, parse_json
from consumers.generic.protocol import _BASE_SEND, _rejected
from consumers.generic.protocol import WebsocketProtocol as WebsocketProtocol
from consumers.headers import Headers
from consumers.types import Message

# A JSON frame that took over PACE_ABOVE seconds to decode holds its connection's next
# frame for PACE_FACTOR times as long: servers hand queued frames over without
# suspending, so without it one client's costly frames would keep the loop from the others.
PACE_ABOVE = 0.001
PACE_FACTOR = 3.0
# Frames shorter than PACE_ABOVE * DECODE_CHARS_PER_SECOND characters decode without the
# clock when ``decode_json`` is the default: the costliest shapes measured (4 KiB of small
# containers or floats) decode at 44 million characters a second, so such a frame cannot
# take PACE_ABOVE by its own cost even 9 times slower (a garbage collection it happens to
# set off is not its cost: a collection is not paced either when another call sets it off).
DECODE_CHARS_PER_SECOND = 5_000_000


class WebsocketConsumer(WebsocketProtocol, SyncConsumer):
    """WebSocket consumer with sync hooks: ``connect``, ``receive``, ``disconnect``."""

    def websocket_connect(self, message: Message) -> None:
        try:
            self.connect()
        except (AcceptConnection, DenyConnection) as outcome:
            super().send(self._connect_outcome(outcome))

    def connect(self) -> None:
        self.accept()

    def accept(self, subprotocol: str | None = None, headers: Headers | None = None) -> None:
        super().send(accept_message(subprotocol, headers))

    def websocket_receive(self, message: Message) -> None:
        text = message.get("text")
        if text is not None:  # a text frame; else a binary one (no dict per frame)
            self.receive(text_data=text)
        else:
            self.receive(bytes_data=message.get("bytes"))

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        pass

    def send(  # type: ignore[override]
        self,
        text_data: str | None = None,
        bytes_data: bytes | None = None,
        close: bool | int = False,
    ) -> None:
        super().send(frame_message(text_data, bytes_data))
        if close is not False:
            self.close(None if close is True else close)

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        super().send(close_message(code, reason))

    def websocket_disconnect(self, message: Message) -> None:
        self.disconnect(message.get("code", CLOSE_NO_STATUS))
        raise StopConsumer

    def disconnect(self, code: int) -> None:
        pass


class AsyncWebsocketConsumer(WebsocketProtocol):
    """WebSocket consumer with async hooks: ``connect``, ``receive``, ``disconnect``.

    Hooks still at their defaults on a frame's way (``dispatch``'s next step,
    ``websocket_receive``, ``AsyncConsumer.send``; the JSON class's ``decode_json``,
    ``encode_json``, ``send``) are not called as coroutines: their work is done in place,
    the same work, as each coroutine a frame goes through costs about what decoding a small
    frame does. Every hook may still be overridden or replaced, as on Channels.
    """

    async def websocket_connect(self, message: Message) -> None:
        try:
            await self.connect()
        except (AcceptConnection, DenyConnection) as outcome:
            await super().send(self._connect_outcome(outcome))

    async def connect(self) -> None:
        await self.accept()

    async def accept(self, subprotocol: str | None = None, headers: Headers | None = None) -> None:
        await super().send(accept_message(subprotocol, headers))

    async def websocket_receive(self, message: Message) -> None:
        text = message.get("text")
        if text is not None:  # a text frame; else a binary one (no dict per frame)
            await self.receive(text_data=text)
        else:
            await self.receive(bytes_data=message.get("bytes"))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        pass

    async def send(  # type: ignore[override]
        self,
        text_data: str | None = None,
        bytes_data: bytes | None = None,
        close: bool | int = False,
    ) -> None:
        if type(text_data) is str:  # frame_message's usual case, without its call
            message = {"type": "websocket.send", "text": text_data}
        else:
            message = frame_message(text_data, bytes_data)
        if not self._base_dispatch_inline or AsyncConsumer.send is not _BASE_SEND:
            await super().send(message)  # a class between us and AsyncConsumer may send
        else:
            try:  # AsyncConsumer.send inline; a send that ended at once is not awaited
                if (sending := self._asgi_send(message)) is not send_deadline.done_send:
                    await sending
            except OSError as error:
                raise ClientGone(f"the client has gone: {error!r}") from error
        if close is not False:
            await self.close(None if close is True else close)

    async def close(self, code: int | None = None, reason: str | None = None) -> None:
        await super().send(close_message(code, reason))

    async def websocket_disconnect(self, message: Message) -> None:
        await self.disconnect(message.get("code", CLOSE_NO_STATUS))
        raise StopConsumer

    async def disconnect(self, code: int) -> None:
        pass


class JsonWebsocketConsumer(WebsocketConsumer):
    """WebSocket consumer that speaks JSON: ``receive_json`` and ``send_json``.

    A frame that is not JSON text closes this connection alone (1007 for invalid JSON,
    1003 for a binary frame) with one log line.
    """

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is None:
            return self.close(*_rejected(self, CLOSE_UNSUPPORTED_DATA, NOT_JSON_TEXT))
        started = time.perf_counter()
        try:
            content = self.decode_json(text_data)
        except (ValueError, RecursionError) as error:
            return self.close(*_rejected(self, CLOSE_INVALID_PAYLOAD, invalid_json(error)))
        decoding = time.perf_counter() - started
        self.receive_json(content)
        if decoding > PACE_ABOVE:
            del content  # freed now, not promoted by collections while this waits
            time.sleep(decoding * PACE_FACTOR)  # this connection's own pool turn

    def receive_json(self, content: Any, **kwargs: Any) -> None:
        pass

    def send_json(self, content: Any, close: bool | int = False) -> None:
        self.send(text_data=self.encode_json(content), close=close)

    @classmethod
    def decode_json(cls, text_data: str) -> Any:
        return parse_json(text_data)

    @classmethod
    def encode_json(cls, content: Any) -> str:
        return json.dumps(content)


class AsyncJsonWebsocketConsumer(AsyncWebsocketConsumer):
    """Async WebSocket consumer that speaks JSON; see ``JsonWebsocketConsumer``."""

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is None:
            return await self.close(*_rejected(self, CLOSE_UNSUPPORTED_DATA, NOT_JSON_TEXT))
        if (
            len(text_data) < PACE_ABOVE * DECODE_CHARS_PER_SECOND
            and getattr(self.decode_json, "__func__", None) is _DECODE_JSON
        ):  # too short to pace: decoded without the clock
            try:
                content = parse_json(text_data)  # decode_json
            except (ValueError, RecursionError) as error:
                return await self.close(
                    *_rejected(self, CLOSE_INVALID_PAYLOAD, invalid_json(error))
                )
            return await self.receive_json(content)
        started = time.perf_counter()
        try:
            content = await self.decode_json(text_data)
        except (ValueError, RecursionError) as error:
            return await self.close(*_rejected(self, CLOSE_INVALID_PAYLOAD, invalid_json(error)))
        decoding = time.perf_counter() - started
        await self.receive_json(content)
        if decoding > PACE_ABOVE:
            del content  # freed now, not promoted by collections while this waits
            await asyncio.sleep(decoding * PACE_FACTOR)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        pass

    async def send_json(self, content: Any, close: bool | int = False) -> None:
        if (
            getattr(self.encode_json, "__func__", None) is not _ENCODE_JSON
            or getattr(self.send, "__func__", None) is not _SEND
            or AsyncConsumer.send is not _BASE_SEND
            or not self._base_dispatch_inline
        ):
            return await self.send(text_data=await self.encode_json(content), close=close)
        message = {"type": "websocket.send", "text": dump_json(content)}  # encode_json, send
        try:
            await self._asgi_send(message)
        except OSError as error:
            raise ClientGone(f"the client has gone: {error!r}") from error
        if close is not False:
            await self.close(None if close is True else close)

    @classmethod
    async def decode_json(cls, text_data: str) -> Any:
        return parse_json(text_data)

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        return dump_json(content)


_WEBSOCKET_RECEIVE = protocol.WEBSOCKET_RECEIVE = AsyncWebsocketConsumer.websocket_receive
_SEND = AsyncWebsocketConsumer.send
_DECODE_JSON = vars(AsyncJsonWebsocketConsumer)["decode_json"].__func__
_ENCODE_JSON = vars(AsyncJsonWebsocketConsumer)["encode_json"].__func__

NOT_JSON_TEXT = "binary frame where JSON text was expected"


# Importable from here too, as before frames.py and protocol.py: the ``X as X`` imports
# (CLOSE_ABNORMAL, CLOSE_INTERNAL_ERROR, CLOSE_NORMAL, CLOSE_TOO_BIG, WebsocketProtocol).
__all__ = [
    "MAX_JSON_DEPTH",
    "AsyncJsonWebsocketConsumer",
    "AsyncWebsocketConsumer",
    "JsonWebsocketConsumer",
    "WebsocketConsumer",
]
