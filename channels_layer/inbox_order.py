"""Keeps direct messages and broadcasts to a consumer channel in the order they were sent.

The Redis layer delivers them by two roads: a ``send()`` to a consumer channel is queued in
its process's inbox (a Redis list, drained by one reader), a ``group_send()`` is one
PUBLISH read by the process's pub/sub reader. Redis runs a sender's commands in order, but
the two kinds reach the receiving process on different connections, so either could
overtake the other.

So both carry a stamp taken in Redis: an inbox entry its sequence number (the server's
clock in microseconds, or one more than the last if the clock has not moved on, so it only
grows even after the inbox expires or is flushed), a broadcast the server's clock when
published. A batch of broadcasts is merged into the inbox's stream:

- The pub/sub reader holds each broadcast as it reads it, then reads the inbox's latest
  sequence number (one round trip per batch, made after the broadcasts arrived, so after
  whatever their senders had queued before publishing). A broadcast is held until the
  inbox reader has delivered up to that number, so it never overtakes an earlier direct
  message, across Redis hosts too.
- When the inbox and the group live on the same Redis (one clock), the inbox reader also
  delivers a held broadcast just before the first entry stamped after it, so a direct
  message sent after a broadcast does not overtake it once the broadcast has been read.
  That way round is not guaranteed: the entry can still be read first, when both reach
  the process in the same instant.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

# Stamps are this many decimal digits in front of the entry or broadcast.
SEQ_DIGITS = 17
SEQ_FIELD = "#seq"  # in the process's pending-count hash; "#" is in no channel name
# A broadcast is never held longer than this, whatever happens to the inbox reader.
HOLD_LIMIT = 2.0

# Lua for the scripts: ``stamp()`` is the server's clock, ``next_entry(pending, env)`` the
# inbox entry to RPUSH for envelope ``env``, its sequence number kept in hash ``pending``.
STAMP_LUA = f"""
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function stamp()
  return string.format('%0{SEQ_DIGITS}.0f', now_us())
end
local function next_entry(pending, env)
  local last = tonumber(redis.call('HGET', pending, '{SEQ_FIELD}') or '0')
  local digits = string.format('%0{SEQ_DIGITS}.0f', math.max(last + 1, now_us()))
  redis.call('HSET', pending, '{SEQ_FIELD}', digits)
  return digits .. env
end
"""


def split_stamp(data: bytes) -> tuple[int, bytes]:
    """``(stamp, rest)`` of a stamped entry or broadcast; ``ValueError`` if unstamped."""
    return int(data[:SEQ_DIGITS]), data[SEQ_DIGITS:]


class InboxProgress:
    """How far the inbox reader has delivered, and the broadcasts held until it gets far
    enough. Used on the home loop only."""

    def __init__(self) -> None:
        self.delivered = 0
        # [published stamp or None, inbox sequence to wait for, deliver, held since]
        self._held: deque[list[Any]] = deque()

    def hold(self, stamp: int | None, deliver: Callable[[], None]) -> list[Any]:
        """Hold a broadcast as soon as it is read (so no inbox entry stamped after it can
        overtake it) until ``settle()`` says how far the inbox must get first."""
        if not self._held:
            asyncio.get_running_loop().call_later(HOLD_LIMIT, self._release_stale)
        held = [stamp, math.inf, deliver, time.monotonic()]
        self._held.append(held)
        return held

    def settle(self, held: list[list[Any]], latest: int | None) -> None:
        """The inbox's latest sequence number, read after ``held`` arrived (None: empty);
        they go once the inbox reader has delivered up to it. Broadcasts keep their order
        among themselves."""
        for item in held:
            item[1] = latest or 0
        self._release(lambda stamp, latest: False)

    def before(self, seq: int) -> None:
        """The inbox reader is about to deliver entry ``seq``: first the broadcasts
        published before it, on the same clock."""
        self._release(lambda stamp, latest: stamp is not None and stamp < seq)

    def advanced(self, seq: int) -> None:
        """Everything up to ``seq`` has been delivered."""
        self.delivered = max(self.delivered, seq)
        if self._held:
            self._release(lambda stamp, latest: False)

    def drained(self) -> None:
        """The inbox was found empty: whatever was queued has been delivered (or lost
        with an expired or flushed inbox), so nothing needs to wait."""
        self._release(lambda stamp, latest: latest != math.inf)

    def _release_stale(self) -> None:
        limit = time.monotonic() - HOLD_LIMIT + 0.01
        self._release(lambda stamp, latest: True, held_before=limit)
        if self._held:
            asyncio.get_running_loop().call_later(HOLD_LIMIT, self._release_stale)

    def _release(
        self, ready: Callable[[int | None, float], bool], held_before: float | None = None
    ) -> None:
        while self._held:
            stamp, latest, deliver, since = self._held[0]
            if not (ready(stamp, latest) or self.delivered >= latest):
                return
            if held_before is not None and since > held_before:
                return
            self._held.popleft()
            deliver()
