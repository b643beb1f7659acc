"""Group history on Redis: a stream per group, and the group's epoch and last offset.

A ``group_send`` to a group with history is one script (one round trip, batched with the
other sends of its loop turn by ``script_batcher``): it takes the next offset, adds the
framed message to the group's stream (``XADD``, bounded by ``MAXLEN ~ size``, and trimmed
by age), and publishes the very same bytes to the group's topic. Redis runs a script alone,
so the order members receive is the order of offsets, whichever processes sent.

The epoch is drawn by the script when the group's position key is missing: Redis restarted
empty, the key evicted or expired. It then deletes any stream left over, so the offsets of
an epoch always name the same messages. The stream expires ``ttl`` after the last send; the
position ``max(ttl, group_expiry)`` after it, so an idle group keeps its epoch. The keys of
a group carry a Redis Cluster hash tag (``{group}``) and live on the group's shard.

``read`` takes the history in batches (``XRANGE ... COUNT``), each checked for the epoch
and for gaps, so a trim or a restart while reading is a ``HistoryLost``, never a hole; and
concurrent reads of the same group after the same position in one process share one read,
so a thousand consumers of one process recovering together cost Redis one read.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import Callable
from typing import Any, NoReturn

from .base import Message
from .history import HistoryLost, HistoryRule, Position, Stamp, check_kept
from .redis_connections import RedisConnections
from .redis_envelopes import FRAME_LUA, read_broadcast
from .redis_groups import BROADCAST_LUA, RedisGroups

logger = logging.getLogger("channels_layer.redis")

# Entries a read takes from Redis at once.
READ_BATCH = 100
# Entries older than the ttl the send script looks through at most (the rest next time).
AGE_TRIM_BATCH = 100

# Lua's ``epoch_of(stream, meta, candidate, meta_ttl)``: the group's epoch, drawn now (the
# candidate) if the position hash is missing, in which case the stream goes too.
EPOCH_LUA = """
local function epoch_of(stream, meta, candidate, meta_ttl)
  local epoch = redis.call('HGET', meta, 'epoch')
  if not epoch then
    epoch = candidate
    redis.call('DEL', stream)
    redis.call('HSET', meta, 'epoch', epoch, 'offset', 0)
    redis.call('EXPIRE', meta, meta_ttl)
  end
  return epoch
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Store and broadcast. KEYS: direct members, topic, member processes, stream, position.
# ARGV groups: sent_at, payload, oldest live membership, pending prefix, size, ttl (ms),
# position ttl (s), epoch candidate. Result: {offset, epoch, direct members}.
HISTORY_SEND = (
    BROADCAST_LUA
    + FRAME_LUA
    + EPOCH_LUA
    + f"""
local function trim_by_age(stream, oldest_ms)
  local entries = redis.call('XRANGE', stream, '-', '+', 'COUNT', {AGE_TRIM_BATCH})
  for _, entry in ipairs(entries) do
    if tonumber(entry[2][2]) >= oldest_ms then
      redis.call('XTRIM', stream, 'MINID', entry[1])
      return
    end
  end
  if #entries > 0 then
    local last = entries[#entries][1]
    redis.call('XTRIM', stream, 'MINID', (tonumber(string.match(last, '^%d+')) + 1) .. '-0')
  end
end
local results = {{}}
for i = 1, #ARGV, 8 do
  local epoch = epoch_of(KEYS[4], KEYS[5], ARGV[i + 7], ARGV[i + 6])
  local offset = redis.call('HINCRBY', KEYS[5], 'offset', 1)
  local data = frame({{tonumber(ARGV[i]), offset, epoch}}, ARGV[i + 1])
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[i + 4], offset .. '-0', 't', now_ms, 'm', data)
  local oldest = redis.call('XRANGE', KEYS[4], '-', '+', 'COUNT', 1)[1]
  if tonumber(oldest[2][2]) < now_ms - tonumber(ARGV[i + 5]) then
    trim_by_age(KEYS[4], now_ms - tonumber(ARGV[i + 5]))
  end
  redis.call('PEXPIRE', KEYS[4], ARGV[i + 5])
  redis.call('EXPIRE', KEYS[5], ARGV[i + 6])
  local direct = broadcast(KEYS[1], KEYS[2], KEYS[3], data, ARGV[i + 2], ARGV[i + 3])
  results[#results + 1] = {{offset, epoch, direct}}
end
return results
"""
)

# Where a group stands. KEYS: stream, position. ARGV groups: epoch candidate, position ttl.
# Result: {epoch, last offset}.
HISTORY_POSITION = (
    EPOCH_LUA
    + """
local results = {}
for i = 1, #ARGV, 2 do
  local epoch = epoch_of(KEYS[1], KEYS[2], ARGV[i], ARGV[i + 1])
  results[#results + 1] = {epoch, tonumber(redis.call('HGET', KEYS[2], 'offset'))}
end
return results
"""
)

# A batch of the history. KEYS: stream, position. ARGV groups: after (offset), count, size,
# ttl (ms), epoch candidate, position ttl. Result: {epoch, last offset, {entries}}: the
# entries after ``after`` still within the size and ttl, oldest first.
HISTORY_READ = (
    EPOCH_LUA
    + """
local results = {}
for i = 1, #ARGV, 6 do
  local epoch = epoch_of(KEYS[1], KEYS[2], ARGV[i + 4], ARGV[i + 5])
  local last = tonumber(redis.call('HGET', KEYS[2], 'offset'))
  local from = math.max(tonumber(ARGV[i]) + 1, last - tonumber(ARGV[i + 2]) + 1)
  local kept = {}
  if tonumber(ARGV[i]) < last then
    local oldest_ms = now_ms - tonumber(ARGV[i + 3])
    local entries = redis.call('XRANGE', KEYS[1], from .. '-0', '+', 'COUNT', ARGV[i + 1])
    for _, entry in ipairs(entries) do
      if tonumber(entry[2][2]) >= oldest_ms then
        kept[#kept + 1] = entry[2][4]
      end
    end
  end
  results[#results + 1] = {epoch, last, kept}
end
return results
"""
)

HISTORY_SCRIPTS = {
    "history_send": HISTORY_SEND,
    "history_position": HISTORY_POSITION,
    "history_read": HISTORY_READ,
}

# A history entry as read: (offset, payload decrypted).
Entry = tuple[int, bytes]


class RedisHistory:
    """The history of this layer's groups in Redis. Every method runs on the home loop."""

    def __init__(
        self,
        connections: RedisConnections,
        key: Callable[[str, str], str],
        groups: RedisGroups,
        serialize: Callable[[Message], bytes],
        unseal: Callable[[bytes], bytes],
        decode: Callable[[bytes], Message],
    ) -> None:
        self.connections = connections
        self.key = key
        self.groups = groups
        self.serialize = serialize
        self.unseal = unseal  # decryption: once per read, whoever shares it
        self.decode_unsealed = decode  # once per caller, so each has its own copies
        # (group, since, limit) -> the read in flight that callers of the same share.
        self._reads: dict[tuple[str, Position, int | None], asyncio.Future[list[Entry]]] = {}

    async def send(
        self, group: str, rule: HistoryRule, message: Message, payload: bytes
    ) -> Position:
        """Store and broadcast ``payload``, the encoded ``message``; its position."""
        keys = [*self.groups.broadcast_keys(group), *self._keys(group)]
        args = [
            time.time(),
            payload,
            *self.groups.broadcast_args(),
            rule.size,
            _ms(rule.ttl),
            self._position_ttl(rule),
            secrets.token_hex(8),
        ]
        offset, epoch, direct = await self._script(group, "history_send", keys, args)
        position = Position(_text(epoch), int(offset))
        if direct:  # channels added by name: the position goes inside the message
            stamped = Stamp(group, position.epoch, position.offset).add_to(dict(message))
            await self.groups.send_directly(group, direct, self.serialize(stamped))
        return position

    async def position(self, group: str, rule: HistoryRule) -> Position:
        args = [secrets.token_hex(8), self._position_ttl(rule)]
        epoch, offset = await self._script(group, "history_position", self._keys(group), args)
        return Position(_text(epoch), int(offset))

    async def read(
        self, group: str, rule: HistoryRule, since: Position, limit: int | None
    ) -> list[Entry]:
        """The entries after ``since`` (at most ``limit``); ``HistoryLost`` if some are gone.
        Callers asking the same before the read goes to Redis share it; a caller after
        that gets a read of its own, which sees whatever was sent before it asked (so
        "group_add, then group_history, then live" leaves no gap)."""
        flight_key = (group, since, limit)
        flight = self._reads.get(flight_key)
        if flight is None:
            flight = asyncio.ensure_future(self._read(flight_key, rule))
            self._reads[flight_key] = flight
            flight.add_done_callback(lambda done: self._landed(flight_key, done))
        try:
            return await asyncio.shield(flight)
        except HistoryLost as lost:  # each caller its own exception (tracebacks differ)
            raise HistoryLost(lost.group, lost.since, lost.current, lost.reason) from None

    def decode(self, group: str, since: Position, entries: list[Entry]) -> list[Message]:
        """The messages of ``entries`` (from ``read``), each with its ``__position__``."""
        messages = []
        for offset, payload in entries:
            try:
                message = self.decode_unsealed(payload)
            except ValueError as error:
                _unreadable(group, since, Position(since.epoch, entries[-1][0]), offset, error)
            messages.append(Stamp(group, since.epoch, offset).add_to(message))
        return messages

    def _landed(self, flight_key: Any, flight: asyncio.Future[list[Entry]]) -> None:
        if self._reads.get(flight_key) is flight:  # cancelled before it started
            del self._reads[flight_key]
        if not flight.cancelled():
            flight.exception()  # retrieved, even if every caller had gone

    async def _read(
        self, flight_key: tuple[str, Position, int | None], rule: HistoryRule
    ) -> list[Entry]:
        del self._reads[flight_key]  # closed to later callers: see read()
        group, since, limit = flight_key
        entries: list[Entry] = []
        after, end = since.offset, math.inf
        while after < end and (limit is None or len(entries) < limit):
            count = READ_BATCH if limit is None else min(READ_BATCH, limit - len(entries))
            args = [after, count, rule.size, _ms(rule.ttl), secrets.token_hex(8)]
            args.append(self._position_ttl(rule))
            epoch, last, kept = await self._script(group, "history_read", self._keys(group), args)
            batch = [_entry(data) for data in kept]
            current = Position(_text(epoch), int(last))
            check_kept(group, since, current, batch[0][0] if batch else None, after)
            if end == math.inf:
                end = current.offset  # later messages come live
            for offset, payload in batch:  # consecutive offsets, from after + 1
                if offset > end:
                    break
                try:
                    entries.append((offset, self.unseal(payload)))
                except ValueError as error:
                    _unreadable(group, since, current, offset, error)
                after = offset
        return entries[:limit]

    def _keys(self, group: str) -> list[str]:
        """The group's stream and position hash, with a Cluster hash tag."""
        return [self.key("history", group), self.key("position", group)]

    def _position_ttl(self, rule: HistoryRule) -> int:
        return math.ceil(max(rule.ttl, self.groups.group_expiry)) + 1

    async def _script(self, group: str, name: str, keys: list[str], args: list[Any]) -> Any:
        return await self.connections.script(self.connections.ring.shard(group), name, keys, args)


def _unreadable(
    group: str, since: Position, current: Position, offset: int, error: ValueError
) -> NoReturn:
    """An entry that cannot be read is a gap the consumer must hear of, not skip."""
    logger.error("Unreadable history entry %d of group %r: %s", offset, group, error)
    raise HistoryLost(group, since, current, f"entry {offset} is unreadable") from None


def _entry(data: bytes) -> Entry:
    _, payload, position = read_broadcast(data)
    if position is None:
        raise ValueError("a history entry without its position")
    return position[0], payload


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
