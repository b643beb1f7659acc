"""ASGI header lists: the one place that turns friendly header forms into (bytes, bytes)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, cast

HeaderValue = bytes | str
Headers = Mapping[HeaderValue, HeaderValue] | Iterable[tuple[HeaderValue, HeaderValue]]


def encode_headers(headers: Headers | None) -> list[tuple[bytes, bytes]]:
    """Header pairs or a mapping, str or bytes, as ASGI's list of (bytes, bytes).

    Names keep the case they were written in, and a pair already of bytes is passed on as
    it is (a list stays a list), as Channels passes headers on: servers match names without
    regard to case, and tests or middleware may compare what they get with what was sent.
    str is encoded as latin-1 like HTTP/1.1 headers.
    """
    pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
    return [_encode_pair(pair) for pair in pairs]


def _encode_pair(pair: Any) -> tuple[bytes, bytes]:
    name, value = pair
    if isinstance(name, bytes) and isinstance(value, bytes):
        return cast(tuple[bytes, bytes], pair)
    return (_to_bytes(name), _to_bytes(value))


def _to_bytes(value: HeaderValue) -> bytes:
    return value.encode("latin-1") if isinstance(value, str) else value
