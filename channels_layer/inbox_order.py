"""Keeps a direct message and a later broadcast to the same channel in the order they were sent.

The Redis layer delivers them by two roads: a ``send()`` to a consumer channel is queued in
its process's inbox (a Redis list, drained by one reader), a ``group_send()`` is one
PUBLISH read by the process's pub/sub reader. Redis runs the sender's RPUSH before its
PUBLISH, but the two replies reach the receiving process on different connections, so
the broadcast could overtake the message.

So every inbox entry carries a sequence number, taken in Redis when it is queued (the
server's clock in microseconds, or one more than the last if the clock has not moved on,
so it only grows even after the inbox expires or is flushed). Before the pub/sub reader
hands a batch of broadcasts to consumers, it reads the inbox's latest sequence number
(one round trip, made after the broadcasts arrived, so after their senders' earlier
sends) and waits until the inbox reader has delivered up to it. Causality holds across
Redis hosts too: the sender's send had completed before it published.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

# Entries are the sequence number in this many decimal digits, then the envelope.
SEQ_DIGITS = 17
SEQ_FIELD = "#seq"  # in the process's pending-count hash; "#" is in no channel name

# Lua for the send script: the entry to RPUSH for envelope ``env`` in hash ``pending``.
NEXT_ENTRY_LUA = f"""
local function next_entry(pending, env)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local seq = math.max(tonumber(redis.call('HGET', pending, '{SEQ_FIELD}') or '0') + 1, now)
  local digits = string.format('%0{SEQ_DIGITS}.0f', seq)
  redis.call('HSET', pending, '{SEQ_FIELD}', digits)
  return digits .. env
end
"""


def split_entry(entry: bytes) -> tuple[int, bytes]:
    """``(sequence number, envelope)`` of an inbox entry; ``ValueError`` if malformed."""
    return int(entry[:SEQ_DIGITS]), entry[SEQ_DIGITS:]


class InboxProgress:
    """How far the inbox reader has delivered, and who waits for it to get further.
    Used on the home loop only."""

    def __init__(self) -> None:
        self.delivered = 0
        self._waiting: list[tuple[int, asyncio.Future[None]]] = []

    def advanced(self, seq: int) -> None:
        """Everything up to ``seq`` has been delivered."""
        self.delivered = max(self.delivered, seq)
        self._release(lambda wanted: wanted <= self.delivered)

    def drained(self) -> None:
        """The inbox was found empty: whatever was queued has been delivered (or lost
        with an expired or flushed inbox), so nobody needs to wait."""
        self._release(lambda wanted: True)

    async def reached(self, seq: int, timeout: float) -> None:
        """Return once everything up to ``seq`` was delivered, or after ``timeout``."""
        if seq <= self.delivered:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((seq, future))
        try:
            await asyncio.wait([future], timeout=timeout)
        finally:
            self._waiting = [(s, f) for s, f in self._waiting if f is not future]

    def _release(self, ready: Callable[[int], bool]) -> None:
        still = []
        for seq, future in self._waiting:
            if ready(seq):
                if not future.done():
                    future.set_result(None)
            else:
                still.append((seq, future))
        self._waiting = still
