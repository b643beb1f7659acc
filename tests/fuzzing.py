"""What the fuzz tests send, and the answers it is documented to get: Hypothesis strategies
for WebSocket frames (tests/chat, tests/consumers) and for channel layer names and messages
(tests/channels_layer), with the expected-answer types the generators attach to a frame.

The limits come from the code under test (``MAX_JSON_DEPTH``, ``CHAT_MAX_MESSAGE_LENGTH``'s
default, ``MAX_NAME_LENGTH``), never from a copy. Each fuzz test states the least it must
send with ``@pytest.mark.sends(...)``; the ``tally`` fixture (tests/conftest.py) counts it
over all of the test's examples and asserts it, and the end of the run lists what was sent.
"""

from __future__ import annotations

import contextlib
import datetime
import decimal
import json
import logging
import re
import string
from dataclasses import dataclass, replace
from typing import Any

from hypothesis import HealthCheck, Phase
from hypothesis import settings as fuzz_settings
from hypothesis import strategies as st

from channels_layer.base import MAX_NAME_LENGTH
from chat.conf import DEFAULTS
from chat.consumers import CLOSE_RATE_LIMITED
from consumers.generic.websocket import MAX_JSON_DEPTH
from consumers.testing import WebsocketCommunicator

TIMEOUT = 5  # seconds for any one answer; a hang fails the test instead of stalling it
MAX_LENGTH = DEFAULTS["CHAT_MAX_MESSAGE_LENGTH"]
# The least each consumer fuzz test sends: together the 10,000 frames the fuzzing promises.
CHAT_FRAMES, JSON_FRAMES, TEXT_FRAMES = 3500, 3000, 3500
assert CHAT_FRAMES + JSON_FRAMES + TEXT_FRAMES >= 10_000
LAYER_OPERATIONS = 360  # at least, per layer backend

# No shrinking: an example drives long-lived connections and shrinking a batch of frames
# takes minutes; a failure reports the whole batch, and its assertion names the frame.
FUZZ = fuzz_settings(
    phases=[Phase.explicit, Phase.generate],
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.filter_too_much,
    ],
)


# Expected answers ------------------------------------------------------------------------


@dataclass(frozen=True)
class Close:
    code: int


@dataclass(frozen=True)
class Error:
    code: str


@dataclass(frozen=True)
class Posted:
    text: str


@dataclass(frozen=True)
class Silence:
    pass


@dataclass(frozen=True)
class Frame:
    """A generated frame and, when its generator knows it, the answer the docs promise a
    logged-in chat user (checked against the oracle so that generators cannot drift)."""

    data: str | bytes
    claim: Any = None
    kind: str = ""


SURROGATE = re.compile(r"[\ud800-\udfff]")


CLOSE_REASONS = {1003: "binary frame", 1007: "JSON", CLOSE_RATE_LIMITED: "too many messages"}


def closed(message: dict) -> Close:
    """A close the server sent, which must say why (in at most the 123 bytes allowed)."""
    reason = message.get("reason", "")
    assert reason and len(reason.encode()) <= 123, message
    assert CLOSE_REASONS.get(message["code"], "") in reason, message
    return Close(message["code"])


def label(answer: Any) -> str:
    """For the printed counts: "close 1007", "error too_long", "posted", "silence"."""
    detail = getattr(answer, "code", "")
    return f"{type(answer).__name__.lower()} {detail}".replace("closed", "close").strip()


def parse(frame: str | bytes) -> tuple[Any, Close | None]:
    """What a JSON consumer makes of a frame: its content, or the close it must answer.
    Standard JSON only (NaN and Infinity are not JSON), nested MAX_JSON_DEPTH deep at most.

    The limit is the consumers' own; the depth is measured another way than theirs (a walk
    of the decoded content, where consumers/generic/jsonframes.py scans the text), so that
    the fuzzing checks their scan instead of repeating it."""
    if isinstance(frame, bytes):
        return None, Close(1003)
    try:
        content = json.loads(frame, parse_constant=_not_json)
    except (ValueError, RecursionError):
        return None, Close(1007)
    if depth(content) > MAX_JSON_DEPTH:
        return None, Close(1007)
    return content, None


def _not_json(constant: str) -> Any:
    raise ValueError(constant)


def depth(content: Any) -> int:
    """Levels of containers: ``[]`` is 1, ``[[]]`` 2, a scalar 0."""
    if isinstance(content, dict):
        content = list(content.values())
    if not isinstance(content, list):
        return 0
    return 1 + max(map(depth, content), default=0)


# Frame strategies ------------------------------------------------------------------------


def weighted(*choices: tuple[int, st.SearchStrategy]) -> st.SearchStrategy:
    """One of ``choices``, in proportion to the weights (the heaviest first: Hypothesis
    favours the first of a sampled list)."""
    ordered = sorted(choices, key=lambda choice: -choice[0])
    pool = [strategy for weight, strategy in ordered for _ in range(weight)]
    return st.sampled_from(pool).flatmap(lambda strategy: strategy)


WHITESPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace())
ABSENT = object()

# NaN and Infinity are not JSON (Python writes them, consumers refuse them: BROKEN has them).
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
# One surrogate alone: two in a row could make a valid pair once JSON-decoded.
lone_surrogates = st.characters(categories=["Cs"])
invalid_utf8 = (
    st.tuples(
        st.binary(max_size=12),
        st.sampled_from(
            [
                *(b"\xff", b"\xfe", b"\x80", b"\xc0\x80", b"\xc3", b"\xe2\x82"),
                *(b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80", b"\xef\xbf"),
            ]
        ),
        st.binary(max_size=12),
    )
    .map(b"".join)
    .filter(lambda data: not is_utf8(data))
)


def is_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def to_frame(content: Any, ascii_only: bool = True) -> str:
    """JSON text as a browser would send it: lone surrogates only as escapes."""
    frame = json.dumps(content, ensure_ascii=ascii_only)
    return json.dumps(content) if SURROGATE.search(frame) else frame


def exact_text(length: int, char: str, pad: str) -> tuple[str, Any]:
    body = char * length
    return pad + body + pad, Posted(body) if length <= MAX_LENGTH else Error("too_long")


# "text" values: (value, the answer a logged-in user gets for {"type": "message", "text": value}).
text_fields = weighted(
    (3, st.text(max_size=40).map(lambda text: (text, None))),
    (1, st.just(("", Error("empty")))),
    (2, st.text(WHITESPACE, min_size=1, max_size=20).map(lambda text: (text, Error("empty")))),
    (
        2,
        st.builds(
            exact_text,
            st.integers(MAX_LENGTH - 3, MAX_LENGTH + 3),
            st.sampled_from(["x", "é", "\u4e2d", "\U0001f600", "<"]),
            st.text(WHITESPACE, max_size=3),
        ),
    ),
    (
        1,
        st.builds(
            lambda length, char: (char * length, Error("too_long")),
            st.integers(MAX_LENGTH + 1, 50_000),
            st.sampled_from(["y", "\u00e9", "\U0001f4a9"]),
        ),
    ),
    (
        2,
        st.tuples(st.text(max_size=10), lone_surrogates, st.text(max_size=10)).map(
            lambda parts: ("".join(parts), Error("bad_request"))
        ),
    ),
    (
        1,
        st.tuples(st.text(max_size=10), st.text(max_size=10)).map(
            lambda parts: (parts[0] + "\x00" + parts[1], Error("bad_request"))
        ),
    ),
    (
        3,
        json_values.filter(lambda value: not isinstance(value, str)).map(
            lambda value: (value, Error("bad_request"))
        ),
    ),
    (1, st.just((ABSENT, Error("bad_request")))),
)


@st.composite
def message_frames(draw: Any) -> Frame:
    kind = draw(weighted((6, st.just("message")), (1, st.just("typing")), (2, json_values)))
    text, claim = draw(text_fields)
    content = draw(st.dictionaries(st.text(max_size=6), json_values, max_size=2))
    content["type"] = kind
    content.pop("text", None)
    if text is not ABSENT:
        content["text"] = text
    if kind == "typing":
        claim = Silence()
    elif kind != "message":
        claim = Error("bad_request")
    keys = draw(st.permutations(list(content)))
    return Frame(to_frame({key: content[key] for key in keys}, draw(st.booleans())), claim)


# Deeper than any stack: how deep json.loads gets depends on the recursion limit (which
# Hypothesis raises while a test runs) and on the stack depth (a sync consumer decodes in a
# fresh worker thread), so 1,000-3,000 levels may or may not parse.
deep_frames = st.builds(
    lambda opener, depth, closed: Frame(
        opener * depth + ("1" + "]" * depth if closed and opener == "[" else ""), Close(1007)
    ),
    st.sampled_from(["[", '{"a":', '{"type": "message", "text": [', "[{}, "]),
    st.integers(10_000, 100_000),
    st.booleans(),
)


def huge_number(digits: int, pattern: str, sign: str, place: str) -> Frame:
    number = sign + (pattern * (digits // len(pattern) + 1))[:digits]
    frame = {
        "top": number,
        "text": '{"type": "message", "text": %s}',
        "type": '{"type": %s}',
        "nested": '[1, {"n": [%s]}]',
    }[place]
    return Frame(frame if place == "top" else frame % number, Close(1007))


def huge_float(digits: int, form: str, sign: str, place: str) -> Frame:
    """Floats have no digit limit: valid JSON (Python reads 1e400 as inf), but no text."""
    number = sign + {"fraction": "1." + "3" * digits, "exponent": f"1e{digits}"}[form]
    frame = {"top": "%s", "text": '{"type": "message", "text": %s}', "type": '{"type": %s}'}
    return Frame(frame[place] % number, Error("bad_request"))


huge_number_frames = weighted(
    (
        3,
        st.builds(
            huge_number,
            st.integers(5_000, 100_000),
            st.text("0123456789", min_size=1, max_size=4).map(lambda digits: "1" + digits),
            st.sampled_from(["", "-"]),
            st.sampled_from(["top", "text", "type", "nested"]),
        ),
    ),
    (
        1,
        st.builds(
            huge_float,
            st.integers(5_000, 100_000),
            st.sampled_from(["fraction", "exponent"]),
            st.sampled_from(["", "-"]),
            st.sampled_from(["top", "text", "type"]),
        ),
    ),
)

BROKEN = [
    "",
    " ",
    "{",
    "}",
    "[1,]",
    "[1 2]",
    "{'type': 'message'}",
    '{"type": "message", "text": "abc',
    '{"type": "message",}',
    '{"type" "message"}',
    '{type: "message"}',
    "nan",
    "NaN",
    "[Infinity]",
    '{"type": "message", "text": "hi", "x": -Infinity}',
    "undefined",
    "tru",
    "01",
    "1.",
    ".5",
    "+1",
    '"\\x41"',
    '"\\ud800',
    '"\\u12"',
    "\ufeff{}",
    "{}{}",
    '{"type": "message"} x',
]
malformed_frames = weighted(
    (3, st.sampled_from(BROKEN).map(lambda text: Frame(text, Close(1007)))),
    # "{" before any JSON text never makes JSON; an object cut before its "}" neither.
    (2, json_values.map(lambda value: Frame("{" + json.dumps(value), Close(1007)))),
    (
        2,
        st.dictionaries(st.text(max_size=5), json_values, max_size=3).map(
            lambda value: Frame(json.dumps(value)[:-1], Close(1007))
        ),
    ),
    (
        2,
        st.builds(
            lambda before, control, after: Frame(
                f'{{"type": "message", "text": "{before}{control}{after}"}}', Close(1007)
            ),
            st.text(string.ascii_letters, max_size=5),
            st.characters(max_codepoint=0x1F),
            st.text(string.ascii_letters, max_size=5),
        ),
    ),
)
binary_frames = weighted(
    (2, st.binary(max_size=40)),
    (3, invalid_utf8),
    (2, message_frames().map(lambda frame: frame.data.encode("utf-8", "surrogatepass"))),
).map(lambda data: Frame(data, Close(1003)))
random_text_frames = st.text(max_size=60).map(Frame)
top_level_frames = json_values.map(lambda value: Frame(to_frame(value)))


def oversized(size: int, kind: str) -> Frame:
    return {
        "long": lambda: Frame(to_frame({"type": "message", "text": "x" * size}), Error("too_long")),
        "blank": lambda: Frame('{"type": "message", "text": "%s"}' % (" " * size), Error("empty")),
        "string": lambda: Frame(json.dumps("s" * size), Error("bad_request")),
        "list": lambda: Frame("[" + "0," * (size // 2) + "0]", Error("bad_request")),
        "garbage": lambda: Frame("g" * size, Close(1007)),
        "deep": lambda: Frame("[" * size, Close(1007)),
        "binary": lambda: Frame(b"\xff" * size, Close(1003)),
    }[kind]()


oversized_frames = st.builds(
    oversized,
    st.integers(1_000_000, 2_000_000),
    st.sampled_from(["long", "blank", "string", "list", "garbage", "deep", "binary"]),
)

KINDS = {
    "binary": binary_frames,
    "deep nesting": deep_frames,
    "huge integer": huge_number_frames,
    "malformed JSON": malformed_frames,
    "random text": random_text_frames,
    "top-level JSON": top_level_frames,
    "chat message": message_frames(),
    "1-2 MB": oversized_frames,
}


def mix(*weights: tuple[str, int]) -> st.SearchStrategy:
    """Frames of the ``KINDS`` named, in proportion to the weights, labelled with their kind."""
    return weighted(
        *(
            (weight, KINDS[kind].map(lambda frame, kind=kind: replace(frame, kind=kind)))
            for kind, weight in weights
        )
    )


chat_frames = mix(
    ("binary", 3),
    ("deep nesting", 2),
    ("huge integer", 2),
    ("malformed JSON", 5),
    ("random text", 4),
    ("top-level JSON", 12),
    ("chat message", 70),
    ("1-2 MB", 1),
)
json_frames = mix(
    ("binary", 15),
    ("deep nesting", 8),
    ("huge integer", 8),
    ("malformed JSON", 15),
    ("random text", 12),
    ("top-level JSON", 20),
    ("chat message", 20),
    ("1-2 MB", 1),
)
# Any unicode with lone surrogates mixed in (st.text over a union of alphabets hardly ever
# picks one); only an in-process text consumer can get these.
any_text = st.lists(
    st.text(max_size=10) | st.text(lone_surrogates, min_size=1, max_size=3), max_size=8
).map("".join)
text_frames = weighted(
    (30, any_text),
    (10, st.text(max_size=300)),
    (20, st.binary(max_size=80)),
    (20, invalid_utf8),
    (5, st.sampled_from(["", b"", "\x00", b"\x00", "\ud800", "\udfff\ud800"])),
    (10, json_frames.map(lambda frame: frame.data)),
    (
        2,
        st.builds(
            lambda size, char, as_bytes: (
                char.encode("utf-8", "surrogatepass") * size if as_bytes else char * size
            ),
            st.integers(1_000_000, 2_000_000),
            st.sampled_from(["x", "\ud800", "\U0001f600", "\x00"]),
            st.booleans(),
        ),
    ),
)


# Channel layer names and messages --------------------------------------------------------

NAME_CHARS = string.ascii_letters + string.digits + "-_."
SMALL_LIMIT = 4096  # max_message_size for these layers, so "too large" is cheap to reach
INT_MIN, INT_MAX = -(2**63), 2**64 - 1


group_names = st.text(NAME_CHARS, min_size=1, max_size=MAX_NAME_LENGTH)
local_names = st.tuples(
    st.text(NAME_CHARS, min_size=1, max_size=MAX_NAME_LENGTH // 2),
    st.text(NAME_CHARS, max_size=MAX_NAME_LENGTH // 2 - 1),
).map("!".join)
invalid_names = weighted(
    (3, st.text(min_size=1, max_size=30)),
    (
        4,
        st.tuples(
            st.text(NAME_CHARS, max_size=20),
            st.sampled_from(list(" *:/\\\n\t\x00é\u4e2d\U0001f600?[]{}'\"#@$%&+=,;<>|~`^")),
            st.text(NAME_CHARS, max_size=20),
        ).map("".join),
    ),
    (2, st.text(NAME_CHARS, min_size=MAX_NAME_LENGTH + 1, max_size=300)),
    (1, st.sampled_from(["", "!", "!a", "a!b!c", "a!!", "a\n", "\na"])),
    (1, lone_surrogates),
    (
        2,
        st.none()
        | st.integers()
        | st.floats()
        | st.binary(max_size=10)
        | st.lists(st.text(NAME_CHARS, max_size=5), max_size=2)
        | st.builds(object),
    ),
)


class Unencodable:
    """An arbitrary object: msgpack has no encoding for it."""


keys = st.text(max_size=8) | st.binary(max_size=8)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(INT_MIN, INT_MAX)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20)
    | st.binary(max_size=8).map(bytearray)
    | st.binary(max_size=8).map(memoryview)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(keys, inner, max_size=3)
    ),
    max_leaves=10,
)
messages = st.builds(
    lambda kind, extra: {**extra, "type": kind},
    st.text(max_size=20),
    st.dictionaries(keys, values, max_size=4),
)
bad_values = st.sampled_from(
    [
        (set(), "set"),
        (frozenset({1}), "frozenset"),
        (Unencodable(), "Unencodable"),
        (1j, "complex"),
        (decimal.Decimal("1.5"), "Decimal"),
        (datetime.date(2024, 1, 1), "date"),
        (len, "builtin_function_or_method"),
        (2**64, "64-bit"),
        (INT_MIN - 1, "64-bit"),
        (10**30, "64-bit"),
    ]
)
bad_keys = st.sampled_from([1, None, (1, 2), 1.5, True, frozenset()])


def bury(value: Any, path: list[str]) -> Any:
    """``value`` nested in lists and dicts along ``path``."""
    for step in reversed(path):
        value = [value] if step == "list" else {"k": value}
    return value


@st.composite
def broken_messages(draw: Any) -> tuple[Any, type, str]:
    """A message with one defect and the exception (type, words in its text) it must raise."""
    message = draw(messages)
    path = draw(st.lists(st.sampled_from(["list", "dict"]), max_size=3))
    defect = draw(st.sampled_from(["value", "key", "surrogate", "no type", "type", "not a dict"]))
    if defect == "value":
        value, words = draw(bad_values)
        message["bad"] = bury(value, path)
        return message, TypeError, words
    if defect == "key":
        message["bad"] = bury({draw(bad_keys): 1}, path)
        return message, TypeError, "message keys must be str or bytes"
    if defect == "surrogate":
        text = draw(lone_surrogates)
        where = draw(st.sampled_from(["value", "key", "type"]))
        if where == "type":
            message["type"] = text
        else:
            message["bad"] = bury(text if where == "value" else {text: 1}, path)
        return message, ValueError, "surrogates not allowed"
    if defect == "no type":
        del message["type"]
        return message, ValueError, "needs a 'type' key"
    if defect == "type":
        message["type"] = draw(values.filter(lambda value: not isinstance(value, str)))
        return message, ValueError, "must be a str"
    not_a_dict = values.filter(lambda value: not isinstance(value, dict)) | st.builds(Unencodable)
    return draw(not_a_dict), TypeError, "must be a dict"


sized_messages = st.builds(
    lambda kind, size: {"type": kind, "pad": "p" * size},
    st.text(max_size=5),
    st.integers(SMALL_LIMIT - 40, SMALL_LIMIT + 40),
)

channel_names = weighted((4, group_names), (2, local_names), (3, invalid_names))
any_messages = weighted(
    (5, messages.map(lambda message: (message, None))),
    (4, broken_messages().map(lambda broken: (broken[0], broken[1:]))),
    (1, sized_messages.map(lambda message: (message, None))),
)
layer_operations = weighted(
    (5, st.tuples(st.just("send"), channel_names, any_messages)),
    (
        4,
        st.tuples(
            st.just("group"),
            weighted((3, group_names), (2, invalid_names)),
            channel_names,
            any_messages,
        ),
    ),
    (1, st.tuples(st.just("new_channel"), weighted((3, group_names), (1, invalid_names)))),
    (1, st.tuples(st.just("foreign"), local_names)),
)


# Shared checks -----------------------------------------------------------------------------


def assert_no_errors_since(caplog, start: int) -> None:
    errors = [record for record in caplog.records[start:] if record.levelno >= logging.ERROR]
    assert not errors, [record.getMessage() for record in errors]


async def close_quietly(socket: WebsocketCommunicator) -> None:
    with contextlib.suppress(Exception):
        await socket.disconnect(timeout=TIMEOUT)
