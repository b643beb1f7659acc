"""Django authentication on connections: ``scope["user"]``, ``login`` and ``logout``.

Everything that touches the session or user tables runs on the consumers' thread pool, so
async consumers can read ``scope["user"]`` without a query on the event loop.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import (
    BACKEND_SESSION_KEY,
    HASH_SESSION_KEY,
    SESSION_KEY,
    get_user_model,
    load_backend,
    user_logged_in,
    user_logged_out,
)
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.contrib.sessions.backends.base import SessionBase
from django.utils.crypto import constant_time_compare
from django.utils.functional import LazyObject, empty

from consumers.db import database_sync_to_async
from consumers.middleware import BaseMiddleware
from consumers.sessions import CookieMiddleware, SessionMiddleware, save_session
from consumers.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "AuthMiddleware",
    "AuthMiddlewareStack",
    "UserLazyObject",
    "get_user",
    "login",
    "logout",
]


class UserLazyObject(LazyObject):
    """``scope["user"]``: a stand-in for the user that ``AuthMiddleware`` fills in."""

    def _setup(self) -> None:
        # Loading here would mean a blocking query wherever the attribute happens to be read.
        raise ValueError(
            "scope['user'] has not been resolved: AuthMiddleware resolves it before the "
            "application runs; elsewhere use `await get_user(scope)`"
        )


class AuthMiddleware(BaseMiddleware):
    """Puts the session's user (or ``AnonymousUser``) in ``scope["user"]``.

    The user is loaded before the application starts, so reading ``scope["user"]`` never
    queries the database. Needs ``scope["session"]`` from an outer ``SessionMiddleware``.
    A user already in the scope (put there by an outer middleware, or by a test) is kept.

    As in Channels, subclasses may override ``populate_scope`` (add the stand-in) and
    ``resolve_scope`` (fill it in), for example to authenticate by token.
    """

    def populate_scope(self, scope: Scope) -> None:
        if "session" not in scope:
            raise ValueError(
                "No session in scope: wrap the application in SessionMiddleware "
                "(or use AuthMiddlewareStack)"
            )
        if "user" not in scope:
            scope["user"] = UserLazyObject()

    async def resolve_scope(self, scope: Scope) -> None:
        user = scope["user"]
        if isinstance(user, UserLazyObject) and user._wrapped is empty:
            user._wrapped = await get_user(scope)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        scope = dict(scope)
        self.populate_scope(scope)
        await self.resolve_scope(scope)
        return await super().__call__(scope, receive, send)


def AuthMiddlewareStack(inner: ASGIApp) -> ASGIApp:
    """Cookies, session and user in the scope: the usual wrapper for consumers."""
    return CookieMiddleware(SessionMiddleware(AuthMiddleware(inner)))


async def get_user(scope: Scope) -> AbstractBaseUser | AnonymousUser:
    """The user logged in on ``scope["session"]``, or ``AnonymousUser``.

    Follows ``django.contrib.auth.get_user``: the session's backend must still be in
    ``AUTHENTICATION_BACKENDS``, and its password hash must match (one made with a key in
    ``SECRET_KEY_FALLBACKS`` is upgraded); otherwise the session is flushed.
    """
    session = _session(scope)
    # Cycling the key is pointless unless the response can carry the new cookie.
    can_cycle_key = scope.get("type") == "http"
    return await database_sync_to_async(_user_from_session)(session, can_cycle_key)


async def login(
    scope: Scope, user: AbstractBaseUser | None = None, backend: str | None = None
) -> None:
    """Log ``user`` (by default ``scope["user"]``) in on ``scope["session"]`` and save it.

    As ``django.contrib.auth.login`` does, the session gets a new key (or is emptied if it
    belonged to another user) against session fixation, and ``user_logged_in`` is sent
    (with ``request=None``). Unlike Channels the session is saved here, so other
    connections presenting its key are logged in at once. Over a WebSocket the browser
    still holds the old key: hand it the new ``scope["session"].session_key``, or log in
    over HTTP. ``backend`` defaults to ``user.backend`` (set by ``authenticate()``), then
    to the only entry of ``AUTHENTICATION_BACKENDS``.
    """
    session = _session(scope)
    if user is None:
        user = scope.get("user")
    if user is None:
        raise ValueError("login() needs the user to log in: pass it, or set scope['user']")
    if getattr(user, "is_anonymous", False):
        raise ValueError(f"login() cannot log in {user!r}: it is anonymous")
    backend_path = _backend_path(user, backend)
    await database_sync_to_async(_log_in)(session, user, backend_path)
    scope["user"] = user
    await save_session(scope)


async def logout(scope: Scope) -> None:
    """Log out: flush the session and make an existing ``scope["user"]`` anonymous.

    ``user_logged_out`` is sent first, and only when someone was logged in, as Channels
    does. The flush deletes the stored session at once, so no connection can use its key
    again.
    """
    session = _session(scope)
    await database_sync_to_async(_log_out)(session, scope.get("user"))
    if "user" in scope:
        scope["user"] = AnonymousUser()


def _session(scope: Scope) -> SessionBase:
    if "session" not in scope:
        raise ValueError(
            "No session in scope: wrap the application in SessionMiddleware "
            "(or use AuthMiddlewareStack)"
        )
    session: SessionBase = scope["session"]
    return session


def _backend_path(user: AbstractBaseUser, backend: str | None) -> str:
    path = backend or getattr(user, "backend", None)
    if path is None:
        backends = settings.AUTHENTICATION_BACKENDS
        if len(backends) != 1:
            raise ValueError(
                f"{len(backends)} authentication backends are configured, so login() needs "
                "backend=... or a user.backend attribute (authenticate() sets it)"
            )
        path = backends[0]
    if not isinstance(path, str):
        raise TypeError(f"backend must be a dotted import path string, got {path!r}")
    return path


def _session_user_id(session: SessionBase) -> Any:
    # Sessions store the primary key as a string; compare it as the model's own type.
    return get_user_model()._meta.pk.to_python(session[SESSION_KEY])


def _user_from_session(
    session: SessionBase, can_cycle_key: bool
) -> AbstractBaseUser | AnonymousUser:
    try:
        user_id = _session_user_id(session)
        backend_path = session[BACKEND_SESSION_KEY]
    except KeyError:
        return AnonymousUser()
    if backend_path not in settings.AUTHENTICATION_BACKENDS:
        return AnonymousUser()
    user = load_backend(backend_path).get_user(user_id)
    if user is None:
        return AnonymousUser()
    if hasattr(user, "get_session_auth_hash") and not _hash_verified(session, user, can_cycle_key):
        # The password changed since login: that logs out every other session.
        session.flush()
        return AnonymousUser()
    return user


def _hash_verified(session: SessionBase, user: AbstractBaseUser, can_cycle_key: bool) -> bool:
    session_hash = session.get(HASH_SESSION_KEY)
    if not session_hash:
        return False
    current_hash = user.get_session_auth_hash()
    if constant_time_compare(session_hash, current_hash):
        return True
    if not any(
        constant_time_compare(session_hash, old_hash)
        for old_hash in user.get_session_auth_fallback_hash()
    ):
        return False
    # Made with a retired SECRET_KEY: keep the user logged in under the current one.
    if can_cycle_key:
        session.cycle_key()
    session[HASH_SESSION_KEY] = current_hash
    return True


def _log_in(session: SessionBase, user: AbstractBaseUser, backend_path: str) -> None:
    session_hash = user.get_session_auth_hash() if hasattr(user, "get_session_auth_hash") else ""
    if SESSION_KEY not in session:
        # A key chosen before login could have been planted by an attacker (fixation).
        session.cycle_key()
    elif _session_user_id(session) != user.pk or (
        session_hash and not constant_time_compare(session.get(HASH_SESSION_KEY, ""), session_hash)
    ):
        # Another user's session: their data must not carry over.
        session.flush()
    session[SESSION_KEY] = user._meta.pk.value_to_string(user)
    session[BACKEND_SESSION_KEY] = backend_path
    session[HASH_SESSION_KEY] = session_hash
    user_logged_in.send(sender=user.__class__, request=None, user=user)


def _log_out(session: SessionBase, user: Any) -> None:
    # Sent before the flush so receivers can still see who is leaving.
    if user is not None and getattr(user, "is_authenticated", True):
        user_logged_out.send(sender=user.__class__, request=None, user=user)
    session.flush()
