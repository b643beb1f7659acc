"""What the Redis layer stores around a message's payload, one format per path.

- named channel entry: ``[sent_at, payload, token]``; the random token keeps equal messages
  apart in an ``at_least_once`` channel's leases (a sorted set of entries);
- process inbox entry (and pub/sub process message): ``[channel, sent_at, payload]``;
- group broadcast: ``[sent_at, payload]``, behind the inbox marks (see inbox_order).

``sent_at`` is the sender's ``time.time()``: receivers drop what is older than ``expiry``.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import msgpack


def named_entry(payload: bytes) -> bytes:
    return _pack([time.time(), payload, secrets.token_bytes(8)])


def read_named_entry(entry: bytes | str) -> tuple[float, bytes]:
    """``(sent_at, payload)`` of a named channel's entry; ValueError if malformed."""
    try:
        sent_at, payload = msgpack.unpackb(entry)[:2]
        return float(sent_at), bytes(payload)
    except (ValueError, TypeError, IndexError) as error:
        raise ValueError(f"not a channel layer entry ({error})") from None


def process_entry(channel: str, payload: bytes) -> bytes:
    return _pack([channel, time.time(), payload])


def read_process_entry(entry: bytes) -> tuple[str, float, bytes]:
    """``(channel, sent_at, payload)``; ValueError or TypeError if malformed."""
    channel, sent_at, payload = msgpack.unpackb(entry)
    return channel, sent_at, payload


def broadcast(payload: bytes) -> bytes:
    return _pack([time.time(), payload])


def read_broadcast(data: bytes) -> tuple[float, bytes]:
    """``(sent_at, payload)``; ValueError or TypeError if malformed."""
    sent_at, payload = msgpack.unpackb(data)
    return sent_at, payload


def _pack(fields: list[Any]) -> bytes:
    return bytes(msgpack.packb(fields))
