"""The chat app's settings, each with a default, read in one place."""

from __future__ import annotations

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Longest message, in characters.
    "CHAT_MAX_MESSAGE_LENGTH": 2000,
    # Messages shown on joining a room.
    "CHAT_HISTORY": 50,
    # Per connection: a steady rate with a burst on top; after this many refused messages
    # the connection is closed with CLOSE_RATE_LIMITED.
    "CHAT_MESSAGES_PER_SECOND": 5.0,
    "CHAT_MESSAGE_BURST": 10,
    "CHAT_STRIKES_BEFORE_CLOSE": 10,
    # Seconds between presence heartbeats; a server silent for three is dropped.
    "CHAT_PRESENCE_INTERVAL": 15.0,
    # Words the moderation worker removes messages for (whole words, any case).
    "CHAT_BANNED_WORDS": ["spam"],
    # Review messages in the web process instead of a runworker process. Needed with the
    # in-memory layer, which no worker process can reach; None decides by the layer.
    "CHAT_MODERATION_INLINE": None,
    # Shown to the browser so a person (or a test) can tell which server they reached;
    # empty: not shown (the host name is not for clients).
    "CHAT_SERVER_NAME": "",
}


def setting(name: str) -> Any:
    return getattr(settings, name, DEFAULTS[name])
