"""AuthMiddleware, get_user, login and logout on HTTP and WebSocket scopes."""

import pytest
from asgiref.testing import ApplicationCommunicator
from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, get_user_model, user_logged_in, user_logged_out
from django.contrib.auth.models import AnonymousUser
from django.contrib.sessions.models import Session
from django.test import Client, override_settings

from consumers.auth import (
    AuthMiddleware,
    AuthMiddlewareStack,
    UserLazyObject,
    get_user,
    login,
    logout,
)
from consumers.db import database_sync_to_async
from consumers.types import Receive, Scope, Send
from tests.consumers.session_store import saved_session, store

COOKIE = settings.SESSION_COOKIE_NAME
MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # The default hasher costs ~100 ms a password by design; these tests need no strength.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@database_sync_to_async
def create_user(username: str = "alice", password: str = "correct horse"):
    return get_user_model().objects.create_user(username=username, password=password)


@database_sync_to_async
def django_login_cookie(user) -> str:
    """A session key logged in by Django's own login(), as a browser would hold it."""
    client = Client()
    client.force_login(user)
    return client.cookies[COOKIE].value


@database_sync_to_async
def change_password(user, password: str) -> None:
    user.set_password(password)
    user.save()


@database_sync_to_async
def session_exists(session_key: str) -> bool:
    return Session.objects.filter(session_key=session_key).exists()


@database_sync_to_async
def load(session_key: str) -> dict:
    return dict(store(session_key).items())


class Connection:
    """Runs one WebSocket connection through AuthMiddlewareStack.

    The app calls ``on_connect(scope)`` when the handshake arrives, then accepts; it keeps
    the scope it saw in ``self.scope``.
    """

    def __init__(self, on_connect=None, cookie: str | None = None) -> None:
        self.on_connect = on_connect
        self.scope: Scope | None = None
        headers = [(b"cookie", f"{COOKIE}={cookie}".encode())] if cookie else []
        self.communicator = ApplicationCommunicator(
            AuthMiddlewareStack(self.app), {"type": "websocket", "path": "/ws/", "headers": headers}
        )

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        await receive()
        if self.on_connect is not None:
            await self.on_connect(scope)
        await send({"type": "websocket.accept"})
        await receive()

    async def run(self) -> Scope:
        await self.communicator.send_input({"type": "websocket.connect"})
        assert await self.communicator.receive_output() == {"type": "websocket.accept"}
        await self.communicator.send_input({"type": "websocket.disconnect", "code": 1000})
        await self.communicator.wait()
        assert self.scope is not None
        return self.scope


async def connect(cookie: str | None = None, on_connect=None) -> Scope:
    return await Connection(on_connect, cookie).run()


# --- Missing session --------------------------------------------------------------------


async def test_auth_middleware_without_session_raises_a_clear_error():
    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("must not be called")

    with pytest.raises(ValueError, match=r"SessionMiddleware.*AuthMiddlewareStack"):
        await AuthMiddleware(inner)({"type": "websocket", "cookies": {}}, None, None)


@pytest.mark.parametrize("call", [get_user, logout])
async def test_functions_without_session_raise_a_clear_error(call):
    with pytest.raises(ValueError, match="SessionMiddleware"):
        await call({"type": "websocket"})


async def test_login_without_session_raises_a_clear_error():
    with pytest.raises(ValueError, match="SessionMiddleware"):
        await login({"type": "websocket"}, get_user_model()(username="x"))


# --- Resolving the user -----------------------------------------------------------------


async def test_no_cookie_gives_anonymous_user_without_a_query():
    # No django_db mark: any query would fail the test.
    scope = await connect()
    assert isinstance(scope["user"], UserLazyObject)
    assert scope["user"].is_anonymous


@pytest.mark.django_db(transaction=True)
async def test_valid_session_cookie_gives_that_user():
    user = await create_user()
    scope = await connect(cookie=await django_login_cookie(user))
    assert scope["user"].pk == user.pk
    assert scope["user"].is_authenticated
    assert isinstance(scope["user"], get_user_model())


@pytest.mark.django_db(transaction=True)
async def test_user_is_loaded_before_the_app_runs_so_event_loop_reads_are_safe():
    user = await create_user()
    seen = {}

    async def on_connect(scope: Scope) -> None:
        # On the event loop: a lazy database load here would raise SynchronousOnlyOperation.
        seen["username"] = scope["user"].username

    await connect(cookie=await django_login_cookie(user), on_connect=on_connect)
    assert seen == {"username": "alice"}


def test_unresolved_user_lazy_object_explains_itself():
    # ValueError, as Channels raises there.
    with pytest.raises(ValueError, match="get_user"):
        _ = UserLazyObject().pk


async def seen_user(application, scope: Scope):
    """The ``scope["user"]`` the application below ``application`` is called with."""
    seen = {}

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        seen["user"] = scope["user"]

    await application(inner)(scope, None, None)
    return seen["user"]


async def test_a_user_already_in_the_scope_is_kept_as_in_channels():
    # Channels' tests commonly set communicator.scope["user"] before connecting.
    user = get_user_model()(username="preset", pk=7)
    scope = {"type": "websocket", "headers": [], "user": user}
    assert await seen_user(AuthMiddlewareStack, scope) is user


async def test_resolve_scope_can_be_overridden_as_in_channels():
    token_user = get_user_model()(username="token", pk=8)

    class TokenAuthMiddleware(AuthMiddleware):
        async def resolve_scope(self, scope):
            scope["user"]._wrapped = token_user

    scope = {"type": "websocket", "session": store()}
    user = await seen_user(TokenAuthMiddleware, scope)
    assert isinstance(user, UserLazyObject)
    assert user.username == "token"


@pytest.mark.django_db(transaction=True)
async def test_password_change_logs_the_session_out_and_flushes_it():
    user = await create_user()
    key = await django_login_cookie(user)
    await change_password(user, "a new password")
    scope = await connect(cookie=key)
    assert isinstance(scope["user"]._wrapped, AnonymousUser)
    assert not await session_exists(key)


@pytest.mark.django_db(transaction=True)
async def test_session_of_a_backend_no_longer_configured_is_anonymous():
    user = await create_user()
    key = await django_login_cookie(user)
    with override_settings(
        AUTHENTICATION_BACKENDS=["django.contrib.auth.backends.RemoteUserBackend"]
    ):
        scope = await connect(cookie=key)
    assert scope["user"].is_anonymous


@pytest.mark.django_db(transaction=True)
async def test_hash_made_with_a_fallback_secret_key_is_upgraded_keeping_the_websocket_key():
    user = await create_user()
    key = await django_login_cookie(user)
    with override_settings(
        SECRET_KEY="a-brand-new-secret-key", SECRET_KEY_FALLBACKS=[settings.SECRET_KEY]
    ):
        scope = await connect(cookie=key)
        assert scope["user"].is_authenticated
        # The browser cannot learn a new key over a WebSocket, so it keeps this one.
        assert scope["session"].session_key == key
        assert (await load(key))[HASH_SESSION_KEY] == user.get_session_auth_hash()


@pytest.mark.django_db(transaction=True)
async def test_get_user_on_an_http_scope():
    user = await create_user()
    key = await django_login_cookie(user)
    assert (await get_user({"type": "http", "session": store(key)})).pk == user.pk


# --- login ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_login_saves_the_session_so_a_new_connection_is_authenticated():
    user = await create_user()
    seen = {}

    async def on_connect(scope: Scope) -> None:
        await login(scope, user)
        key = scope["session"].session_key
        seen["saved_before_accept"] = await session_exists(key)
        seen["key"] = key
        seen["user"] = scope["user"]

    first = await connect(on_connect=on_connect)
    assert first["user"] is user
    assert seen["saved_before_accept"]
    second = await connect(cookie=seen["key"])
    assert second["user"].pk == user.pk
    assert second["user"].is_authenticated


@pytest.mark.django_db(transaction=True)
async def test_login_cycles_the_session_key_and_keeps_anonymous_data():
    user = await create_user()
    old_key = await saved_session(cart=[1, 2])

    async def on_connect(scope: Scope) -> None:
        await login(scope, user)

    scope = await connect(cookie=old_key, on_connect=on_connect)
    new_key = scope["session"].session_key
    assert new_key != old_key
    assert not await session_exists(old_key)
    assert (await load(new_key))["cart"] == [1, 2]


@pytest.mark.django_db(transaction=True)
async def test_login_over_another_users_session_drops_their_data():
    alice = await create_user("alice")
    bob = await create_user("bob")
    alice_key = await django_login_cookie(alice)

    async def on_connect(scope: Scope) -> None:
        await database_sync_to_async(scope["session"].__setitem__)("alice_secret", 1)
        await login(scope, bob)

    scope = await connect(cookie=alice_key, on_connect=on_connect)
    data = await load(scope["session"].session_key)
    assert "alice_secret" not in data
    assert (await connect(cookie=scope["session"].session_key))["user"].pk == bob.pk


@pytest.mark.django_db(transaction=True)
async def test_login_sends_user_logged_in():
    user = await create_user()
    received = []

    def receiver(sender, user, request, **kwargs):
        received.append((sender, user, request))

    user_logged_in.connect(receiver)
    try:
        await connect(on_connect=lambda scope: login(scope, user))
    finally:
        user_logged_in.disconnect(receiver)
    assert received == [(get_user_model(), user, None)]


async def test_login_needs_a_backend_when_several_are_configured():
    backends = [MODEL_BACKEND, "django.contrib.auth.backends.AllowAllUsersModelBackend"]
    with (
        override_settings(AUTHENTICATION_BACKENDS=backends),
        pytest.raises(ValueError, match="backend="),
    ):
        await login({"session": store()}, get_user_model()(username="x"))


async def test_login_with_no_user_and_none_in_the_scope_is_refused():
    with pytest.raises(ValueError, match="scope\\['user'\\]"):
        await login({"session": store()}, None)


async def test_login_refuses_an_anonymous_user():
    with pytest.raises(ValueError, match="anonymous"):
        await login({"session": store(), "user": AnonymousUser()})


@pytest.mark.django_db(transaction=True)
async def test_login_without_a_user_logs_in_scope_user():
    user = await create_user()
    scope = {"type": "websocket", "session": store(), "user": user}
    await login(scope, backend=MODEL_BACKEND)
    assert scope["user"] is user
    assert (await get_user({"type": "websocket", "session": scope["session"]})).pk == user.pk


@pytest.mark.django_db(transaction=True)
async def test_login_uses_the_backend_that_authenticate_set():
    user = await create_user()
    user.backend = "django.contrib.auth.backends.AllowAllUsersModelBackend"
    backends = [MODEL_BACKEND, user.backend]
    with override_settings(AUTHENTICATION_BACKENDS=backends):
        scope = {"type": "websocket", "session": store()}
        await login(scope, user)
        assert (
            await get_user({"type": "websocket", "session": store(scope["session"].session_key)})
        ).pk == user.pk


# --- logout -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_logout_makes_later_connections_anonymous():
    user = await create_user()
    key = await django_login_cookie(user)
    received = []

    def receiver(sender, user, request, **kwargs):
        received.append(user.pk)

    user_logged_out.connect(receiver)
    try:
        scope = await connect(cookie=key, on_connect=logout)
    finally:
        user_logged_out.disconnect(receiver)
    assert isinstance(scope["user"], AnonymousUser)
    assert received == [user.pk]
    assert not await session_exists(key)
    assert (await connect(cookie=key))["user"].is_anonymous


async def test_logout_with_nobody_logged_in_sends_no_signal_and_adds_no_user():
    received = []

    def receiver(sender, user, request, **kwargs):
        received.append(user)

    user_logged_out.connect(receiver)
    try:
        anonymous = {"session": store(), "user": AnonymousUser()}
        await logout(anonymous)
        without_user: Scope = {"session": store()}
        await logout(without_user)
    finally:
        user_logged_out.disconnect(receiver)
    assert received == []
    assert isinstance(anonymous["user"], AnonymousUser)
    assert "user" not in without_user
