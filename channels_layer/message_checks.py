"""What a channel layer message may hold, checked before it is encoded, so a bad message
fails in ``send`` with an error that says where, not later in a receiver's decoder."""

from __future__ import annotations

from typing import Any

# msgpack's integer family spans int64 and uint64; anything wider fails to pack.
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_SCALARS = (type(None), bool, int, float, str, bytes, bytearray, memoryview)


def describe(value: Any) -> str:
    """A value as an error message shows it: its repr, and its length or its type."""
    if isinstance(value, str):
        return f"{value!r} ({len(value)} chars)"
    return f"{value!r} of type {type(value).__name__}"


def type_name(value: Any) -> str:
    """ "a dict", "an example.Thing": the type an error message names."""
    cls = type(value)
    name = cls.__qualname__
    if cls.__module__ != "builtins":
        name = f"{cls.__module__}.{name}"
    return f"{'an' if name[0].lower() in 'aeiou' else 'a'} {name}"


def require_encodable(value: Any, path: str) -> None:
    """Find the first value msgpack would refuse, so the error can name where it is."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str | bytes):
                # Unpacking only accepts str/bytes keys; anything else would fail in receive().
                raise TypeError(
                    f"{path} has the key {key!r} of type {type(key).__name__}; "
                    "message keys must be str or bytes"
                )
            require_encodable(item, f"{path}[{key!r}]")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            require_encodable(item, f"{path}[{index}]")
    elif not isinstance(value, _SCALARS):
        raise TypeError(f"{path} is {type_name(value)}, which msgpack cannot encode")
    elif isinstance(value, int) and not _INT_MIN <= value <= _INT_MAX:
        raise TypeError(f"{path} is an int outside the 64-bit range msgpack can encode")


# The scalar types a flat message's values usually have (see ``is_flat_and_plain``).
_PLAIN = frozenset((str, float, bool, bytes, type(None)))


def is_flat_and_plain(message: Any) -> bool:
    """True for a plain dict with a str ``"type"``, str keys, and values of ``_PLAIN``
    types or ints msgpack can carry: what ``require_valid_message`` accepts, checked with
    no call per value. False for anything else, to be checked in full (so its error says
    what is wrong), valid or not."""
    if type(message) is not dict or type(message.get("type")) is not str:
        return False
    plain = _PLAIN
    for key, value in message.items():
        if type(key) is not str:
            return False
        kind = type(value)
        if kind in plain:
            continue
        if kind is not int or not _INT_MIN <= value <= _INT_MAX:
            return False
    return True
