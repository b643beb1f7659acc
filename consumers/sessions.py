"""Cookies and Django sessions in the scope of HTTP and WebSocket connections.

``scope["session"]`` is an ordinary ``SessionStore`` from ``settings.SESSION_ENGINE``. Its
first read or write loads it from the store, which is blocking I/O: from async code use its
async methods (``aget``, ``aset``...) or ``database_sync_to_async``.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from importlib import import_module
from typing import Any, Literal, cast

from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase, UpdateError
from django.contrib.sessions.exceptions import SessionInterrupted as DjangoSessionInterrupted
from django.core.exceptions import SuspiciousOperation
from django.http import HttpResponse
from django.http.cookie import parse_cookie
from django.utils.http import http_date

from consumers.db import database_sync_to_async
from consumers.middleware import BaseMiddleware
from consumers.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CookieMiddleware",
    "SessionInterrupted",
    "SessionMiddleware",
    "SessionMiddlewareStack",
    "save_session",
]

_SameSite = Literal["Lax", "Strict", "None"]
# After a handshake no header reaches the browser, so these are the last sensible save points.
_WEBSOCKET_SAVE_POINTS = ("websocket.accept", "websocket.close")


class SessionInterrupted(DjangoSessionInterrupted, SuspiciousOperation):
    """The session was deleted while in use: what Django's ``SessionMiddleware`` raises,
    and the ``SuspiciousOperation`` Channels raises, so code catching either still does."""


class CookieMiddleware(BaseMiddleware):
    """Puts the request's cookies in ``scope["cookies"]`` as a ``{name: value}`` dict."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        # HTTP/2 may split cookies over several headers; RFC 6265 joins them with "; ".
        values = [
            value.decode("latin-1")
            for name, value in scope.get("headers", ())
            if name.lower() == b"cookie"
        ]
        cookies = parse_cookie("; ".join(values))
        return await super().__call__({**scope, "cookies": cookies}, receive, send)

    @staticmethod
    def set_cookie(
        message: Message,
        key: str,
        value: str = "",
        max_age: int | timedelta | None = None,
        expires: str | datetime | None = None,
        path: str = "/",
        domain: str | None = None,
        secure: bool = False,
        httponly: bool = False,
        samesite: str | None = "lax",
    ) -> None:
        """Add a ``Set-Cookie`` header to ``message`` (usually ``http.response.start``).

        The arguments mean what they mean for Django's ``HttpResponse.set_cookie``.
        """
        # A throwaway response lends us Django's exact cookie rules (expiry maths, quoting).
        response = HttpResponse()
        response.set_cookie(
            key, value, max_age, expires, path, domain, secure, httponly, _samesite(samesite)
        )
        _add_set_cookie(message, response, key)

    @staticmethod
    def delete_cookie(
        message: Message,
        key: str,
        path: str = "/",
        domain: str | None = None,
        samesite: str | None = None,
    ) -> None:
        """Add a Set-Cookie header that makes the browser drop cookie ``key``.

        ``path`` and ``domain`` must be those the cookie was set with, or the browser keeps it.
        """
        response = HttpResponse()
        response.delete_cookie(key, path, domain, _samesite(samesite))
        _add_set_cookie(message, response, key)


def _samesite(value: str | None) -> _SameSite | None:
    # Django's SESSION_COOKIE_SAMESITE = False also means "no attribute".
    if not value:
        return None
    if value.lower() not in ("lax", "strict", "none"):
        raise ValueError(f'samesite must be "lax", "strict", "none" or None, got {value!r}')
    # Written as given, as Channels and Django write it ("lax" by default here).
    return cast(_SameSite, value)


def _add_set_cookie(message: Message, response: HttpResponse, key: str) -> None:
    header = (b"Set-Cookie", response.cookies[key].OutputString().encode("latin-1"))
    headers = message.get("headers")
    if isinstance(headers, list):
        # In place, as Channels does: the caller may hold the same list.
        headers.append(header)
    else:
        message["headers"] = [*(headers or ()), header]


class SessionMiddleware(BaseMiddleware):
    """Puts the Django session named by the session cookie in ``scope["session"]``.

    Needs ``scope["cookies"]`` from an outer ``CookieMiddleware``. The session is loaded on
    first use, so connections that never touch it cost no query.

    HTTP: when the response starts, a modified session (any session with
    ``SESSION_SAVE_EVERY_REQUEST``) is saved and its cookie set, as Django's own middleware
    does; an emptied session gets its cookie deleted.

    WebSocket: a modified session is saved just before the application's
    ``websocket.accept`` or ``websocket.close`` goes out, and when the application returns;
    call ``save_session(scope)`` to save at other times. No cookie can be set this way: the
    browser keeps the key it sent. Data saved to a session that arrived without a cookie,
    or whose key changed (``login`` cycles it), reaches a later connection only if the
    consumer hands the new ``session.session_key`` to the client some other way.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        if "cookies" not in scope:
            raise ValueError(
                "SessionMiddleware needs scope['cookies']: wrap it in CookieMiddleware, "
                "or use SessionMiddlewareStack"
            )
        cookie_key = scope["cookies"].get(settings.SESSION_COOKIE_NAME)
        session: SessionBase = import_module(settings.SESSION_ENGINE).SessionStore(cookie_key)
        scope = {**scope, "session": session}
        if scope["type"] == "http":
            return await super().__call__(scope, receive, _http_send(send, session, cookie_key))
        if scope["type"] == "websocket":
            result = await super().__call__(scope, receive, _websocket_send(send, session))
            await _save_if_modified(session)
            return result
        return await super().__call__(scope, receive, send)


def _http_send(send: Send, session: SessionBase, cookie_key: str | None) -> Send:
    async def send_with_session_cookie(message: Message) -> None:
        # Untouched sessions are neither saved nor re-sent: no thread hop for them.
        if message["type"] == "http.response.start" and (
            session.accessed or settings.SESSION_SAVE_EVERY_REQUEST
        ):
            await database_sync_to_async(_finish_http_session)(message, session, cookie_key)
        await send(message)

    return send_with_session_cookie


def _finish_http_session(message: Message, session: SessionBase, cookie_key: str | None) -> None:
    """What Django's SessionMiddleware does to a response, applied to the start message."""
    if session.is_empty():
        if cookie_key is not None:
            CookieMiddleware.delete_cookie(
                message,
                settings.SESSION_COOKIE_NAME,
                path=settings.SESSION_COOKIE_PATH,
                domain=settings.SESSION_COOKIE_DOMAIN,
                samesite=settings.SESSION_COOKIE_SAMESITE,
            )
        return
    # A server error may have left the session half-updated; keep the stored copy.
    if message.get("status", 200) >= 500:
        return
    saved = _save(session, force=settings.SESSION_SAVE_EVERY_REQUEST)
    if not saved and session.session_key == cookie_key:
        return
    if session.get_expire_at_browser_close():
        max_age, expires = None, None
    else:
        max_age = session.get_expiry_age()
        expires = http_date(time.time() + max_age)
    CookieMiddleware.set_cookie(
        message,
        settings.SESSION_COOKIE_NAME,
        session.session_key or "",
        max_age=max_age,
        expires=expires,
        path=settings.SESSION_COOKIE_PATH,
        domain=settings.SESSION_COOKIE_DOMAIN,
        secure=settings.SESSION_COOKIE_SECURE,
        httponly=settings.SESSION_COOKIE_HTTPONLY,
        samesite=settings.SESSION_COOKIE_SAMESITE,
    )


def _websocket_send(send: Send, session: SessionBase) -> Send:
    async def send_saving_session(message: Message) -> None:
        if message["type"] in _WEBSOCKET_SAVE_POINTS:
            await _save_if_modified(session)
        await send(message)

    return send_saving_session


def _save(session: SessionBase, force: bool = False) -> bool:
    """Save a modified (or, with ``force``, any) non-empty session; say whether it did."""
    # An empty session has nothing to keep: flush() already deleted it from the store.
    if not (session.modified or force) or session.is_empty():
        return False
    try:
        session.save()
    except UpdateError:
        raise SessionInterrupted(
            "The session was deleted while this connection was using it; the user may "
            "have logged out in another tab."
        ) from None
    # Saved state is clean again, which makes repeated saves free.
    session.modified = False
    return True


async def _save_if_modified(session: SessionBase) -> None:
    if session.modified:
        await database_sync_to_async(_save)(session)


async def save_session(scope: Scope) -> None:
    """Save ``scope["session"]`` now if it was modified; later calls without changes do nothing.

    Needed on WebSockets to persist changes made after the handshake before the
    connection ends (for example to share them with the user's other tabs).
    """
    if "session" not in scope:
        raise ValueError(
            "No session in scope: wrap the application in SessionMiddlewareStack "
            "or AuthMiddlewareStack"
        )
    await _save_if_modified(scope["session"])


def SessionMiddlewareStack(inner: ASGIApp) -> ASGIApp:
    """Cookies and session in the scope: ``CookieMiddleware(SessionMiddleware(inner))``."""
    return CookieMiddleware(SessionMiddleware(inner))
