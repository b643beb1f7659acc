"""Cookies and sessions in the scope, and when sessions are saved over HTTP and WebSocket."""

import pytest
from asgiref.testing import ApplicationCommunicator
from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase
from django.contrib.sessions.exceptions import SessionInterrupted as DjangoSessionInterrupted
from django.core.exceptions import SuspiciousOperation
from django.test import override_settings

from consumers.db import database_sync_to_async
from consumers.sessions import (
    CookieMiddleware,
    SessionMiddleware,
    SessionMiddlewareStack,
    save_session,
)
from consumers.types import Receive, Scope, Send
from tests.consumers.session_store import saved_session, store

COOKIE = settings.SESSION_COOKIE_NAME


class ScopeRecorder:
    def __init__(self) -> None:
        self.scope: Scope | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope


def response_start(**extra) -> dict:
    return {"type": "http.response.start", "status": 200, "headers": [], **extra}


def set_cookie_headers(message: dict) -> list[str]:
    # Channels writes the name as b"Set-Cookie"; tests written for it compare it exactly.
    return [value.decode("latin-1") for name, value in message["headers"] if name == b"Set-Cookie"]


@database_sync_to_async
def load(session_key: str) -> dict:
    return dict(store(session_key).items())


def cookie_header(value: str) -> tuple[bytes, bytes]:
    return (b"cookie", value.encode("latin-1"))


async def run(app, scope: Scope) -> Scope:
    recorder = ScopeRecorder()
    await app(recorder)(scope, _never_receive, _discard)
    assert recorder.scope is not None
    return recorder.scope


async def _never_receive() -> dict:
    raise AssertionError("receive() should not be called")


async def _discard(message: dict) -> None:
    pass


# --- CookieMiddleware -------------------------------------------------------------------


async def test_cookies_are_parsed_into_the_scope():
    scope = await run(
        CookieMiddleware, {"type": "http", "headers": [cookie_header("a=1; theme=dark")]}
    )
    assert scope["cookies"] == {"a": "1", "theme": "dark"}


async def test_several_cookie_headers_are_joined():
    headers = [cookie_header("a=1"), (b"accept", b"*/*"), cookie_header("b=2; c=3")]
    scope = await run(CookieMiddleware, {"type": "websocket", "headers": headers})
    assert scope["cookies"] == {"a": "1", "b": "2", "c": "3"}


async def test_no_cookie_header_gives_empty_cookies():
    scope = await run(CookieMiddleware, {"type": "http", "headers": [(b"host", b"x")]})
    assert scope["cookies"] == {}


async def test_cookie_bytes_are_decoded_as_latin_1():
    scope = await run(CookieMiddleware, {"type": "http", "headers": [(b"cookie", b"n=caf\xe9")]})
    assert scope["cookies"] == {"n": "café"}


def test_set_cookie_appends_a_set_cookie_header_with_all_attributes():
    message = response_start(headers=[(b"content-type", b"text/plain")])
    CookieMiddleware.set_cookie(
        message, "token", "abc", max_age=60, domain="example.com", secure=True, httponly=True
    )
    assert message["headers"][0] == (b"content-type", b"text/plain")
    [header] = set_cookie_headers(message)
    assert header.startswith("token=abc; ")
    for part in ("Max-Age=60", "Path=/", "Domain=example.com", "Secure", "HttpOnly"):
        assert part in header
    assert "expires=" in header
    assert "; SameSite=lax;" in header  # Channels' default, written as given


def test_set_cookie_does_not_modify_the_callers_header_tuple():
    original = ((b"x-a", b"1"),)
    message = response_start(headers=original)
    CookieMiddleware.set_cookie(message, "k", "v")
    assert original == ((b"x-a", b"1"),)
    assert len(message["headers"]) == 2


@pytest.mark.parametrize(
    ("samesite", "expected"), [("strict", "SameSite=strict"), ("None", "SameSite=None")]
)
def test_set_cookie_accepts_samesite_in_any_case_and_writes_it_as_given(samesite, expected):
    message = response_start()
    CookieMiddleware.set_cookie(message, "k", "v", samesite=samesite)
    assert expected in set_cookie_headers(message)[0]


def test_set_cookie_without_samesite_omits_the_attribute():
    message = response_start()
    CookieMiddleware.set_cookie(message, "k", "v", samesite=None)
    assert "SameSite" not in set_cookie_headers(message)[0]


def test_set_cookie_rejects_an_unknown_samesite():
    with pytest.raises(ValueError, match="samesite must be"):
        CookieMiddleware.set_cookie(response_start(), "k", "v", samesite="sometimes")


@pytest.mark.parametrize("message", [{}, {"type": "websocket.accept"}, {"type": "custom"}])
def test_set_cookie_writes_set_cookie_on_any_message_dict(message):
    CookieMiddleware.set_cookie(message, "k", "v")
    assert set_cookie_headers(message)[0].startswith("k=v; ")


def test_set_cookie_appends_to_the_messages_own_header_list():
    headers = [(b"x-a", b"1")]
    CookieMiddleware.set_cookie(response_start(headers=headers), "k", "v")
    assert [name for name, _ in headers] == [b"x-a", b"Set-Cookie"]


def test_delete_cookie_expires_the_cookie():
    message = response_start()
    CookieMiddleware.delete_cookie(message, "token", path="/app", domain="example.com")
    [header] = set_cookie_headers(message)
    assert header.startswith('token=""; ')
    for part in ("expires=Thu, 01 Jan 1970 00:00:00 GMT", "Max-Age=0", "Path=/app"):
        assert part in header
    assert "Domain=example.com" in header


# --- SessionMiddleware: the scope -------------------------------------------------------


async def test_session_middleware_without_cookies_names_cookie_middleware():
    with pytest.raises(ValueError, match="CookieMiddleware"):
        await run(SessionMiddleware, {"type": "http"})


async def test_session_is_lazy_and_keyed_by_the_cookie():
    # No django_db mark: any query here would fail the test.
    scope = await run(
        SessionMiddlewareStack,
        {
            "type": "websocket",
            "headers": [cookie_header(f"{COOKIE}=abcdefghijklmnopqrstuvwxyz123456")],
        },
    )
    session = scope["session"]
    assert isinstance(session, SessionBase)
    assert session.session_key == "abcdefghijklmnopqrstuvwxyz123456"
    assert not session.accessed
    assert not hasattr(session, "_session_cache")


async def test_without_cookie_the_session_is_new():
    scope = await run(SessionMiddlewareStack, {"type": "http", "headers": []})
    assert scope["session"].session_key is None


# --- SessionMiddleware over HTTP --------------------------------------------------------


def http_app(change_session, status: int = 200):
    """An HTTP app that runs ``change_session(session)`` in the pool, then responds."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await database_sync_to_async(change_session)(scope["session"])
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


async def http_request(app, cookie: str | None = None) -> dict:
    headers = [cookie_header(f"{COOKIE}={cookie}")] if cookie else []
    communicator = ApplicationCommunicator(
        SessionMiddlewareStack(app),
        {"type": "http", "method": "GET", "path": "/", "headers": headers},
    )
    await communicator.send_input({"type": "http.request", "body": b""})
    start = await communicator.receive_output()
    assert (await communicator.receive_output())["type"] == "http.response.body"
    await communicator.wait()
    return start


def session_cookie_value(start: dict) -> str:
    [header] = [h for h in set_cookie_headers(start) if h.startswith(f"{COOKIE}=")]
    return header.split(";", 1)[0].split("=", 1)[1]


@pytest.mark.django_db(transaction=True)
async def test_http_response_saves_a_modified_session_and_sets_its_cookie():
    start = await http_request(http_app(lambda session: session.__setitem__("cart", [1, 2])))
    [header] = set_cookie_headers(start)
    for part in ("HttpOnly", "Path=/", f"Max-Age={settings.SESSION_COOKIE_AGE}", "SameSite=Lax"):
        assert part in header
    assert await load(session_cookie_value(start)) == {"cart": [1, 2]}


@pytest.mark.django_db(transaction=True)
async def test_http_response_leaves_an_unmodified_session_alone():
    key = await saved_session(cart=[1])
    start = await http_request(http_app(lambda session: session.get("cart")), cookie=key)
    assert set_cookie_headers(start) == []


@pytest.mark.django_db(transaction=True)
async def test_http_response_with_save_every_request_refreshes_the_cookie():
    key = await saved_session(cart=[1])
    with override_settings(SESSION_SAVE_EVERY_REQUEST=True):
        start = await http_request(http_app(lambda session: None), cookie=key)
    assert session_cookie_value(start) == key


@pytest.mark.django_db(transaction=True)
async def test_http_response_deletes_the_cookie_of_an_emptied_session():
    key = await saved_session(cart=[1])
    start = await http_request(http_app(lambda session: session.flush()), cookie=key)
    [header] = set_cookie_headers(start)
    assert header.startswith(f'{COOKIE}=""; ')
    assert "Max-Age=0" in header


@pytest.mark.django_db(transaction=True)
async def test_http_server_error_does_not_save_the_session():
    key = await saved_session(cart=[1])
    start = await http_request(
        http_app(lambda session: session.__setitem__("cart", []), status=500), cookie=key
    )
    assert set_cookie_headers(start) == []
    assert await load(key) == {"cart": [1]}


@pytest.mark.django_db(transaction=True)
async def test_http_browser_close_sessions_get_a_cookie_without_expiry():
    with override_settings(SESSION_EXPIRE_AT_BROWSER_CLOSE=True):
        start = await http_request(http_app(lambda session: session.__setitem__("a", 1)))
    [header] = set_cookie_headers(start)
    assert "Max-Age" not in header
    assert "expires" not in header


# --- SessionMiddleware over WebSocket ---------------------------------------------------


async def websocket_session(app, cookie: str | None = None) -> ApplicationCommunicator:
    headers = [cookie_header(f"{COOKIE}={cookie}")] if cookie else []
    communicator = ApplicationCommunicator(
        SessionMiddlewareStack(app), {"type": "websocket", "path": "/ws/", "headers": headers}
    )
    await communicator.send_input({"type": "websocket.connect"})
    return communicator


@pytest.mark.django_db(transaction=True)
async def test_websocket_session_modified_before_accept_is_saved_when_accept_is_sent():
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await database_sync_to_async(scope["session"].__setitem__)("room", "lobby")
        await send({"type": "websocket.accept"})
        await receive()

    key = await saved_session(cart=[1])
    communicator = await websocket_session(app, cookie=key)
    assert await communicator.receive_output() == {"type": "websocket.accept"}
    # Saved before the accept went out, while the connection is still open.
    assert await load(key) == {"cart": [1], "room": "lobby"}
    await communicator.send_input({"type": "websocket.disconnect", "code": 1000})
    await communicator.wait()


@pytest.mark.django_db(transaction=True)
async def test_websocket_session_is_saved_when_close_is_sent():
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await database_sync_to_async(scope["session"].__setitem__)("denied", True)
        await send({"type": "websocket.close"})
        await receive()

    key = await saved_session()
    communicator = await websocket_session(app, cookie=key)
    assert await communicator.receive_output() == {"type": "websocket.close"}
    assert await load(key) == {"denied": True}
    await communicator.send_input({"type": "websocket.disconnect", "code": 1000})
    await communicator.wait()


@pytest.mark.django_db(transaction=True)
async def test_websocket_session_modified_late_is_saved_when_the_app_returns():
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await receive()
        await database_sync_to_async(scope["session"].__setitem__)("left", True)

    key = await saved_session()
    communicator = await websocket_session(app, cookie=key)
    await communicator.receive_output()
    await communicator.send_input({"type": "websocket.disconnect", "code": 1000})
    await communicator.wait()
    assert await load(key) == {"left": True}


@pytest.mark.django_db(transaction=True)
async def test_save_session_saves_once_and_repeated_calls_do_nothing():
    seen = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        session = scope["session"]
        saves = []
        original_save = session.save
        session.save = lambda *args, **kwargs: (saves.append(1), original_save(*args, **kwargs))
        await database_sync_to_async(session.__setitem__)("score", 3)
        await save_session(scope)
        seen["stored_after_first_save"] = await load(session.session_key)
        await save_session(scope)
        seen["saves"] = len(saves)
        seen["modified"] = session.modified
        await receive()

    key = await saved_session()
    communicator = await websocket_session(app, cookie=key)
    await communicator.receive_output()
    await communicator.send_input({"type": "websocket.disconnect", "code": 1000})
    await communicator.wait()
    assert seen == {"stored_after_first_save": {"score": 3}, "saves": 1, "modified": False}


@pytest.mark.django_db(transaction=True)
async def test_a_session_deleted_meanwhile_raises_what_django_and_channels_raise():
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        session = scope["session"]
        await database_sync_to_async(session.__setitem__)("score", 3)
        await database_sync_to_async(store(session.session_key).flush)()  # another tab
        await send({"type": "websocket.close"})  # a save point

    communicator = await websocket_session(app, cookie=await saved_session(score=1))
    with pytest.raises(SuspiciousOperation, match="deleted") as raised:  # as in Channels
        await communicator.wait()
    assert isinstance(raised.value, DjangoSessionInterrupted)  # as in Django


async def test_save_session_without_a_session_names_the_middleware():
    with pytest.raises(ValueError, match="SessionMiddlewareStack"):
        await save_session({"type": "websocket"})


async def test_save_session_of_an_untouched_session_needs_no_database():
    scope = await run(SessionMiddlewareStack, {"type": "websocket", "headers": []})
    await save_session(scope)
    assert scope["session"].session_key is None
