"""The recovery protocol spoken by ``consumers/static/consumers/socket.js``, for JSON
WebSocket consumers (README: "The recovery protocol").

- The client asks for recovery in the handshake: ``?recover=<JSON>``, an object of
  ``{group: {"epoch": str, "offset": int}}``. The handshake is the only moment a browser can
  say it before the server subscribes and sends anything; a frame would come a round trip
  later, after live messages. Positions for groups the consumer does not join are ignored,
  so a client never chooses its groups; a malformed value is logged once and treated as
  no positions (the client then hears ``joined``, not ``recovered``, and reloads).
- The server answers each ``history_join`` with one frame: ``consumers.joined`` (no
  position asked), ``consumers.recovered`` (after the missed messages, with their count)
  or ``consumers.recovery_failed``; each carries the ``position`` live messages follow.
- Frames forwarded from a history group's messages keep the layer's ``__position__`` key
  (``{"group", "epoch", "offset"}``): a handler that sends ``{**event, ...}`` passes it
  on; the client remembers the last one per group and drops what it saw already.
- With ``ping_interval`` set, the server sends ``{"type": "consumers.ping", "interval":
  s}`` every ``s`` seconds and the client answers ``{"type": "consumers.pong"}`` (which
  never reaches ``receive_json``): proxies keep the socket, and a client that hears nothing
  for two intervals knows the server is gone even when no close arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
from typing import Any, ClassVar
from urllib.parse import parse_qs

from asgiref.sync import async_to_sync

from channels_layer.history import Position
from consumers.exceptions import ClientGone
from consumers.generic.jsonframes import parse_json
from consumers.history.mixin import HistoryMixin, SyncHistoryMixin, _fields
from consumers.types import Message, Scope

logger = logging.getLogger("consumers.history")

RECOVER = "recover"  # the query parameter
MAX_RECOVER_CHARS = 4096
MAX_RECOVER_GROUPS = 32
MAX_EPOCH_CHARS = 64
JOINED, RECOVERED, FAILED = "consumers.joined", "consumers.recovered", "consumers.recovery_failed"
PING = "consumers.ping"
# The client's answer, compared as text so that it costs no decoding.
PONG = json.dumps({"type": "consumers.pong"}, separators=(",", ":"))


def requested_positions(scope: Scope) -> dict[str, Position]:
    """The positions the client asked to recover from; ``ValueError`` saying what is wrong
    with a malformed request."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    values = query.get(RECOVER)
    if not values:
        return {}
    text = values[-1]
    if len(text) > MAX_RECOVER_CHARS:
        raise ValueError(f"{RECOVER!r} is over {MAX_RECOVER_CHARS} characters")
    asked = parse_json(text)
    if not isinstance(asked, dict) or len(asked) > MAX_RECOVER_GROUPS:
        raise ValueError(f"{RECOVER!r} must be an object of at most {MAX_RECOVER_GROUPS} groups")
    positions = {}
    for group, position in asked.items():
        epoch = position.get("epoch") if isinstance(position, dict) else None
        offset = position.get("offset") if isinstance(position, dict) else None
        if not isinstance(epoch, str) or not 0 < len(epoch) <= MAX_EPOCH_CHARS:
            raise ValueError(f"{RECOVER!r}: the epoch of {group!r} must be a short string")
        if type(offset) is not int or offset < 0:
            raise ValueError(f"{RECOVER!r}: the offset of {group!r} must be an integer >= 0")
        positions[group] = Position(epoch, offset)
    return positions


class _Protocol:
    """The handshake's positions and the pings, for both variants."""

    #: Seconds between application pings (None: no pings).
    ping_interval: ClassVar[float | None] = None
    _client_positions: dict[str, Position] | None = None
    _ping: asyncio.TimerHandle | None = None
    _pinging: asyncio.Task[None] | None = None  # held: the loop keeps only weak references

    def client_position(self, group: str) -> Position | None:
        """Where the client asked to resume ``group`` from (None: it did not ask)."""
        if self._client_positions is None:
            scope = self.scope  # type: ignore[attr-defined]
            try:
                self._client_positions = requested_positions(scope)
            except (ValueError, RecursionError) as error:
                logger.warning("Recovery request refused on %s: %s", scope.get("path"), error)
                self._client_positions = {}
        return self._client_positions.get(group)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)  # type: ignore[misc]
        finally:
            if self._ping is not None:
                self._ping.cancel()

    def _keep_pinging(self) -> None:
        if self.ping_interval and self._ping is None:
            loop = asyncio.get_running_loop()
            self._ping = loop.call_later(self.ping_interval, self._ping_now)

    def _ping_now(self) -> None:
        self._ping = None
        self._pinging = asyncio.get_running_loop().create_task(self._send_ping())
        self._keep_pinging()

    async def _send_ping(self) -> None:
        frame = {"type": PING, "interval": self.ping_interval}
        with contextlib.suppress(ClientGone, OSError):  # the disconnect ends the pings
            # The async consumers' send_json is a coroutine; the sync consumers' queues
            # the frame, which is safe from the loop.
            sent = self.send_json(frame)  # type: ignore[attr-defined]
            if inspect.isawaitable(sent):
                await sent


def _frame(kind: str, group: str, position: Position | None, **extra: Any) -> Message:
    return {"type": kind, "group": group, "position": position and _fields(position), **extra}


class ResumableJsonMixin(_Protocol, HistoryMixin):
    """For ``AsyncJsonWebsocketConsumer``: ``await self.history_join(group,
    self.client_position(group))`` resumes where the client left off; the hooks tell the
    client (call ``super()`` when overriding them)."""

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data != PONG:
            await super().receive(text_data, bytes_data)  # type: ignore[misc]

    async def joined(self, group: str, position: Position | None) -> None:
        await self.send_json(_frame(JOINED, group, position))  # type: ignore[attr-defined]
        self._keep_pinging()

    async def recovered(self, group: str, count: int) -> None:
        frame = _frame(RECOVERED, group, self.history_position(group), count=count)
        await self.send_json(frame)  # type: ignore[attr-defined]
        self._keep_pinging()

    async def recovery_failed(self, group: str, current: Position) -> None:
        await self.send_json(_frame(FAILED, group, current))  # type: ignore[attr-defined]
        self._keep_pinging()


class SyncResumableJsonMixin(_Protocol, SyncHistoryMixin):
    """The same for ``JsonWebsocketConsumer``."""

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data != PONG:
            super().receive(text_data, bytes_data)  # type: ignore[misc]

    def joined(self, group: str, position: Position | None) -> None:
        self.send_json(_frame(JOINED, group, position))  # type: ignore[attr-defined]
        async_to_loop(self._keep_pinging)

    def recovered(self, group: str, count: int) -> None:
        frame = _frame(RECOVERED, group, self.history_position(group), count=count)
        self.send_json(frame)  # type: ignore[attr-defined]
        async_to_loop(self._keep_pinging)

    def recovery_failed(self, group: str, current: Position) -> None:
        self.send_json(_frame(FAILED, group, current))  # type: ignore[attr-defined]
        async_to_loop(self._keep_pinging)


def async_to_loop(function: Any) -> None:
    """Run ``function()`` on the event loop of the calling handler's consumer."""

    async def run() -> None:
        function()

    async_to_sync(run)()
