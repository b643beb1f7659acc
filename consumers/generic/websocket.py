"""WebSocket consumers: connect/receive/disconnect hooks over the ASGI WebSocket messages.

The protocol logic lives once, in ``WebsocketProtocol``: checking frames, joining and
leaving ``groups``, and turning a crash in a handler into a 1011 close for that connection
alone. The four public classes are thin sync and async shells around it; the messages
themselves are built in ``consumers.generic.frames``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any, ClassVar

from consumers import metrics, send_deadline
from consumers.consumer import AsyncConsumer, SyncConsumer
from consumers.exceptions import (
    AcceptConnection,
    ClientGone,
    DenyConnection,
    InvalidChannelLayerError,
    StopConsumer,
)
from consumers.generic.frames import (
    CLOSE_ABNORMAL,
    CLOSE_INTERNAL_ERROR,
    CLOSE_INVALID_PAYLOAD,
    CLOSE_NO_STATUS,
    CLOSE_TOO_BIG,
    CLOSE_UNSUPPORTED_DATA,
    accept_message,
    close_message,
    frame_message,
    invalid_json,
    longer_than,
)
from consumers.generic.frames import (
    CLOSE_NORMAL as CLOSE_NORMAL,  # importable from here, as before frames.py
)
from consumers.generic.jsonframes import MAX_JSON_DEPTH, dump_json, parse_json
from consumers.headers import Headers
from consumers.types import Message

logger = logging.getLogger("consumers.websocket")


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


# A frame's way skips the coroutine of a hook still at its default, doing its work in
# place. Whether it is the default is asked at each call, as Channels looks hooks up on
# ``self`` at each call: a hook replaced at any time, in a subclass, on any class
# (``mock.patch.object``) or on the instance, runs. ``getattr(self.hook, "__func__", None)
# is default`` asks the class and the instance at once (a mock has no ``__func__``), in
# about 40 ns a hook on Python 3.11; calling the defaults costs about 0.5 us more a text
# echo frame, 1 us a JSON one. The defaults:
_BASE_DISPATCH = AsyncConsumer.dispatch
_BASE_SEND = AsyncConsumer.send


class WebsocketProtocol(AsyncConsumer):
    """What the sync and async WebSocket consumers share; not used directly."""

    groups: ClassVar[list[str]] = []
    #: The largest frame, in bytes, handed to ``receive()``; a larger one closes the
    #: connection with 1009 before anything decodes it. ``None``: the server's limit only
    #: (as on Channels).
    max_frame_size: ClassVar[int | None] = None
    # Set once a client's frame was refused: what it sends until the close lands is dropped.
    _refused = False
    # Whether ``AsyncConsumer`` comes right after this class in the class's order: then
    # while ``AsyncConsumer.dispatch`` (or ``send``) is the default, it is the next
    # ``dispatch`` (``send``) and its lines run here, one coroutine less a message (with a
    # class in between, one that could get a ``dispatch`` or ``send`` later, it is called).
    _base_dispatch_inline: ClassVar[bool] = False
    receive: Callable[..., Any]  # each shell's hooks, sync or async
    websocket_receive: Callable[..., Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        mro = cls.__mro__
        cls._base_dispatch_inline = mro[mro.index(WebsocketProtocol) + 1] is AsyncConsumer

    async def dispatch(self, message: Message) -> None:
        kind = message.get("type")
        if (
            kind == "websocket.receive"
            and (self._refused or self.max_frame_size is not None)
            and await self._drop_frame(message)
        ):
            return
        try:
            if kind == "websocket.connect":
                await self._join_groups()
            if not self._base_dispatch_inline or AsyncConsumer.dispatch is not _BASE_DISPATCH:
                await super().dispatch(message)
            elif (
                kind == "websocket.receive"
                and getattr(self.websocket_receive, "__func__", None) is _WEBSOCKET_RECEIVE
            ):
                # AsyncConsumer.dispatch (its ``with``, without two calls), websocket_receive
                timer = self._consumers_handling or metrics.handling(self)
                started = metrics.clock()
                try:
                    text = message.get("text")
                    if text is not None:
                        await self.receive(text_data=text)
                    else:
                        await self.receive(bytes_data=message.get("bytes"))
                except BaseException as error:
                    timer.ended(started, type(error))
                    raise
                if timer.job:
                    timer.ended(started)
                else:  # what ended() does then, without its call
                    timer.observe(metrics.clock() - started)
            else:  # AsyncConsumer.dispatch (its ``with``, without two calls)
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
        except StopConsumer:
            if kind == "websocket.disconnect":
                await self._leave_groups()
            raise
        except ClientGone:
            # Not an error: the client left while we were sending to it.
            await self._end(message, CLOSE_ABNORMAL)
        except Exception:
            logger.exception(
                "%s crashed handling %r on %s; closing the connection with 1011",
                type(self).__name__,
                kind,
                self.scope.get("path", "?"),
            )
            if kind != "websocket.disconnect":
                await self._close_anyway(close_message(CLOSE_INTERNAL_ERROR))
            await self._end(message, CLOSE_INTERNAL_ERROR)

    async def _drop_frame(self, message: Message) -> bool:
        """True for a frame not to handle: over ``max_frame_size`` (refused, closing with
        1009) or arriving after a refused one."""
        if self._refused:
            return True
        limit = self.max_frame_size
        if limit is None or not longer_than(message, limit):
            return False
        refusal = _rejected(self, CLOSE_TOO_BIG, f"frame over {limit} bytes")
        await self._close_anyway(close_message(*refusal))
        return True

    async def _close_anyway(self, close: Message) -> None:
        """Send a close the connection's end must not depend on: a server that refuses it
        (or a client already gone) is logged in one line, never raised."""
        try:
            await self._asgi_send(close)
        except OSError:
            pass
        except Exception as error:
            logger.warning(
                "The server refused to close %s with %s: %r",
                self.scope.get("path", "?"),
                close.get("code"),
                error,
            )

    async def _end(self, message: Message, code: int) -> None:
        """Run the usual disconnect path (unless this was it), leave the groups, stop."""
        if message.get("type") != "websocket.disconnect":
            try:
                await super().dispatch({"type": "websocket.disconnect", "code": code})
            except (StopConsumer, ClientGone):
                pass
            except Exception:
                logger.exception("%s.disconnect() failed", type(self).__name__)
        await self._leave_groups()
        raise StopConsumer

    async def _join_groups(self) -> None:
        if not self.groups:
            return
        layer = self.channel_layer
        if layer is None or "groups" not in getattr(layer, "extensions", ()):
            raise InvalidChannelLayerError(
                f"{type(self).__name__}.groups needs a channel layer with groups; "
                f"CHANNEL_LAYERS[{self.channel_layer_alias!r}] is missing or has no groups"
            )
        assert self.channel_name is not None  # noqa: S101  for mypy: a layer gives a channel
        for group in self.groups:
            await layer.group_add(group, self.channel_name)

    async def _leave_groups(self) -> None:
        if self.groups and self.channel_layer is not None and self.channel_name is not None:
            for group in self.groups:
                await self.channel_layer.group_discard(group, self.channel_name)

    @staticmethod
    def _connect_outcome(error: Exception) -> Message:
        if isinstance(error, DenyConnection):
            metrics.refusing("auth")
        return accept_message() if isinstance(error, AcceptConnection) else close_message()


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


_WEBSOCKET_RECEIVE = AsyncWebsocketConsumer.websocket_receive
_SEND = AsyncWebsocketConsumer.send
_DECODE_JSON = vars(AsyncJsonWebsocketConsumer)["decode_json"].__func__
_ENCODE_JSON = vars(AsyncJsonWebsocketConsumer)["encode_json"].__func__

NOT_JSON_TEXT = "binary frame where JSON text was expected"


def _rejected(consumer: WebsocketProtocol, code: int, reason: str) -> tuple[int, str]:
    """Log a client frame the consumer refuses, once, and give the close code and reason;
    what the client sends until the close lands is dropped."""
    consumer._refused = True
    logger.warning(
        "Closing WebSocket %s with %s: %s (%s)",
        consumer.scope.get("path", "?"),
        code,
        reason,
        type(consumer).__name__,
    )
    return code, reason


__all__ = [
    "MAX_JSON_DEPTH",
    "AsyncJsonWebsocketConsumer",
    "AsyncWebsocketConsumer",
    "JsonWebsocketConsumer",
    "WebsocketConsumer",
]
