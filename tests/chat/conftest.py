"""Helpers for the chat tests: users, rooms and a communicator that has entered a room."""

import pytest
from django.contrib.auth import get_user_model

from chat import limits
from chat.models import Room
from consumers.testing import WebsocketCommunicator
from project.asgi import application

ORIGIN = {"origin": "http://localhost"}


async def enter(user, room: str = "lobby", expect_history: bool = True):
    """A communicator connected to ``room`` as ``user`` (None: anonymous), past its welcome."""
    socket = WebsocketCommunicator(application, f"/ws/chat/{room}/", headers=ORIGIN)
    if user is not None:
        await socket.force_login(user)
    connected, _ = await socket.connect()
    assert connected
    welcome = await socket.receive_json_from()
    assert welcome["type"] == "welcome", welcome
    history = await socket.receive_json_from()
    assert history["type"] == "history"
    socket.history = history["messages"]
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
def make_user(chat_db):
    async def make(name: str):
        return await get_user_model().objects.acreate(username=name)

    return make


@pytest.fixture
def make_room(chat_db):
    async def make(name: str = "lobby", private: bool = False, members=()):
        room = await Room.objects.acreate(name=name, private=private)
        for member in members:
            await room.members.aadd(member)
        return room

    return make
