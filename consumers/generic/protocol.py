"""``WebsocketProtocol``: the protocol logic the four WebSocket consumers of
``consumers.generic.websocket`` share, once: checking frames, joining and leaving
``groups``, a frame's way to its handler (timed, with the async defaults done in place), and
turning a crash in a handler into a 1011 close for that connection alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ClassVar

from consumers import metrics
from consumers.consumer import AsyncConsumer
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
    CLOSE_TOO_BIG,
    accept_message,
    close_message,
    longer_than,
)
from consumers.types import Message

logger = logging.getLogger("consumers.websocket")

# ``AsyncWebsocketConsumer.websocket_receive``, the default hook a frame's way runs in
# place: set by ``consumers.generic.websocket``, which defines it (on a subclass of this).
# Until then nothing is it (not even a hook without ``__func__``).
WEBSOCKET_RECEIVE: Callable[..., Any] = object.__new__


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
                and getattr(self.websocket_receive, "__func__", None) is WEBSOCKET_RECEIVE
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
