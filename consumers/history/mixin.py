"""Joining a history group from a position: the missed messages in order, then live ones,
each exactly once.

The order of work is what makes it exact: subscribe first (``group_add``), then read the
history after the position, in batches, delivering each message to its handler; live
messages that arrive meanwhile wait in the consumer's channel (a consumer handles one
message at a time) and are dropped when their offset was delivered already. Afterwards a
live message that skips offsets (its channel was full, so the layer skipped it, or the
subscription was down for a moment) fills the gap from the history before it is handled;
one from another epoch means the group's history was lost. Either failure is told to the
consumer (``recovery_failed``), which reloads its state another way and stays subscribed.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from asgiref.sync import async_to_sync

from channels_layer.history import HistoryLost, Position
from consumers.exceptions import InvalidChannelLayerError
from consumers.history.reads import read_history
from consumers.types import Message

logger = logging.getLogger("consumers.history")

# Where the layer puts a history group's message position: {"group", "epoch", "offset"}.
POSITION = "__position__"
# A failure found while handling live messages reaches the hook as a message of this type,
# so it is handled in turn, like any message, and a crash in the hook closes with 1011.
RECOVERY_FAILED = "history.recovery_failed"


def position_of(message: Message) -> tuple[str, Position] | None:
    """The group and position a history group's message carries; None for other messages."""
    carried = message.get(POSITION)
    if not isinstance(carried, dict):
        return None
    return carried["group"], Position(carried["epoch"], carried["offset"])


@dataclass
class Cursor:
    """The last message of one group delivered to this consumer."""

    epoch: str
    offset: int

    @property
    def position(self) -> Position:
        return Position(self.epoch, self.offset)

    def move(self, position: Position) -> None:
        self.epoch, self.offset = position.epoch, position.offset


def _offset(message: Message) -> int:
    return int(message[POSITION]["offset"])


class _History:
    """What the async and sync mixins share: cursors, batches, the live path."""

    #: Messages read from the history per round trip to the layer.
    history_batch: ClassVar[int] = 100
    _history_cursors: dict[str, Cursor] | None = None

    def history_position(self, group: str) -> Position | None:
        """The position of the last message of ``group`` handled (None: not joined)."""
        cursor = (self._history_cursors or {}).get(group)
        return None if cursor is None else cursor.position

    async def _start_join(
        self, group: str, since: Position | None
    ) -> tuple[Cursor | None, float, Position | None]:
        """Subscribe, then place the cursor: at ``since``, or at the group's current
        position (what was sent before it is not this consumer's). No cursor for a group
        without history: it is joined live, as a plain ``group_add`` would."""
        layer = self.channel_layer  # type: ignore[attr-defined]
        if layer is None:
            alias = getattr(self, "channel_layer_alias", "default")
            raise InvalidChannelLayerError(
                f"{type(self).__name__} joins groups: CHANNEL_LAYERS[{alias!r}] is missing"
            )
        await layer.group_add(group, self.channel_name)  # type: ignore[attr-defined]
        subscribed = asyncio.get_running_loop().time()
        groups = self.groups  # type: ignore[has-type]
        if group not in groups:  # left with the others when the consumer ends
            self.groups = [*groups, group]
        if "history" not in getattr(layer, "extensions", ()):
            _tell_no_history(layer, group, "its channel layer keeps no history")
            return None, subscribed, None
        try:
            current = await layer.group_position(group)
        except ValueError:
            _tell_no_history(layer, group, "no pattern of the layer's 'history' config matches it")
            return None, subscribed, None
        # Another epoch, or an offset not reached yet (a forged or confused client), cannot
        # be resumed from: the cursor starts at the current position instead.
        stale = since is not None and (
            since.epoch != current.epoch or since.offset > current.offset
        )
        start = current if since is None or stale else since
        cursor = Cursor(start.epoch, start.offset)
        if self._history_cursors is None:
            self._history_cursors = {}
        self._history_cursors[group] = cursor
        return cursor, subscribed, current if stale else None

    async def _batch(
        self, group: str, cursor: Cursor, subscribed: float, until: int | None = None
    ) -> tuple[list[Message], bool]:
        """The next messages after the cursor (before offset ``until``), and whether they
        are the last ones; ``HistoryLost`` if they are no longer kept."""
        limit = self.history_batch
        layer = self.channel_layer  # type: ignore[attr-defined]
        messages = await read_history(layer, group, cursor.position, limit, subscribed)
        fresh = [m for m in messages if cursor.offset < _offset(m)]
        if until is not None:
            fresh = [m for m in fresh if _offset(m) < until]
        done = len(messages) < limit or (until is not None and _offset(messages[-1]) >= until - 1)
        return fresh, done

    async def dispatch(self, message: Message) -> None:
        cursors, carried = self._history_cursors, message.get(POSITION)
        cursor = (
            cursors.get(carried.get("group", "")) if cursors and isinstance(carried, dict) else None
        )
        if cursor is None or not isinstance(carried, dict):  # (the second for mypy)
            return await super().dispatch(message)  # type: ignore[misc]
        group, epoch, offset = carried["group"], carried["epoch"], int(carried["offset"])
        if epoch != cursor.epoch:
            # The group's history was lost (Redis restarted empty): what came before this
            # message in either epoch is gone for this consumer.
            await self._recovery_failed_in_turn(group, cursor, Position(epoch, offset - 1))
        elif offset <= cursor.offset:
            return  # delivered already, from the history
        elif offset > cursor.offset + 1:
            await self._fill_gap(group, cursor, offset)
            if cursor.epoch != epoch or offset <= cursor.offset:
                return  # the reload that the failure asked for covers it
        cursor.offset = offset
        await super().dispatch(message)  # type: ignore[misc]

    async def _fill_gap(self, group: str, cursor: Cursor, until: int) -> None:
        """Deliver the messages between the cursor and offset ``until`` from the history."""
        asked = asyncio.get_running_loop().time()  # after every message before ``until``
        done = False
        while not done:
            try:
                batch, done = await self._batch(group, cursor, asked, until)
            except HistoryLost as lost:
                return await self._recovery_failed_in_turn(group, cursor, lost.current)
            except Exception as error:  # an outage: those messages cannot be had now
                logger.warning("Could not read the history of %s to fill a gap: %r", group, error)
                missing = Position(cursor.epoch, until - 1)
                return await self._recovery_failed_in_turn(group, cursor, missing)
            for missed in batch:
                cursor.offset = _offset(missed)
                await super().dispatch(missed)  # type: ignore[misc]

    async def _recovery_failed_in_turn(self, group: str, cursor: Cursor, current: Position) -> None:
        cursor.move(current)
        failure = {"type": RECOVERY_FAILED, "group": group, **_fields(current)}
        await super().dispatch(failure)  # type: ignore[misc]


def _fields(position: Position) -> dict[str, Any]:
    return {"epoch": position.epoch, "offset": position.offset}


_told: set[tuple[int, str]] = set()


def _tell_no_history(layer: Any, group: str, why: str) -> None:
    """Once per layer and group: a deployment may run without history (recovery then
    always fails over to the application's reload), or its config forgot the pattern."""
    if (id(layer), group) not in _told:
        _told.add((id(layer), group))
        logger.info("%s has no history (%s): joined live, nothing to recover", group, why)


class HistoryMixin(_History):
    """For async consumers: ``await self.history_join(group, since)`` in ``connect()`` (or
    any handler) delivers what was sent after ``since`` to the handlers, in order, then the
    live messages; ``recovered`` or ``recovery_failed`` says how it went."""

    async def history_join(self, group: str, since: Position | None = None) -> Position | None:
        """Join ``group`` from ``since`` (None: from now); the position after which live
        messages follow (None: the group keeps no history). Subscribed live in every case."""
        cursor, subscribed, stale = await self._start_join(group, since)
        if cursor is None or since is None:
            position = None if cursor is None else cursor.position
            await self.joined(group, position)
            return position
        if stale is not None:
            await self.recovery_failed(group, stale)
            return stale
        count = 0
        try:
            done = False
            while not done:
                batch, done = await self._batch(group, cursor, subscribed)
                for missed in batch:
                    cursor.offset = _offset(missed)
                    await self._handler(missed)(missed)  # type: ignore[attr-defined]
                    count += 1
        except HistoryLost as lost:
            cursor.move(lost.current)
            await self.recovery_failed(group, lost.current)
        else:
            await self.recovered(group, count)
        return cursor.position

    async def joined(self, group: str, position: Position | None) -> None:
        """Joined ``group`` from now (no position to recover from, or no history: then
        ``position`` is None); override to tell the client where it starts."""

    async def recovered(self, group: str, count: int) -> None:
        """The ``count`` messages missed in ``group`` were delivered; live ones follow."""

    async def recovery_failed(self, group: str, current: Position) -> None:
        """What was missed in ``group`` is no longer kept (or the epoch changed): reload
        the state another way; the messages after ``current`` follow live."""

    async def history_recovery_failed(self, event: Message) -> None:
        await self.recovery_failed(event["group"], Position(event["epoch"], event["offset"]))


class SyncHistoryMixin(_History):
    """The same for sync consumers: ``self.history_join(group, since)`` from a handler, and
    plain hook methods; the missed messages are handled in the calling handler's thread."""

    def history_join(self, group: str, since: Position | None = None) -> Position | None:
        cursor, subscribed, stale = async_to_sync(self._start_join)(group, since)
        if cursor is None or since is None:
            position = None if cursor is None else cursor.position
            self.joined(group, position)
            return position
        if stale is not None:
            self.recovery_failed(group, stale)
            return stale
        count = 0
        try:
            done = False
            while not done:
                batch, done = async_to_sync(self._batch)(group, cursor, subscribed)
                for missed in batch:
                    cursor.offset = _offset(missed)
                    self._handler(missed)(missed)  # type: ignore[attr-defined]
                    count += 1
        except HistoryLost as lost:
            cursor.move(lost.current)
            self.recovery_failed(group, lost.current)
        else:
            self.recovered(group, count)
        return cursor.position

    def joined(self, group: str, position: Position | None) -> None:
        """See ``HistoryMixin.joined``."""

    def recovered(self, group: str, count: int) -> None:
        """See ``HistoryMixin.recovered``."""

    def recovery_failed(self, group: str, current: Position) -> None:
        """See ``HistoryMixin.recovery_failed``."""

    def history_recovery_failed(self, event: Message) -> None:
        self.recovery_failed(event["group"], Position(event["epoch"], event["offset"]))
