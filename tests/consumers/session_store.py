"""Session helpers shared by the session and auth tests."""

from importlib import import_module

from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase

from consumers.db import database_sync_to_async


def store(session_key: str | None = None) -> SessionBase:
    """A session store of the configured engine, for ``session_key`` or a new session."""
    return import_module(settings.SESSION_ENGINE).SessionStore(session_key)


@database_sync_to_async
def saved_session(**data) -> str:
    """Save a new session holding ``data``; its key."""
    session = store()
    session.update(data)
    session.create()
    return session.session_key
