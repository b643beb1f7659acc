"""Fuzzing the chat consumer with Hypothesis: generated frames (tests/fuzzing.py) from a
logged-in and an anonymous connection, each with one documented answer decided before it is
sent and asserted after (chat/consumers.py's docstring): a posted message, an ``error`` event
with a given code, silence (a typing notice), or a close (1003, 1007, 4029 for flooding).
Connections live for a whole test and are reopened only when a frame closes them; after
every batch, connections that were not fuzzed must still work. No record at ERROR or above
(a "crashed" traceback) may be logged.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from hypothesis import given
from hypothesis import settings as fuzz_settings
from hypothesis import strategies as st

from chat import limits
from chat.consumers import CLOSE_RATE_LIMITED, UNSTORABLE
from chat.models import Room
from consumers.testing import WebsocketCommunicator
from project.asgi import application
from tests.chat.conftest import ORIGIN
from tests.fuzzing import (
    CHAT_FRAMES,
    FUZZ,
    MAX_LENGTH,
    TIMEOUT,
    Close,
    Error,
    Frame,
    Posted,
    Silence,
    assert_no_errors_since,
    chat_frames,
    close_quietly,
    closed,
    label,
    mix,
    parse,
)


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


ROOM = "fuzz"
ROOM_TRAFFIC = {"presence", "typing", "moderated"}


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


@pytest.mark.sends(frames=CHAT_FRAMES)
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


@pytest.mark.sends(frames=40)  # 20 examples of at least 2 frames
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
