"""consumers/users.py: per-user delivery, and sockets that end with their session."""

from __future__ import annotations

import asyncio
import time

import pytest
from django.contrib.auth import get_user_model, logout
from django.contrib.sessions.models import Session
from django.db import connection
from django.http import HttpRequest
from django.test import Client

from channels_layer import channel_layers
from consumers import users
from consumers.auth import AuthMiddlewareStack
from consumers.db import database_sync_to_async
from consumers.generic.websocket import AsyncWebsocketConsumer, WebsocketConsumer
from consumers.testing import WebsocketCommunicator
from consumers.users import (
    CLOSE_SESSION_ENDED,
    SyncUserSocketMixin,
    UserSocketMixin,
    user_group,
)
from tests.consumers.session_store import store
from tests.redis_servers import REDIS_URL

pytestmark = pytest.mark.django_db(transaction=True)


class Me(UserSocketMixin, AsyncWebsocketConsumer):
    async def connect(self):
        await self.accept()

    async def notify(self, event):
        await self.send(text_data=event["text"])


class SyncMe(SyncUserSocketMixin, WebsocketConsumer):
    def connect(self):
        self.accept()

    def notify(self, event):
        self.send(text_data=event["text"])


application = AuthMiddlewareStack(Me.as_asgi())
sync_application = AuthMiddlewareStack(SyncMe.as_asgi())


@pytest.fixture(autouse=True)
def memory_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels_layer.memory.InMemoryChannelLayer"}}
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    channel_layers.reset()


@pytest.fixture
def signals():
    """The receivers on (the chat app turns them on too: connecting is idempotent)."""
    users.connect_signals()


@database_sync_to_async
def user_with_sessions(name: str, count: int) -> tuple:
    """A user and the keys of ``count`` sessions logged in by Django (as browsers hold)."""
    user = get_user_model().objects.create_user(username=name, password="pw")
    keys = []
    for _ in range(count):
        client = Client()
        client.force_login(user)
        keys.append(client.cookies["sessionid"].value)
    return user, keys


async def open_socket(session_key: str | None, app=application) -> WebsocketCommunicator:
    headers = [(b"cookie", f"sessionid={session_key}".encode())] if session_key else []
    socket = WebsocketCommunicator(app, "/", headers=headers)
    assert (await socket.connect())[0]
    return socket


async def closed_within(socket: WebsocketCommunicator, seconds: float) -> tuple:
    started = time.monotonic()
    close = await socket.receive_close(timeout=seconds)
    return close, time.monotonic() - started


async def test_send_to_user_reaches_every_socket_of_that_user_only():
    ada, (one, two) = await user_with_sessions("ada", 2)
    _, (bobs,) = await user_with_sessions("bob", 1)
    sockets = [await open_socket(one), await open_socket(one), await open_socket(two)]
    bob, anonymous = await open_socket(bobs), await open_socket(None)
    await users.asend_to_user(ada.pk, {"type": "notify", "text": "hi ada"})
    for socket in sockets:
        assert await socket.receive_from() == "hi ada"
    assert await bob.receive_nothing() and await anonymous.receive_nothing()
    for socket in (*sockets, bob, anonymous):
        await socket.disconnect()


async def test_disconnect_user_closes_all_their_sockets_with_the_code():
    ada, (one, two) = await user_with_sessions("ada", 2)
    _, (bobs,) = await user_with_sessions("bob", 1)
    adas, bob = [await open_socket(one), await open_socket(two)], await open_socket(bobs)
    await users.adisconnect_user(ada.pk, 4000, "bye")
    for socket in adas:
        assert await socket.receive_close() == (4000, "bye")
    assert await bob.receive_nothing()
    await bob.disconnect()


async def test_send_to_user_crosses_processes_on_redis(settings, make_layer):
    prefix = f"test-users-{time.monotonic_ns()}"
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_layer.redis.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "prefix": prefix},
        }
    }
    channel_layers.reset()
    ada, (key,) = await user_with_sessions("ada", 1)
    socket = await open_socket(key)
    other_process = make_layer(prefix=prefix)
    await other_process.group_send(user_group(ada.pk), {"type": "notify", "text": "from afar"})
    assert await socket.receive_from(timeout=2) == "from afar"
    await other_process.group_send(
        user_group(ada.pk), {"type": users.DISCONNECT, "code": CLOSE_SESSION_ENDED}
    )
    assert (await socket.receive_close(timeout=2))[0] == CLOSE_SESSION_ENDED
    await other_process.flush()


@database_sync_to_async
def django_logout(user, session_key: str) -> None:
    request = HttpRequest()
    request.session = store(session_key)
    request.user = user
    logout(request)


@pytest.mark.usefixtures("signals")
async def test_logging_out_closes_that_sessions_sockets_within_a_second():
    ada, (leaving, staying) = await user_with_sessions("ada", 2)
    tabs = [await open_socket(leaving), await open_socket(leaving)]
    other_device = await open_socket(staying)
    await django_logout(ada, leaving)
    for tab in tabs:
        close, took = await closed_within(tab, 1)
        assert close == (CLOSE_SESSION_ENDED, "session ended") and took < 1
    # Another session of the same user is still logged in.
    assert await other_device.receive_nothing(0.3)
    await other_device.disconnect()


@pytest.mark.usefixtures("signals")
async def test_a_flushed_session_closes_its_sockets():
    _, (key,) = await user_with_sessions("ada", 1)
    socket = await open_socket(key)
    await database_sync_to_async(lambda: store(key).flush())()
    close, took = await closed_within(socket, 1)
    assert close[0] == CLOSE_SESSION_ENDED and took < 1


@pytest.mark.usefixtures("signals")
async def test_a_password_change_closes_every_session_of_the_user():
    ada, (one, two) = await user_with_sessions("ada", 2)
    _, (bobs,) = await user_with_sessions("bob", 1)
    sockets, bob = [await open_socket(one), await open_socket(two)], await open_socket(bobs)

    @database_sync_to_async
    def change_password():
        ada.set_password("new")
        ada.save()

    await change_password()
    for socket in sockets:
        close, took = await closed_within(socket, 1)
        assert close[0] == CLOSE_SESSION_ENDED and took < 1
    assert await bob.receive_nothing()
    await bob.disconnect()


@pytest.mark.usefixtures("signals")
async def test_a_login_elsewhere_closes_nothing():
    ada, (key,) = await user_with_sessions("ada", 1)
    socket = await open_socket(key)
    await user_with_sessions("ada-again", 1)
    await database_sync_to_async(lambda: Client().force_login(ada))()  # saves last_login
    assert await socket.receive_nothing(0.3)
    await socket.disconnect()


@database_sync_to_async
def delete_behind_djangos_back(session_key: str) -> None:
    """Raw SQL: no signal tells anyone."""
    with connection.cursor() as cursor:
        table = Session._meta.db_table
        cursor.execute(f"DELETE FROM {table} WHERE session_key = %s", [session_key])


async def test_a_session_deleted_without_signals_is_caught_by_the_periodic_check(settings):
    settings.CONSUMERS_SESSION_CHECK_INTERVAL = 0.2
    _, (gone, kept) = await user_with_sessions("ada", 2)
    doomed, survivor = await open_socket(gone), await open_socket(kept)
    await delete_behind_djangos_back(gone)
    close, took = await closed_within(doomed, 1)
    assert close[0] == CLOSE_SESSION_ENDED and took < 0.2 + 0.5
    assert await survivor.receive_nothing(0.5)
    for socket in (doomed, survivor):
        await socket.disconnect()
    # Closed sockets leave the check, and the check's task ends with the last of them.
    check = users._checks[id(asyncio.get_running_loop()), id(channel_layers["default"])]
    assert not check.sockets
    await asyncio.wait_for(check.task, 1)


@pytest.mark.usefixtures("signals")
async def test_sync_consumers_get_the_same_per_user_delivery_and_session_binding():
    ada, (leaving, staying) = await user_with_sessions("ada", 2)
    tab, other = (
        await open_socket(leaving, sync_application),
        await open_socket(staying, sync_application),
    )
    await users.asend_to_user(ada.pk, {"type": "notify", "text": "hi"})
    assert [await tab.receive_from(), await other.receive_from()] == ["hi", "hi"]
    await django_logout(ada, leaving)
    close, took = await closed_within(tab, 1)
    assert close == (CLOSE_SESSION_ENDED, "session ended") and took < 1
    assert await other.receive_nothing(0.3)

    @database_sync_to_async
    def change_password():
        ada.set_password("new")
        ada.save()

    await change_password()
    assert (await closed_within(other, 1))[0][0] == CLOSE_SESSION_ENDED
    for socket in (tab, other):
        await socket.disconnect()
