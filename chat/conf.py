"""The chat app's settings, each with a default, read in one place."""

from __future__ import annotations

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Longest message, in characters.
    "CHAT_MAX_MESSAGE_LENGTH": 2000,
    # Messages shown on joining a room.
    "CHAT_HISTORY": 50,
    # Frames per user (anonymous: per client address) over all their sockets and every
    # server process: a steady rate with a burst on top. After this many refused frames a
    # connection is closed with CLOSE_RATE_LIMITED.
    "CHAT_MESSAGES_PER_SECOND": 5.0,
    "CHAT_MESSAGE_BURST": 10,
    "CHAT_STRIKES_BEFORE_CLOSE": 10,
    # Open chat sockets per user and per client address, over every process (0: no cap).
    "CHAT_MAX_SOCKETS_PER_USER": 20,
    "CHAT_MAX_SOCKETS_PER_ADDRESS": 100,
    # Rooms one user may open.
    "CHAT_ROOMS_PER_USER": 20,
    # Login attempts (rate per second, burst) per user name and per client address.
    "CHAT_LOGINS_PER_USER": (1 / 60, 10),
    "CHAT_LOGINS_PER_ADDRESS": (1 / 6, 30),
    # Frames per client address on the anonymous echo socket (rate, burst).
    "CHAT_ECHO_RATE": (10.0, 20),
    # Where the limits above are kept: Redis (every process shares them) or, when None,
    # this process (the in-memory layer: there is only one). With CHAT_LIMITS_REDIS_CLUSTER,
    # that Redis is a Redis Cluster: the URL of one of its nodes, or a list of several.
    "CHAT_LIMITS_REDIS_URL": None,
    "CHAT_LIMITS_REDIS_CLUSTER": False,
    "CHAT_LIMITS_PREFIX": "chat-limits",
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
