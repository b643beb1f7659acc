"""ASGI header lists: the one place that turns friendly header forms into (bytes, bytes)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

HeaderValue = bytes | str
Headers = Mapping[HeaderValue, HeaderValue] | Iterable[tuple[HeaderValue, HeaderValue]]


def encode_headers(headers: Headers | None) -> list[tuple[bytes, bytes]]:
    """Header pairs or a mapping, str or bytes, as ASGI's list of (bytes, bytes).

    Names keep the case they were written in, as Channels passes them on: servers match
    them without regard to case, and tests or middleware may compare them byte for byte.
    str is encoded as latin-1 like HTTP/1.1 headers.
    """
    pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
    return [(_to_bytes(name), _to_bytes(value)) for name, value in pairs]


def _to_bytes(value: HeaderValue) -> bytes:
    return value.encode("latin-1") if isinstance(value, str) else value
