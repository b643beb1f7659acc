"""What the Redis layer stores around a message's payload, one format per path.

Every entry is ``<header length: 1 byte><header: a msgpack array><payload>``: the payload
(the serializer's bytes, encrypted when keys are set) follows the header as it is, so a
message is msgpack-encoded once, by the serializer, and reading an entry unpacks only its
small header. The headers:

- named channel entry: ``[sent_at, token]``; the random token keeps equal messages apart in
  an ``at_least_once`` channel's leases (a sorted set of entries);
- process inbox entry (and pub/sub process message): ``[channel, sent_at]``;
- group broadcast: ``[sent_at]``, behind the inbox marks (see inbox_order); a broadcast to a
  group with history is ``[sent_at, offset, epoch]``, framed in Lua by ``redis_history``
  (``FRAME_LUA``), and so is its entry in the group's stream.

``sent_at`` is the sender's ``time.time()``: receivers drop what is older than ``expiry``.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import msgpack

# Lua's ``frame(header_fields, payload)``, for entries made in scripts.
FRAME_LUA = """
local function frame(fields, payload)
  local header = cmsgpack.pack(fields)
  return string.char(#header) .. header .. payload
end
"""


def named_entry(payload: bytes) -> bytes:
    return _frame([time.time(), secrets.token_bytes(8)], payload)


def read_named_entry(entry: bytes | str) -> tuple[float, bytes]:
    """``(sent_at, payload)`` of a named channel's entry; ValueError if malformed."""
    (sent_at, _), payload = _unframe(entry, 2)
    return float(sent_at), payload


def process_entry(channel: str, payload: bytes) -> bytes:
    return _frame([channel, time.time()], payload)


def read_process_entry(entry: bytes) -> tuple[str, float, bytes]:
    """``(channel, sent_at, payload)``; ValueError if malformed."""
    (channel, sent_at), payload = _unframe(entry, 2)
    return channel, sent_at, payload


def broadcast(payload: bytes) -> bytes:
    return _frame([time.time()], payload)


def read_broadcast(data: bytes) -> tuple[float, bytes, tuple[int, str] | None]:
    """``(sent_at, payload, (offset, epoch) or None)``; ValueError if malformed."""
    header, payload = _unframe(data, None)
    if len(header) == 1:
        return header[0], payload, None
    if len(header) == 3:
        sent_at, offset, epoch = header
        return sent_at, payload, (offset, epoch)
    raise ValueError(f"a broadcast's header has {len(header)} fields")


def _frame(header: list[Any], payload: bytes) -> bytes:
    packed = msgpack.packb(header)
    return b"".join((bytes((len(packed),)), packed, payload))


def _unframe(entry: bytes | str, fields: int | None) -> tuple[list[Any], bytes]:
    """``(header, payload)``; ValueError unless the header is an array (of ``fields``)."""
    if isinstance(entry, str):
        entry = entry.encode()
    try:
        end = 1 + entry[0]
        header = msgpack.unpackb(entry[1:end], raw=False)
    except (ValueError, TypeError, IndexError) as error:
        raise ValueError(f"not a channel layer entry ({error})") from None
    if not isinstance(header, list) or (fields is not None and len(header) != fields):
        raise ValueError(f"not a channel layer entry (header {header!r})")
    return header, entry[end:]
