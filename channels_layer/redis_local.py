"""What the Redis layer's ``receive()`` makes of a message from this process's mailboxes,
for a consumer handed it eagerly (``mailbox.EagerReceiver``) rather than receiving it."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .base import Message
from .history import Stamp

if TYPE_CHECKING:
    from .redis import RedisChannelLayer

logger = logging.getLogger("channels_layer.redis")


def local_message(layer: RedisChannelLayer, channel: str, payload: bytes, receipt: Any) -> Message:
    """As ``receive()``: the message has left the mailbox (``taken``, for the inbox's
    counts), a history group's position is added; ``ValueError`` (logged) if it cannot be
    decoded or decrypted, and it is dropped."""
    layer._delivery.taken(channel, receipt)
    try:
        message = layer.deserialize(payload)
    except ValueError as error:
        logger.error("Dropped a message on %r: %s", channel, error)
        raise
    return receipt.add_to(message) if isinstance(receipt, Stamp) else message
