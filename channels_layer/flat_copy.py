"""A decoded layer message's copy, for the members of a broadcast decoded once: as
independent of the original as a second decoding, when a shallow copy is."""

from __future__ import annotations

from typing import Any

# What a message's values may be for a shallow copy of it to be as independent of the
# original as a second decoding: msgpack's immutable kinds.
_IMMUTABLE = frozenset((str, bytes, int, float, bool, type(None)))


def copy_if_flat(message: Any) -> dict[str, Any] | None:
    """A copy of ``message`` as independent as a second decoding would be (a dict of
    immutable values: a shallow copy), or None when only decoding again gives one."""
    if type(message) is not dict:
        return None
    for value in message.values():
        if type(value) not in _IMMUTABLE:
            return None
    return message.copy()
