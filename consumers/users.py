"""Per-user delivery, and WebSockets that end with the session they were opened on.

Opt-in, on async WebSocket consumers, with ``UserSocketMixin``:

- Every authenticated socket joins its user's group (``user_group(user_id)``), so
  ``send_to_user(user_id, message)`` reaches all of that user's sockets in every process
  (the message is handled like any group message, by its ``type``), and
  ``disconnect_user(user_id, code)`` closes them.
- A socket opened with a session closes with ``CLOSE_SESSION_ENDED`` (4401) when that
  session ends: Django logs the user out (``user_logged_out``), the stored session is
  deleted (a flush, a new key, the admin), or the password changes so that the session's
  auth hash no longer matches. The signal receivers are opt-in: call ``connect_signals()``
  from an ``AppConfig.ready()``. Changes made without signals (a cache evicting the
  session, a raw SQL update) are caught by a check of every session-bound socket every
  ``CONSUMERS_SESSION_CHECK_INTERVAL`` seconds (default 60; 0 or None: never).

The password check rides on ``consumers.revalidation``: a socket watches its user's subject
and re-checks its session whenever that subject is re-checked, before ``still_allowed()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from importlib import import_module
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.auth import SESSION_KEY, get_user_model, user_logged_out
from django.contrib.sessions.base_session import AbstractBaseSession
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.utils.crypto import salted_hmac

from channels_layer import BaseChannelLayer, LayerUnavailable, get_channel_layer
from consumers.auth import _user_from_session
from consumers.db import database_sync_to_async
from consumers.revalidation import RevalidatingMixin, group_for, recheck, subject_of

logger = logging.getLogger(__name__)

CLOSE_SESSION_ENDED = 4401  # logged out, session deleted, or password changed elsewhere
SESSION_ENDED = "users.session_ended"
DISCONNECT = "users.disconnect"
GROUP_PREFIX = "users."
DEFAULT_CHECK_INTERVAL = 60.0


def user_group(user_id: Any) -> str:
    """The channel layer group of all of a user's sockets."""
    return f"{GROUP_PREFIX}{user_id}"


def session_fingerprint(session_key: str) -> str:
    """What crosses the layer to name a session: never the key itself."""
    return salted_hmac("consumers.users.session", session_key, algorithm="sha256").hexdigest()[:32]


async def asend_to_user(user_id: Any, message: dict[str, Any], alias: str = "default") -> None:
    """Send ``message`` (a layer message with a ``type``) to every socket of the user."""
    layer = get_channel_layer(alias)
    if layer is not None:
        await layer.group_send(user_group(user_id), message)


def send_to_user(user_id: Any, message: dict[str, Any], alias: str = "default") -> None:
    async_to_sync(asend_to_user)(user_id, message, alias)


async def adisconnect_user(
    user_id: Any, code: int = CLOSE_SESSION_ENDED, reason: str = "", alias: str = "default"
) -> None:
    """Close every socket of the user, in every process, with ``code``."""
    await asend_to_user(user_id, {"type": DISCONNECT, "code": code, "reason": reason}, alias)


def disconnect_user(
    user_id: Any, code: int = CLOSE_SESSION_ENDED, reason: str = "", alias: str = "default"
) -> None:
    async_to_sync(adisconnect_user)(user_id, code, reason, alias)


def session_belongs_to(session_key: str, user_id: Any) -> bool:
    """Whether the stored session still logs in ``user_id`` (as Django's ``get_user``
    decides: the backend, the user, the password hash)."""
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    user = _user_from_session(store, can_cycle_key=False)
    return bool(user.is_authenticated) and user.pk == user_id


# Signal receivers: opt-in with connect_signals()


def _announce_session_end(user_id: Any, session_key: str) -> None:
    message = {"type": SESSION_ENDED, "session": session_fingerprint(session_key)}

    async def announce() -> None:
        try:
            await asend_to_user(user_id, message)
        except LayerUnavailable as error:  # the periodic check closes them later
            logger.warning("Sockets of user %s not told their session ended: %s", user_id, error)

    transaction.on_commit(lambda: async_to_sync(announce)())


def logged_out(sender: Any, request: Any = None, user: Any = None, **kwargs: Any) -> None:
    if user is None:
        return
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if session_key:
        _announce_session_end(user.pk, session_key)
    else:  # a WebSocket logout: no request, so every socket re-checks its session
        recheck(subject_of(user))


def session_deleted(sender: Any, instance: AbstractBaseSession, **kwargs: Any) -> None:
    user_id = instance.get_decoded().get(SESSION_KEY)
    if user_id is not None:
        user_id = get_user_model()._meta.pk.to_python(user_id)
        _announce_session_end(user_id, instance.session_key)


def user_saved(sender: Any, instance: Any, created: bool = False, **kwargs: Any) -> None:
    fields = kwargs.get("update_fields")
    # A new password changes the session auth hash; logins (last_login) do not.
    if not created and (fields is None or "password" in fields):
        recheck(subject_of(instance))


def connect_signals() -> None:
    """Close sockets when their session ends; call once, from an ``AppConfig.ready()``."""
    user_logged_out.connect(logged_out, dispatch_uid="consumers.users.logged_out")
    # Only the session model: a receiver for every model would stop Django's fast deletes.
    store = import_module(settings.SESSION_ENGINE).SessionStore
    if hasattr(store, "get_model_class"):  # the database engines
        post_delete.connect(
            session_deleted,
            sender=store.get_model_class(),
            dispatch_uid="consumers.users.session_deleted",
        )
    post_save.connect(
        user_saved, sender=get_user_model(), dispatch_uid="consumers.users.user_saved"
    )


# The periodic check, one task per event loop and layer


class SessionCheck:
    """Every interval, checks each session with sockets in this process once."""

    def __init__(self, layer: BaseChannelLayer, interval: float) -> None:
        self.layer = layer
        self.interval = interval
        self.sockets: dict[str, tuple[str, Any]] = {}  # channel -> (session key, user id)
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while self.sockets:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception as error:  # a database or layer outage: try again next time
                logger.warning("Session check failed, retrying in %s s: %r", self.interval, error)

    async def check(self) -> None:
        pairs = set(self.sockets.values())
        valid = await database_sync_to_async(
            lambda: {pair for pair in pairs if session_belongs_to(*pair)}
        )()
        for channel, pair in list(self.sockets.items()):
            if pair not in valid:
                message = {"type": SESSION_ENDED, "session": session_fingerprint(pair[0])}
                with contextlib.suppress(Exception):
                    await self.layer.send(channel, message)


_checks: dict[tuple[int, int], SessionCheck] = {}


def _check_interval() -> float:
    return float(getattr(settings, "CONSUMERS_SESSION_CHECK_INTERVAL", DEFAULT_CHECK_INTERVAL) or 0)


def _register(layer: BaseChannelLayer, channel: str, session_key: str, user_id: Any) -> None:
    interval = _check_interval()
    if interval <= 0:
        return
    key = (id(asyncio.get_running_loop()), id(layer))
    check = _checks.get(key)
    if check is None or check.task.done():
        check = _checks[key] = SessionCheck(layer, interval)
    check.sockets[channel] = (session_key, user_id)


def _unregister(layer: BaseChannelLayer, channel: str) -> None:
    with contextlib.suppress(RuntimeError):
        check = _checks.get((id(asyncio.get_running_loop()), id(layer)))
        if check is not None:
            check.sockets.pop(channel, None)


class _SessionBound:
    """What the async and sync mixins share: who and which session, and the cleanup."""

    session_ended_close_code = CLOSE_SESSION_ENDED
    session_key: str | None = None
    user_id: Any = None
    _ended = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)  # type: ignore[misc]
        finally:
            if self.session_key is not None:
                _unregister(self.channel_layer, self.channel_name)  # type: ignore[attr-defined]

    def _user(self) -> Any:
        """The authenticated user of the scope, or None."""
        user = self.scope.get("user")  # type: ignore[attr-defined]
        return user if user is not None and user.is_authenticated else None

    def _bind(self, user: Any) -> list[str]:
        """Note the user and session; the groups to join."""
        self.user_id = user.pk
        session = self.scope.get("session")  # type: ignore[attr-defined]
        if session is not None and session.session_key:
            self.session_key = session.session_key
            self._fingerprint = session_fingerprint(session.session_key)
        return [user_group(user.pk), group_for(subject_of(user))]

    def _register(self) -> None:
        if self.session_key is not None:
            layer, channel = self.channel_layer, self.channel_name  # type: ignore[attr-defined]
            _register(layer, channel, self.session_key, self.user_id)

    def _ours(self, event: dict[str, Any]) -> bool:
        ours = self.session_key is not None and event.get("session") == self._fingerprint
        return ours and not self._ended


class UserSocketMixin(_SessionBound, RevalidatingMixin):
    """For async WebSocket consumers: the user's group, and a socket bound to its session.

    Override ``session_ended()`` to tell the client more before it closes. The user's
    groups are added to ``self.groups`` before ``connect()`` runs: extend that list there,
    do not replace it, or the groups are not left when the socket closes.
    """

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        await self.bind_user()
        await super().websocket_connect(message)  # type: ignore[misc]

    async def bind_user(self) -> None:
        """Join the user's group and watch the user's session (authenticated users)."""
        user = self._user()
        if user is None:
            return
        groups = self._bind(user)
        for group in groups:
            await self.channel_layer.group_add(group, self.channel_name)  # type: ignore[attr-defined]
        self.groups = [*self.groups, *groups]
        self._register()

    async def session_still_valid(self) -> bool:
        if self.session_key is None:
            return True
        return await database_sync_to_async(session_belongs_to)(self.session_key, self.user_id)

    async def session_ended(self) -> None:
        """Close the socket; override to say more first (call this to close)."""
        self._ended = True
        await self.close(self.session_ended_close_code, "session ended")  # type: ignore[attr-defined]

    async def revalidation_recheck(self, event: dict[str, Any]) -> None:
        # Access first (a deactivated account is "access revoked"), then the session.
        if self._ended:
            return
        if not await self.still_allowed():
            return await self.access_revoked(event["subject"])
        if not await self.session_still_valid():
            await self.session_ended()

    async def users_session_ended(self, event: dict[str, Any]) -> None:
        if self._ours(event):
            await self.session_ended()

    async def users_disconnect(self, event: dict[str, Any]) -> None:
        code, reason = event.get("code", CLOSE_SESSION_ENDED), event.get("reason") or None
        await self.close(code, reason)  # type: ignore[attr-defined]


class SyncUserSocketMixin(_SessionBound):
    """The same for sync WebSocket consumers (``WebsocketConsumer``), with plain methods;
    a re-check of the session runs in the handler's thread (there is no ``still_allowed``:
    ``RevalidatingMixin`` is for async consumers)."""

    def websocket_connect(self, message: dict[str, Any]) -> None:
        user = self._user()
        if user is not None:
            groups = self._bind(user)
            for group in groups:
                async_to_sync(self.channel_layer.group_add)(group, self.channel_name)  # type: ignore[attr-defined]
            self.groups = [*self.groups, *groups]  # type: ignore[has-type]
            async_to_sync(self._aregister)()
        super().websocket_connect(message)  # type: ignore[misc]

    async def _aregister(self) -> None:
        self._register()

    def session_still_valid(self) -> bool:
        return self.session_key is None or session_belongs_to(self.session_key, self.user_id)

    def session_ended(self) -> None:
        """Close the socket; override to say more first (call this to close)."""
        self._ended = True
        self.close(self.session_ended_close_code, "session ended")  # type: ignore[attr-defined]

    def revalidation_recheck(self, event: dict[str, Any]) -> None:
        if not self._ended and not self.session_still_valid():
            self.session_ended()

    def users_session_ended(self, event: dict[str, Any]) -> None:
        if self._ours(event):
            self.session_ended()

    def users_disconnect(self, event: dict[str, Any]) -> None:
        code, reason = event.get("code", CLOSE_SESSION_ENDED), event.get("reason") or None
        self.close(code, reason)  # type: ignore[attr-defined]
