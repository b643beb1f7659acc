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
import struct
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


# The headers Python makes are built byte by byte, as msgpack would encode them (arrays of a
# float64, a bin 8 and a str 8), and read back the same way: msgpack.packb and unpackb cost
# about twice as much for so small a header, which made framing dearer than the second
# encoding it replaces. Any other header (one made in Lua) is read with msgpack.
_TIME = struct.Struct(">d")
_BROADCAST = b"\x0a\x91\xcb"  # length 10: [float64]
_NAMED = b"\x14\x92\xcb"  # length 20: [float64, bin 8 of 8 bytes]
_TOKEN = b"\xc4\x08"
_PROCESS = b"\x92\xd9"  # after the length: [str 8, float64]


def named_entry(payload: bytes) -> bytes:
    return b"".join((_NAMED, _TIME.pack(time.time()), _TOKEN, secrets.token_bytes(8), payload))


def read_named_entry(entry: bytes | str) -> tuple[float, bytes]:
    """``(sent_at, payload)`` of a named channel's entry; ValueError if malformed."""
    if isinstance(entry, bytes) and entry[:3] == _NAMED and len(entry) >= 21:
        return _TIME.unpack_from(entry, 3)[0], entry[21:]
    (sent_at, _), payload = _unframe(entry, 2)
    return float(sent_at), payload


def process_entry(channel: str, payload: bytes) -> bytes:
    name = channel.encode()
    size = len(name)
    # length, array of 2, str 8 of ``size`` bytes, the name, float64
    head = struct.pack(f">4B{size}sBd", size + 12, 0x92, 0xD9, size, name, 0xCB, time.time())
    return head + payload


def read_process_entry(entry: bytes) -> tuple[str, float, bytes]:
    """``(channel, sent_at, payload)``; ValueError if malformed."""
    if entry[1:3] == _PROCESS and len(entry) > 3:
        end = 4 + entry[3]
        if entry[0] == end + 8 and entry[end : end + 1] == b"\xcb":
            return entry[4:end].decode(), _TIME.unpack_from(entry, end + 1)[0], entry[end + 9 :]
    (channel, sent_at), payload = _unframe(entry, 2)
    return channel, sent_at, payload


def broadcast(payload: bytes) -> bytes:
    return b"".join((_BROADCAST, _TIME.pack(time.time()), payload))


def read_broadcast(data: bytes) -> tuple[float, bytes, tuple[int, str] | None]:
    """``(sent_at, payload, (offset, epoch) or None)``; ValueError if malformed."""
    if data[:3] == _BROADCAST and len(data) >= 11:
        return _TIME.unpack_from(data, 3)[0], data[11:], None
    header, payload = _unframe(data, None)
    if len(header) == 1:
        return header[0], payload, None
    if len(header) == 3:
        sent_at, offset, epoch = header
        return sent_at, payload, (offset, epoch)
    raise ValueError(f"a broadcast's header has {len(header)} fields")


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
