"""Client JSON frames: decoded at the decoder's own cost, whatever their shape.

A frame of many small containers used to cost several times its decoding in a Python walk
of the content (for the depth limit) and in garbage collections the decoder set off. Here
the depth is read from the text at C speed and large frames decode with the collector
held off. On the usual small frame the stdlib's own Python layers around its C scanner and
encoder cost more than the C parts (``json.loads`` 1.0 us, its scanner 0.36 us; ``json.dumps``
1.5 us, a C encoder made once 0.9 us): both are called directly here, with the same results.
"""

from __future__ import annotations

import gc
import json
import re
from array import array
from itertools import accumulate
from json import encoder as _stdlib_encoder
from typing import Any

# Frames (characters) over this are decoded with the garbage collector held off.
GC_PAUSE_ABOVE = 8 * 1024

# Deeper client JSON is refused (1007): what is accepted can always be encoded again, in
# any thread, where the stack's own limit would depend on who is calling.
MAX_JSON_DEPTH = 128


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


_decoder = json.JSONDecoder(parse_constant=_not_json)
_scan = _decoder.scan_once  # type: ignore[attr-defined]  # the C scanner, set by __init__
_WHITESPACE = " \t\n\r"
# Shorter text cannot hold more than MAX_JSON_DEPTH openings and their closings.
_DEPTH_CHECK_FROM = 2 * (MAX_JSON_DEPTH + 1)


def parse_json(text: str) -> Any:
    """A client's JSON frame: standard JSON only (no NaN or Infinity), nested at most
    ``MAX_JSON_DEPTH`` deep; ``ValueError`` (or ``RecursionError``) otherwise.

    The depth is read from the text, not from the decoded content: a frame of many small
    containers would otherwise cost a Python walk several times the decoder's own time."""
    try:
        content = _decode(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"invalid JSON: {error.msg} at char {error.pos}") from None
    except ValueError as error:
        if "digits" in str(error):  # sys.get_int_max_str_digits()
            raise ValueError("invalid JSON: integer too long") from None
        raise
    if len(text) >= _DEPTH_CHECK_FROM and nested_deeper_than(text, MAX_JSON_DEPTH):
        raise ValueError(f"JSON nested more than {MAX_JSON_DEPTH} levels deep")
    return content


def _decode(text: str) -> Any:
    """Decode, holding the garbage collector off for a large frame: the decoder's containers
    are all alive until it ends, so each collection would promote them, and a frame of many
    containers would set off a full collection of the process every frame or two (most
    of its cost). They are freed by reference counting. A small frame is a plain call: a
    context manager around it cost more than decoding it (1.3 against 1.0 us here)."""
    if len(text) <= GC_PAUSE_ABOVE or not gc.isenabled():
        return _scan_document(text)
    gc.disable()
    try:
        return _scan_document(text)
    finally:
        gc.enable()


def _scan_document(text: str) -> Any:
    """``JSONDecoder.decode`` without its two Python layers: one document, surrounded by
    nothing but JSON whitespace, and the same ``JSONDecodeError`` for what is not."""
    start = 0
    if text and text[0] in _WHITESPACE:
        start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        content, end = _scan(text, start)
    except StopIteration as error:
        raise json.JSONDecodeError("Expecting value", text, error.value) from None
    if end != len(text):
        rest = len(text) - len(text[end:].lstrip(_WHITESPACE))
        if rest != len(text):
            raise json.JSONDecodeError("Extra data", text, rest)
    return content


def _new_encoder() -> Any:
    """The C encoder ``json.dumps`` makes on every call, with its default options (None if
    this Python has no C encoder)."""
    make = getattr(_stdlib_encoder, "c_make_encoder", None)
    if make is None:
        return None
    defaults = json.JSONEncoder()
    return make(
        {},  # the objects being encoded (circular references); empty between calls
        defaults.default,
        _stdlib_encoder.encode_basestring_ascii,
        None,
        defaults.key_separator,
        defaults.item_separator,
        defaults.sort_keys,
        defaults.skipkeys,
        defaults.allow_nan,
    )


# Encoders not in use. A call takes one (a thread, or a ``default`` hook of a dict subclass
# running Python, must not share its table of open containers) and gives it back only if
# the call succeeded: a failed one may leave entries in that table.
_idle_encoders: list[Any] = []


def dump_json(content: Any) -> str:
    """``json.dumps(content)``, the same text and errors, without the encoder made per call."""
    try:
        encoder = _idle_encoders.pop()
    except IndexError:
        encoder = _new_encoder()
        if encoder is None:
            return json.dumps(content)
    text = "".join(encoder(content, 0))
    _idle_encoders.append(encoder)
    return text


_NOT_SYNTAX = bytes(set(range(256)) - set(b'[]{}"'))
_STRING = re.compile(rb'"[^"]*"')
# Opening brackets to 1, closing ones to -1 (as signed bytes).
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_LEAF = b"\x01\xff"


def nested_deeper_than(text: str, limit: int) -> bool:
    """Whether the containers of valid JSON ``text`` nest more than ``limit`` (>= 1) deep
    (``[]`` is 1, ``[[]]`` 2), at C speed: escaped backslashes and quotes go, then every
    character but brackets and quotes, then the strings; the innermost pairs (the most
    common) are removed, which takes one level off every deepest path, and what is left
    is summed as +1/-1 steps."""
    if text.count("[") + text.count("{") <= limit:
        return False
    raw = text.encode("utf-8", "surrogatepass")
    if b"\\" in raw:
        # Escaped backslashes first, then escaped quotes: left to right, as JSON reads them.
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    steps = raw.translate(_STEPS, _NOT_SYNTAX)
    if b'"' in steps:
        steps = _STRING.sub(b"", steps)
    inner = steps.replace(_LEAF, b"")
    # Fewer openings than the limit cannot nest deeper than it.
    return inner.count(1) >= limit and max(accumulate(array("b", inner))) + 1 > limit
