"""Keeps direct messages and broadcasts to a consumer channel in the order they were sent.

The Redis layer delivers them by two roads: a ``send()`` to a consumer channel is queued in
its process's inbox (a Redis list, drained by one reader), a ``group_send()`` is one
PUBLISH read by the process's pub/sub reader. Redis runs a sender's commands in order, but
the two kinds reach the receiving process on different connections, so either could
overtake the other.

So every inbox entry carries a sequence number, taken in Redis as it is queued (the
server's clock in microseconds, or one more than the last, so it only grows, even after the
inbox expires or is flushed), and a broadcast carries, for each process with members in
the group, the latest sequence number of its inbox when it was published ("marks"; each
process registers in the group's ``procs`` set). The receiving process holds a broadcast
until its inbox reader has delivered up to its mark, and delivers it just before the first
entry numbered after the mark: both ways round, a direct message and a broadcast arrive in
the order they were sent, with no extra round trip.

When the group and the inbox live on different Redis servers, the script cannot read the
inbox's number: the pub/sub reader reads it itself (one round trip per batch, made after
the broadcasts arrived, so after whatever their senders had queued before publishing).
A broadcast then never overtakes an earlier direct message, but a direct message sent after
it may arrive first. On a Redis Cluster the group's slot never holds the inboxes (a script
may touch only its own slot), so the layer passes no pending prefix and the same holds.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import msgpack

SEQ_DIGITS = 17  # an inbox entry starts with its sequence number in this many digits
# The scripts write it as two integer conversions of at most 9 digits ('numbered'): Lua's
# '%d' casts to a C long, 32 bits on i386, armhf and Windows builds of Redis, too few for
# a clock in microseconds; '%.0f' is the C library's slower float printing. The division
# by 1e8 is exact enough for every whole number below 2^53.
SEQ_FIELD = "#seq"  # in the process's pending-count hash; "#" is in no channel name
MARKS_LENGTH_DIGITS = 8  # a broadcast starts with the length of its packed marks
# A broadcast is never held longer than this, whatever happens to the inbox reader.
HOLD_LIMIT = 2.0

# Lua for the scripts, which run once per batch of calls with the same keys (see
# script_batcher): ``marks(procs, pending_prefix)`` is what goes in front of a broadcast
# (none for a prefix of ''). Redis runs a script alone, so one set of marks serves the
# whole batch.
SEQUENCE_LUA = f"""
local packed_marks = nil
local function marks(procs, pending_prefix)
  if packed_marks == nil then
    local found = {{}}
    if pending_prefix ~= '' then
      for _, proc in ipairs(redis.call('ZRANGE', procs, 0, -1)) do
        found[proc] = redis.call('HGET', pending_prefix .. proc, '{SEQ_FIELD}') or '0'
      end
    end
    local packed = cmsgpack.pack(found)
    packed_marks = string.format('%0{MARKS_LENGTH_DIGITS}d', #packed) .. packed
  end
  return packed_marks
end
"""


# How often, at most, a send refreshes the expiry of the inbox and of its pending hash
# (see ``QUEUE_LUA``): the keys are given this much more time to live in return.
REFRESH_SECONDS = 1.0
REFRESH_FIELD = "#exp"  # in the pending hash: until when (Redis's clock, us) both keys live

# Lua's ``queue(inbox, pending, envs, ttl_ms)``: RPUSH the envelopes ``envs`` onto list
# ``inbox`` as entries numbered as above, keep the last number in hash ``pending``, and
# return the first number given. One script call queues a whole batch: one clock reading,
# one HMGET, one RPUSH and one HSET, whatever its size. Both keys share one deadline, kept
# in the hash: a send moves it to ``ttl_ms`` from now only when that is at least
# ``REFRESH_SECONDS`` later (so a busy inbox is refreshed about once a second, and a
# sender with a shorter expiry never shortens another's), and an inbox this RPUSH made
# anew (a drained list is gone from Redis) gets the same deadline. So after any send both
# keys live at least ``ttl_ms`` minus the interval, and expire together.
QUEUE_LUA = f"""
local function numbered(n)
  local high = math.floor(n / 1e8)
  return string.format('%0{SEQ_DIGITS - 8}d%08d', high, n - high * 1e8)
end
local function queue(inbox, pending, envs, ttl)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local saved = redis.call('HMGET', pending, '{SEQ_FIELD}', '{REFRESH_FIELD}')
  local seq = math.max(tonumber(saved[1] or '0'), now - 1)
  local first = seq + 1
  for j = 1, #envs do
    seq = seq + 1
    envs[j] = numbered(seq) .. envs[j]
  end
  local length = redis.call('RPUSH', inbox, unpack(envs))
  local until_now = tonumber(saved[2] or '0')
  local deadline = now + tonumber(ttl) * 1000
  local last = numbered(seq)
  if deadline - until_now >= {int(REFRESH_SECONDS * 1_000_000)} then
    redis.call('PEXPIRE', inbox, ttl)
    redis.call('PEXPIRE', pending, ttl)
    local stamp = string.format('%.0f', deadline)
    redis.call('HSET', pending, '{SEQ_FIELD}', last, '{REFRESH_FIELD}', stamp)
  else
    if length == #envs then
      redis.call('PEXPIRE', inbox, math.max(1, math.floor((until_now - now) / 1000)))
    end
    redis.call('HSET', pending, '{SEQ_FIELD}', last)
  end
  return first
end
"""


def split_entry(entry: bytes) -> tuple[int, bytes]:
    """``(sequence number, envelope)`` of an inbox entry; ``ValueError`` if malformed."""
    return int(entry[:SEQ_DIGITS]), entry[SEQ_DIGITS:]


def split_marks(data: bytes) -> tuple[dict[str, int], bytes]:
    """``({process: inbox mark}, envelope)`` of a broadcast; ``ValueError`` if unmarked."""
    length = int(data[:MARKS_LENGTH_DIGITS])
    end = MARKS_LENGTH_DIGITS + length
    found = msgpack.unpackb(data[MARKS_LENGTH_DIGITS:end], raw=False)
    if not isinstance(found, dict):  # an empty Lua table packs as an array
        found = {}
    return {str(proc): int(seq) for proc, seq in found.items()}, data[end:]


class InboxProgress:
    """How far the inbox reader has delivered, and the broadcasts held until it gets far
    enough. Used on the home loop only."""

    def __init__(self) -> None:
        self.delivered = 0
        # [inbox number to wait for (inf: not known yet), deliver, held since]
        self._held: deque[list[Any]] = deque()

    def hold(self, mark: int | None, deliver: Callable[[], None]) -> list[Any]:
        """Deliver a broadcast once the inbox has delivered up to ``mark`` (None: not
        known yet, see ``settle``). Broadcasts keep their order among themselves."""
        if not self._held:
            if mark is not None and mark <= self.delivered:
                deliver()  # the usual case: nothing to wait for
                return [mark, deliver, 0.0]
            asyncio.get_running_loop().call_later(HOLD_LIMIT, self._release_stale)
        held = [math.inf if mark is None else mark, deliver, time.monotonic()]
        self._held.append(held)
        self._release(lambda mark: False)
        return held

    def settle(self, held: list[list[Any]], latest: int | None) -> None:
        """The inbox's latest number, read after ``held`` arrived (None: nothing queued)."""
        for item in held:
            item[0] = latest or 0
        self._release(lambda mark: False)

    def before(self, seq: int) -> None:
        """The inbox reader is about to deliver entry ``seq``: first the broadcasts
        published before it was queued."""
        if self._held:
            self._release(lambda mark: mark < seq)

    def advanced(self, seq: int) -> None:
        """Everything up to ``seq`` has been delivered."""
        self.delivered = max(self.delivered, seq)
        if self._held:
            self._release(lambda mark: False)

    def drained(self) -> None:
        """The inbox was found empty: whatever was queued before has been delivered (or
        lost with an expired or flushed inbox), so nothing needs to wait."""
        self._release(lambda mark: mark != math.inf)

    def _release_stale(self) -> None:
        limit = time.monotonic() - HOLD_LIMIT + 0.01
        self._release(lambda mark: True, held_before=limit)
        if self._held:
            asyncio.get_running_loop().call_later(HOLD_LIMIT, self._release_stale)

    def _release(self, ready: Callable[[float], bool], held_before: float | None = None) -> None:
        while self._held:
            mark, deliver, since = self._held[0]
            if not (ready(mark) or self.delivered >= mark):
                return
            if held_before is not None and since > held_before:
                return
            self._held.popleft()
            deliver()
