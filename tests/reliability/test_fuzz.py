"""Fuzzing with Hypothesis: generated frames for the JSON and text WebSocket consumers, and
generated channel names, group names and messages for the channel layer API.

Every generated input has one documented answer, decided before it is sent and asserted
after: an echo, a chat ``error`` event with a given code, a posted message, silence (a
typing notice), or a close with a given code (1003 binary frame to a JSON consumer, 1007
invalid JSON, 4029 flooding). Connections live for a whole test and are reopened only when
a frame closes them; after every batch, connections that were not fuzzed must still work.
No record at ERROR or above (a "crashed" traceback) may be logged.

The frame counts are printed (``pytest -s``); each test asserts its share of the 10,000.
The tests at the end pin the defects the fuzzing found: nesting that could be decoded but
not encoded again, and layer messages nested too deeply for the checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import decimal
import json
import logging
import math
import re
import string
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

import msgpack
import pytest
from django.contrib.auth import get_user_model
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as fuzz_settings
from hypothesis import strategies as st

from channels_layer import InMemoryChannelLayer
from channels_layer.exceptions import MessageTooLarge
from channels_layer.pubsub import RedisPubSubChannelLayer
from channels_layer.redis import RedisChannelLayer
from chat import limits
from chat.consumers import CLOSE_RATE_LIMITED
from chat.models import Room
from consumers.generic.websocket import (
    MAX_JSON_DEPTH,
    AsyncJsonWebsocketConsumer,
    AsyncWebsocketConsumer,
    JsonWebsocketConsumer,
    WebsocketConsumer,
)
from consumers.testing import WebsocketCommunicator
from project.asgi import application

ORIGIN = {"origin": "http://localhost"}
TIMEOUT = 5  # seconds for any one answer; a hang fails the test instead of stalling it
MAX_LENGTH = 2000  # CHAT_MAX_MESSAGE_LENGTH's default
# Frames each test must send; together at least the 10,000 the fuzzing promises.
SHARES = {
    "test_chat_consumer_answers_every_frame": 3500,
    "test_json_consumers_answer_every_frame": 3000,
    "test_text_consumers_echo_every_frame": 3500,
}
assert sum(SHARES.values()) >= 10_000
LAYER_OPERATIONS = 360  # at least, per layer backend
TOTALS: dict[str, int] = {}

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


UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")
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
    Standard JSON only (NaN and Infinity are not JSON), nested MAX_JSON_DEPTH deep at most."""
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


def chat_answer(frame: str | bytes, logged_in: bool) -> Any:
    """The chat protocol (chat/consumers.py's docstring), for a sender under the rate limit."""
    content, close = parse(frame)
    if close:
        return close
    kind = content.get("type") if isinstance(content, dict) else None
    if kind == "typing":
        return Silence()
    if kind != "message":
        return Error("bad_request")
    if not logged_in:
        return Error("login_required")
    text = content.get("text")
    if not isinstance(text, str) or UNSTORABLE.search(text):
        return Error("bad_request")
    text = text.strip()
    if not text:
        return Error("empty")
    if len(text) > MAX_LENGTH:
        return Error("too_long")
    return Posted(text)


def json_echo_answer(frame: str | bytes) -> Any:
    content, close = parse(frame)
    return close or json.dumps(content)


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
    .filter(lambda data: not _is_utf8(data))
)


def _is_utf8(data: bytes) -> bool:
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


# Shared checks -----------------------------------------------------------------------------


@pytest.fixture
def tally(request, caplog):
    """Counts the frames a test sends; at the end asserts its share and that nothing was
    logged at ERROR or above."""
    counts: Counter[str] = Counter()
    yield counts
    name = request.node.name
    TOTALS[name] = counts["frames"]
    print(f"\n{name}: {dict(counts)}")
    errors = [record for record in caplog.get_records("call") if record.levelno >= logging.ERROR]
    assert not errors, [record.getMessage() for record in errors]
    assert counts["frames"] >= SHARES.get(request.node.originalname, 0), counts
    if request.node.originalname == "test_layer_api_accepts_valid_input_and_refuses_the_rest":
        assert counts["operations"] >= LAYER_OPERATIONS, counts


def assert_no_errors_since(caplog, start: int) -> None:
    errors = [record for record in caplog.records[start:] if record.levelno >= logging.ERROR]
    assert not errors, [record.getMessage() for record in errors]


async def close_quietly(socket: WebsocketCommunicator) -> None:
    with contextlib.suppress(Exception):
        await socket.disconnect(timeout=TIMEOUT)


# The chat ------------------------------------------------------------------------------------

ROOM = "fuzz"
# Room traffic, not answers to a client's own frames (consumers.*: the recovery protocol).
ROOM_TRAFFIC = {"presence", "typing", "moderated", "consumers.joined", "consumers.ping"}


class ChatClient:
    """One person's connection to the room, reopened when the server closes it."""

    def __init__(self, user: Any) -> None:
        self.user = user
        self.name = user.get_username() if user is not None else None
        self.socket: WebsocketCommunicator | None = None
        self.heard: list[tuple[str, str]] = []  # others' messages, in order
        self.headers: list | None = None  # with the session cookie, once logged in

    async def open(self) -> None:
        self.socket = WebsocketCommunicator(application, f"/ws/chat/{ROOM}/", headers=ORIGIN)
        if self.headers is not None:
            self.socket.scope["headers"] = list(self.headers)
        elif self.user is not None:
            await self.socket.force_login(self.user)
            self.headers = list(self.socket.scope["headers"])
        connected, _ = await self.socket.connect(timeout=TIMEOUT)
        assert connected
        assert (await self.socket.receive_json_from(TIMEOUT))["type"] == "welcome"
        assert (await self.socket.receive_json_from(TIMEOUT))["type"] == "history"
        self.heard = []

    async def reopen(self) -> None:
        await close_quietly(self.socket)
        await self.open()

    async def answer(self, until: tuple[str, str] | None = None) -> Any:
        """The next output that answers this client's own frames: a close, an error, or its
        own posted message; others' messages are kept in ``heard``, and the room message
        ``until`` (user, text) ends the wait."""
        while True:
            message = await self.socket.receive_output(TIMEOUT)
            if message["type"] == "websocket.close":
                return closed(message)
            assert message["type"] == "websocket.send" and message.get("text") is not None
            event = json.loads(message["text"])
            if event["type"] in ROOM_TRAFFIC:
                continue
            if event["type"] == "message" and event["user"] != self.name:
                self.heard.append((event["user"], event["text"]))
                if self.heard[-1] == until:
                    return until
                continue
            if event["type"] == "error":
                assert set(event) == {"type", "code", "detail"}, event
                assert isinstance(event["detail"], str) and event["detail"], event
                return Error(event["code"])
            assert event["type"] == "message", event
            assert event["status"] == "pending" and isinstance(event["id"], int), event
            return Posted(event["text"])

    async def hear(self, user: str, text: str) -> None:
        """Wait for the room message (user, text); nothing else may come before it."""
        got = await self.answer(until=(user, text))
        assert got == (user, text), f"{self.name} got {got} instead of {text!r}"
        assert self.heard == [(user, text)], self.heard
        self.heard = []


class ChatRoom:
    """ada (logged in) and a guest are fuzzed; bob only listens; cat posts between batches."""

    def __init__(self, ada, guest, bob, cat) -> None:
        self.ada, self.guest, self.bob, self.cat = ada, guest, bob, cat
        self.everyone = [ada, guest, bob, cat]
        self.pings = 0
        self.healthy = True

    async def open(self) -> None:
        for client in self.everyone:
            await client.open()

    async def close(self) -> None:
        for client in self.everyone:
            await close_quietly(client.socket)

    async def recover(self) -> None:
        """After a failed example (Hypothesis runs it again to report it), start again from
        fresh connections."""
        if not self.healthy:
            await self.close()
            await self.open()
        self.healthy = False

    async def send(self, client: ChatClient, frame: Frame, tally: Counter) -> None:
        expected = chat_answer(frame.data, client.user is not None)
        if frame.claim is not None and client.user is not None:
            assert expected == frame.claim, (frame.data[:200], expected, frame.claim)
        if isinstance(frame.data, bytes):
            await client.socket.send_to(bytes_data=frame.data)
        else:
            await client.socket.send_to(text_data=frame.data)
        tally["frames"] += 1
        tally[label(expected)] += 1
        tally[f"kind: {frame.kind}"] += 1
        if isinstance(expected, Silence):
            return
        answer = await client.answer()
        assert answer == expected, (frame.data[:200], answer, expected)
        if isinstance(expected, Close):
            await client.reopen()
        elif isinstance(expected, Posted):
            for other in self.everyone:
                if other is not client:
                    await other.hear(client.name, expected.text)

    async def check_bystanders(self) -> None:
        """cat posts; everyone, fuzzed or not, gets exactly that and nothing unanswered."""
        self.pings += 1
        text = f"ping {self.pings}"
        await self.cat.socket.send_json_to({"type": "message", "text": text})
        assert await self.cat.answer() == Posted(text)
        for client in (self.ada, self.guest, self.bob):
            await client.hear("cat", text)
        self.healthy = True


@pytest.fixture
async def chat_room(transactional_db, settings):
    settings.CHAT_MODERATION_INLINE = True
    settings.CHAT_PRESENCE_INTERVAL = 60
    settings.CHAT_MESSAGES_PER_SECOND = 1e9
    settings.CHAT_MESSAGE_BURST = 10**9
    await Room.objects.acreate(name=ROOM)
    users = [await get_user_model().objects.acreate(username=name) for name in ("ada", "bob")]
    cat = await get_user_model().objects.acreate(username="cat")
    room = ChatRoom(ChatClient(users[0]), ChatClient(None), ChatClient(users[1]), ChatClient(cat))
    await room.open()
    yield room
    await room.close()


@fuzz_settings(FUZZ, max_examples=45)
@given(batch=st.lists(chat_frames, min_size=40, max_size=45))
async def test_chat_consumer_answers_every_frame(chat_room, tally, caplog, batch):
    """Each frame goes to a logged-in and an anonymous connection; each gets its answer."""
    start = len(caplog.records)
    await chat_room.recover()
    for frame in batch:
        for client in (chat_room.ada, chat_room.guest):
            await chat_room.send(client, frame, tally)
    await chat_room.check_bystanders()
    assert_no_errors_since(caplog, start)


@fuzz_settings(FUZZ, max_examples=20)
@given(
    burst=st.integers(1, 12),
    strikes=st.integers(1, 8),
    frames=st.lists(mix(("chat message", 4), ("top-level JSON", 1)), min_size=20, max_size=20),
)
async def test_chat_closes_a_flooder_with_4029_and_spares_the_others(
    chat_room, tally, caplog, settings, burst, strikes, frames
):
    """Each frame within the burst gets its usual answer, the next ``strikes - 1`` get
    ``rate_limited`` and the one after is closed with 4029; the others never notice."""
    start = len(caplog.records)
    settings.CHAT_MESSAGES_PER_SECOND = 1e9
    settings.CHAT_MESSAGE_BURST = 10**9
    await chat_room.recover()
    settings.CHAT_MESSAGES_PER_SECOND = 1e-9  # no token comes back during the test
    settings.CHAT_MESSAGE_BURST = burst
    settings.CHAT_STRIKES_BEFORE_CLOSE = strikes
    limits.reset()  # the limit is ada's, not her connection's: a fresh one for this example
    await chat_room.ada.reopen()
    ada = chat_room.ada
    for number, frame in enumerate(frames[: burst + strikes]):
        if number < burst:
            await chat_room.send(ada, frame, tally)
            continue
        await ada.socket.send_to(text_data=frame.data)
        tally["frames"] += 1
        answer = await ada.answer()
        if number < burst + strikes - 1:
            assert answer == Error("rate_limited")
        else:
            assert answer == Close(CLOSE_RATE_LIMITED)
        tally[label(answer)] += 1
    settings.CHAT_MESSAGES_PER_SECOND = 1e9
    settings.CHAT_MESSAGE_BURST = 10**9
    await ada.reopen()
    await chat_room.check_bystanders()
    assert_no_errors_since(caplog, start)


# Generic JSON and text consumers ---------------------------------------------------------


class AsyncJsonEcho(AsyncJsonWebsocketConsumer):
    async def receive_json(self, content, **kwargs):
        await self.send_json(content)


class SyncJsonEcho(JsonWebsocketConsumer):
    def receive_json(self, content, **kwargs):
        self.send_json(content)


class AsyncEcho(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        await self.send(text_data=text_data, bytes_data=bytes_data)


class SyncEcho(WebsocketConsumer):
    def receive(self, text_data=None, bytes_data=None):
        self.send(text_data=text_data, bytes_data=bytes_data)


class EchoPair:
    """A fuzzed connection and a bystander to the same consumer class."""

    def __init__(self, consumer) -> None:
        self.app = consumer.as_asgi()
        self.fuzzed: WebsocketCommunicator | None = None
        self.bystander: WebsocketCommunicator | None = None

    async def connect(self) -> WebsocketCommunicator:
        socket = WebsocketCommunicator(self.app, "/ws/echo/")
        assert (await socket.connect(timeout=TIMEOUT))[0]
        return socket

    async def open(self) -> None:
        self.fuzzed, self.bystander = await self.connect(), await self.connect()

    async def close(self) -> None:
        for socket in (self.fuzzed, self.bystander):
            await close_quietly(socket)

    async def recover(self) -> None:
        """A fresh fuzzed connection if a failed example (run again by Hypothesis to report
        it) left this one in an unknown state."""
        if self.fuzzed.future.done() or not await self.fuzzed.receive_nothing(0):
            await close_quietly(self.fuzzed)
            self.fuzzed = await self.connect()

    async def exchange(self, data: str | bytes, expected: Any) -> None:
        """Send a frame and assert the one answer: the echo ``expected`` or a ``Close``."""
        if isinstance(data, bytes):
            await self.fuzzed.send_to(bytes_data=data)
        else:
            await self.fuzzed.send_to(text_data=data)
        message = await self.fuzzed.receive_output(TIMEOUT)
        if isinstance(expected, Close):
            assert message["type"] == "websocket.close", (data[:200], message)
            assert closed(message) == expected, (data[:200], message)
            await close_quietly(self.fuzzed)
            self.fuzzed = await self.connect()
            return
        assert message["type"] == "websocket.send", (data[:200], message)
        if isinstance(expected, str):
            assert message.get("text") == expected and message.get("bytes") is None
        else:
            assert message.get("bytes") == expected and message.get("text") is None
        assert await self.fuzzed.receive_nothing(0)

    async def check_bystander(self, number: int) -> None:
        assert await self.bystander.receive_nothing(0)
        frame = json.dumps({"type": "message", "text": f"still here {number}"})
        await self.bystander.send_to(text_data=frame)
        assert await self.bystander.receive_from(TIMEOUT) == frame
        assert await self.bystander.receive_nothing(0)


@pytest.fixture
async def json_consumers():
    pairs = [EchoPair(AsyncJsonEcho), EchoPair(SyncJsonEcho)]
    for pair in pairs:
        await pair.open()
    yield pairs
    for pair in pairs:
        await pair.close()


@pytest.fixture
async def text_consumers():
    pairs = [EchoPair(AsyncEcho), EchoPair(SyncEcho)]
    for pair in pairs:
        await pair.open()
    yield pairs
    for pair in pairs:
        await pair.close()


@fuzz_settings(FUZZ, max_examples=30)
@given(batch=st.lists(json_frames, min_size=50, max_size=60))
async def test_json_consumers_answer_every_frame(json_consumers, tally, caplog, batch):
    """The async and the sync JSON consumer each get every frame."""
    start = len(caplog.records)
    for pair in json_consumers:
        await pair.recover()
    for frame in batch:
        expected = json_echo_answer(frame.data)
        if isinstance(frame.claim, Close):
            assert expected == frame.claim, (frame.data[:200], expected)
        for pair in json_consumers:
            await pair.exchange(frame.data, expected)
            tally["frames"] += 1
            tally[label(expected) if isinstance(expected, Close) else "echoed"] += 1
            tally[f"kind: {frame.kind}"] += 1
    for pair in json_consumers:
        await pair.check_bystander(tally["frames"])
    assert_no_errors_since(caplog, start)


@fuzz_settings(FUZZ, max_examples=30)
@given(batch=st.lists(text_frames, min_size=60, max_size=70))
async def test_text_consumers_echo_every_frame(text_consumers, tally, caplog, batch):
    """The async and the sync text consumer each echo every frame."""
    start = len(caplog.records)
    for pair in text_consumers:
        await pair.recover()
    for data in batch:
        for pair in text_consumers:
            await pair.exchange(data, data)
            tally["frames"] += 1
            tally["bytes" if isinstance(data, bytes) else "text"] += 1
            if isinstance(data, bytes) and not _is_utf8(data):
                tally["invalid UTF-8 bytes"] += 1
            if isinstance(data, str) and SURROGATE.search(data):
                tally["text with lone surrogates"] += 1
            if len(data) >= 1_000_000:
                tally["1-2 MB"] += 1
    for pair in text_consumers:
        await pair.check_bystander(tally["frames"])
    assert_no_errors_since(caplog, start)


# The channel layer API ---------------------------------------------------------------------

NAME_CHARS = string.ascii_letters + string.digits + "-_."
SMALL_LIMIT = 4096  # max_message_size for these layers, so "too large" is cheap to reach
INT_MIN, INT_MAX = -(2**63), 2**64 - 1


def valid_group(name: Any) -> bool:
    return isinstance(name, str) and 0 < len(name) <= 100 and all(c in NAME_CHARS for c in name)


def valid_channel(name: Any) -> bool:
    if not isinstance(name, str) or len(name) > 100:
        return False
    shared, bang, local = name.partition("!")
    return valid_group(shared) and (not bang or all(c in NAME_CHARS for c in local))


group_names = st.text(NAME_CHARS, min_size=1, max_size=100)
local_names = st.tuples(
    st.text(NAME_CHARS, min_size=1, max_size=50), st.text(NAME_CHARS, max_size=49)
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
    (2, st.text(NAME_CHARS, min_size=101, max_size=300)),
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


def wire(value: Any) -> Any:
    """What a receiver gets back: tuples as lists, bytes-likes as bytes."""
    if isinstance(value, dict):
        return {key: wire(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [wire(item) for item in value]
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    return value


def same(left: Any, right: Any) -> bool:
    """Equal, with the same types all the way down (True is not 1), NaN equal to NaN."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(same(left[k], right[k]) for k in left)
    if isinstance(left, list):
        return len(left) == len(right) and all(map(same, left, right))
    if isinstance(left, float):
        return (math.isnan(left) and math.isnan(right)) or (
            left == right and math.copysign(1, left) == math.copysign(1, right)
        )
    return left == right


def encoded_size(message: dict) -> int:
    return len(msgpack.packb(message, use_bin_type=True))


sized_messages = st.builds(
    lambda kind, size: {"type": kind, "pad": "p" * size},
    st.text(max_size=5),
    st.integers(SMALL_LIMIT - 40, SMALL_LIMIT + 40),
)

LAYERS = {
    "memory": None,
    "redis": RedisChannelLayer,
    "pubsub": RedisPubSubChannelLayer,
}


@pytest.fixture(params=list(LAYERS))
async def layer(request, make_layer):
    if request.param == "memory":
        return InMemoryChannelLayer(max_message_size=SMALL_LIMIT)
    return make_layer(LAYERS[request.param], max_message_size=SMALL_LIMIT)


async def within(awaitable: Any) -> Any:
    return await asyncio.wait_for(awaitable, TIMEOUT)


@dataclass
class LayerFuzz:
    layer: Any
    tally: Counter

    @property
    def redis(self) -> bool:
        return not isinstance(self.layer, InMemoryChannelLayer)

    async def refused(self, call: Any, error: type, words: str) -> None:
        """``call`` must raise ``error`` at once, with ``words`` in its message."""
        with pytest.raises(error) as raised:
            await within(call)
        assert words in str(raised.value), (words, str(raised.value))
        self.tally["refused"] += 1

    def message_outcome(self, message: Any) -> tuple[type, str] | None:
        """The refusal a generated message must get, or None if it must arrive intact."""
        if not isinstance(message, dict):
            return TypeError, "must be a dict"
        if encoded_size(message) > SMALL_LIMIT:
            return MessageTooLarge, f"over the limit of {SMALL_LIMIT} bytes"
        return None

    async def receivable(self, name: str) -> str:
        """A channel named after ``name`` that this process may receive on."""
        if self.redis and "!" in name:
            return await within(self.layer.new_channel(name.partition("!")[0][:60]))
        return name

    async def still_empty(self, channel: str) -> None:
        """Nothing refused reached ``channel``: the next message received is a fresh one."""
        await within(self.layer.send(channel, {"type": "sentinel"}))
        assert await within(self.layer.receive(channel)) == {"type": "sentinel"}

    async def send(self, name: Any, message: Any, refusal: tuple[type, str] | None) -> None:
        self.tally["operations"] += 1
        if not valid_channel(name):
            await self.refused(self.layer.send(name, {"type": "x"}), TypeError, "Channel name")
            await self.refused(self.layer.receive(name), TypeError, "Channel name")
            return
        channel = await self.receivable(name)
        if refusal is None:
            refusal = self.message_outcome(message)
        if refusal:
            await self.refused(self.layer.send(channel, message), *refusal)
            await self.still_empty(channel)
            return
        await within(self.layer.send(channel, message))
        received = await within(self.layer.receive(channel))
        assert same(received, wire(message)), (received, message)
        self.tally["round trips"] += 1

    async def foreign(self, name: str) -> None:
        """Redis: another process's channel may be sent to but not received from."""
        self.tally["operations"] += 1
        await within(self.layer.send(name, {"type": "for.them"}))
        await self.refused(self.layer.receive(name), ValueError, "belongs to another process")

    async def group(self, group: Any, name: Any, message: Any, refusal: Any) -> None:
        self.tally["operations"] += 1
        layer = self.layer
        if not valid_group(group):
            channel = "fine"
            await self.refused(layer.group_add(group, channel), TypeError, "Group name")
            await self.refused(layer.group_send(group, {"type": "x"}), TypeError, "Group name")
            await self.refused(layer.group_discard(group, channel), TypeError, "Group name")
            return
        if not valid_channel(name):
            await self.refused(layer.group_add(group, name), TypeError, "Channel name")
            await self.refused(layer.group_discard(group, name), TypeError, "Channel name")
            return
        channel = await self.receivable(name)
        await within(layer.group_add(group, channel))
        if refusal is None:
            refusal = self.message_outcome(message)
        if refusal:
            await self.refused(layer.group_send(group, message), *refusal)
            await self.still_empty(channel)
        else:
            await within(layer.group_send(group, message))
            received = await within(layer.receive(channel))
            assert same(received, wire(message)), (received, message)
            self.tally["round trips"] += 1
        await within(layer.group_discard(group, channel))
        await within(layer.group_send(group, {"type": "after.discard"}))
        await self.still_empty(channel)

    async def new_channel(self, prefix: Any) -> None:
        self.tally["operations"] += 1
        owner = self.layer.client_prefix if self.redis else "inmemory"
        room = len(f".{owner}!") + 16
        if not (valid_group(prefix) and len(prefix) <= 100 - room):
            await self.refused(self.layer.new_channel(prefix), TypeError, "new_channel prefix")
            return
        channel = await within(self.layer.new_channel(prefix))
        assert valid_channel(channel) and channel.startswith(f"{prefix}.{owner}!")
        await within(self.layer.send(channel, {"type": "hello", "to": channel}))
        assert await within(self.layer.receive(channel)) == {"type": "hello", "to": channel}
        self.tally["round trips"] += 1


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


@fuzz_settings(FUZZ, max_examples=30)
@given(operations=st.lists(layer_operations, min_size=12, max_size=20))
async def test_layer_api_accepts_valid_input_and_refuses_the_rest(layer, tally, caplog, operations):
    """Valid names and encodable messages round-trip exactly (tuples come back as lists);
    an invalid name raises TypeError naming it; a defective message raises TypeError or
    ValueError naming the defect, at once, and reaches no one."""
    start = len(caplog.records)
    fuzz = LayerFuzz(layer, tally)
    for operation, *arguments in operations:
        if operation == "send":
            name, (message, refusal) = arguments
            await fuzz.send(name, message, refusal)
        elif operation == "group":
            group, name, (message, refusal) = arguments
            await fuzz.group(group, name, message, refusal)
        elif operation == "new_channel":
            await fuzz.new_channel(*arguments)
        elif fuzz.redis:
            await fuzz.foreign(*arguments)
        else:
            await fuzz.send(arguments[0], {"type": "local"}, None)
    assert_no_errors_since(caplog, start)


@pytest.mark.parametrize("depth", [2_000, 100_000])
async def test_a_too_deeply_nested_message_is_refused_with_a_clear_error(depth):
    layer = InMemoryChannelLayer()
    nested: Any = "bottom"
    for _ in range(depth):
        nested = [nested]
    with pytest.raises((TypeError, ValueError)):
        await layer.send("deep", {"type": "deep", "value": nested})
    await layer.send("deep", {"type": "after"})
    assert await layer.receive("deep") == {"type": "after"}


@pytest.mark.parametrize("consumer", [AsyncJsonEcho, SyncJsonEcho])
async def test_a_json_consumer_echoes_or_refuses_every_nesting_depth(consumer, caplog):
    """Ever deeper frames on one connection: each is echoed up to MAX_JSON_DEPTH, and the
    first one deeper is refused with 1007 (never a 1011 crash)."""
    socket = WebsocketCommunicator(consumer.as_asgi(), "/ws/echo/")
    assert (await socket.connect(timeout=TIMEOUT))[0]
    for depth in range(MAX_JSON_DEPTH - 20, 1200):
        frame = "[" * depth + "]" * depth
        await socket.send_to(text_data=frame)
        message = await socket.receive_output(TIMEOUT)
        if message["type"] == "websocket.close":
            break
        assert message["text"] == frame
    await close_quietly(socket)
    assert message["code"] == 1007, f"{depth} levels: {message}"
    assert depth == MAX_JSON_DEPTH + 1
    assert_no_errors_since(caplog, 0)


def test_the_fuzzing_sent_at_least_10000_frames():
    """Runs last (file order); meaningful only when the whole file ran."""
    missing = set(SHARES) - set(TOTALS)
    if missing:
        pytest.skip(f"{sorted(missing)} did not run")
    total = sum(TOTALS.values())
    print(f"\nframes sent to consumers: {total} {TOTALS}")
    assert total >= 10_000
