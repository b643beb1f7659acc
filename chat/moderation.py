"""The moderation filter: the background job that reviews every posted message.

It runs in a ``runworker`` process (``ModerationWorker``), or inline when the channel layer
is the in-memory one, which no worker process can reach. Either way the verdict is saved
and pushed to the room, so every open page updates the message.
"""

from __future__ import annotations

import re
from functools import lru_cache

from chat.conf import setting
from chat.models import Message

MODERATION_CHANNEL = "chat-moderation"


@lru_cache(maxsize=8)
def _banned_pattern(words: tuple[str, ...]) -> re.Pattern[str] | None:
    if not words:
        return None
    alternatives = "|".join(re.escape(word) for word in words)
    return re.compile(rf"\b(?:{alternatives})\b", re.IGNORECASE)


def verdict(text: str) -> str:
    """``Message.REMOVED`` when ``text`` contains a word of ``CHAT_BANNED_WORDS``."""
    pattern = _banned_pattern(tuple(setting("CHAT_BANNED_WORDS")))
    if pattern is not None and pattern.search(text):
        return Message.REMOVED
    return Message.VISIBLE


def review(message_id: int) -> dict | None:
    """Judge one pending message and save the result.

    Returns the event to send to the room's group, or None when the message is gone or
    was already reviewed (a job delivered twice changes nothing).
    """
    message = Message.objects.select_related("room", "author").filter(pk=message_id).first()
    if message is None or message.status != Message.PENDING:
        return None
    message.status = verdict(message.text)
    updated = Message.objects.filter(pk=message.pk, status=Message.PENDING).update(
        status=message.status
    )
    if not updated:
        return None
    return {"type": "chat.moderated", "group": message.room.group_name, **message.as_event()}
