"""Helpers for the chat tests: users, rooms and a communicator that has entered a room."""

import asyncio

import pytest
from django.contrib.auth import get_user_model

from chat import limits
from chat.models import Room
from consumers.testing import WebsocketCommunicator
from project.asgi import application

ORIGIN_URL = "http://localhost"
ORIGIN = {"origin": ORIGIN_URL}

_open: list[WebsocketCommunicator] = []


def socket_to(path: str, origin: str | None = ORIGIN_URL, cookie: str | None = None):
    """A communicator for ``path`` with these Origin and Cookie headers (None: no header),
    stopped after the test if the test leaves it running. The headers go as raw bytes, as a
    client that is not a browser may send them (UTF-8 look-alikes too)."""
    headers = []
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    if cookie is not None:
        headers.append((b"cookie", cookie.encode()))
    socket = WebsocketCommunicator(application, path, headers=headers)
    _open.append(socket)
    return socket


@pytest.fixture(autouse=True)
async def stop_sockets_left_open():
    """Sockets a failed test left open are stopped, so their consumers do not outlive it."""
    yield
    while _open:
        socket = _open.pop()
        if socket._future is not None and not socket._future.done():
            socket._future.cancel()
            await asyncio.gather(socket._future, return_exceptions=True)


async def enter(user, room: str = "lobby", origin: str = ORIGIN_URL, past_presence: bool = False):
    """A communicator connected to ``room`` as ``user`` (None: anonymous), past its welcome
    (kept as ``socket.welcome``) and history (``socket.history``); with ``past_presence``,
    past the presence list its own join published too (a logged-in user only)."""
    socket = socket_to(f"/ws/chat/{room}/", origin)
    if user is not None:
        await socket.force_login(user)
    connected, _ = await socket.connect()
    assert connected
    welcome = await socket.receive_json_from()
    assert welcome["type"] == "welcome", welcome
    socket.welcome = welcome
    history = await socket.receive_json_from()
    assert history["type"] == "history", history
    socket.history = history["messages"]
    if past_presence and user is not None:
        await next_of(socket, "presence")
    return socket


async def next_of(socket, kind: str, timeout: float = 2):
    """The next event of type ``kind``, skipping others (presence heartbeats, typing)."""
    while True:
        event = await socket.receive_json_from(timeout=timeout)
        if event["type"] == kind:
            return event


@pytest.fixture(autouse=True)
def fresh_limits():
    """Rate and socket counts of this process start empty in each test."""
    limits.reset()
    yield
    limits.reset()


@pytest.fixture
def chat_db(transactional_db, settings):
    settings.CHAT_PRESENCE_INTERVAL = 0.2
    settings.CHAT_MODERATION_INLINE = True


@pytest.fixture
def quiet_chat(transactional_db, settings):
    """The chat's database, inline moderation and presence quiet after each join (no
    heartbeats during a test), so that "receives nothing" means nothing."""
    settings.CHAT_PRESENCE_INTERVAL = 60
    settings.CHAT_MODERATION_INLINE = True


async def new_user(name: str):
    return await get_user_model().objects.acreate(username=name)


async def new_room(name: str = "lobby", private: bool = False, members=()) -> Room:
    room = await Room.objects.acreate(name=name, private=private)
    for member in members:
        await room.members.aadd(member)
    return room


async def outputs(socket, timeout: float = 0.2) -> list[dict]:
    """Everything ``socket`` is sent within ``timeout`` seconds of quiet."""
    received = []
    while not await socket.receive_nothing(timeout):
        received.append(await socket.receive_output())
    return received


@pytest.fixture
def make_user(chat_db):
    return new_user


@pytest.fixture
def make_room(chat_db):
    return new_room
