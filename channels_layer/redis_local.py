"""A Redis layer's messages that stay in this process: encoded for its own mailboxes, not
sealed (``encode_here``), and what it makes of a message from them: the one decoding for
``receive()`` and for a consumer handed it eagerly (``handover.EagerReceiver``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from . import serializers
from .base import Message
from .history import Stamp
from .redis_delivery import SENT_HERE

if TYPE_CHECKING:
    from .redis import RedisChannelLayer

logger = logging.getLogger("channels_layer.redis")


def encode_here(layer: RedisChannelLayer, message: Message) -> bytes:
    """``serialize`` for a message that stays in the process: not sealed (encrypted);
    a subclass's own codec is used as it is."""
    if layer._own_codec:
        return layer.serialize(message)
    return serializers.encode(layer, layer._serializer, message, seal=False)


def local_message(layer: RedisChannelLayer, channel: str, payload: bytes, receipt: Any) -> Message:
    """The message has left the mailbox (``taken``, for the inbox's counts); a message sent
    here was not sealed, so it is not unsealed, unless a subclass brings its own codec; a
    history group's position is added. ``ValueError`` (logged) if it cannot be decoded or
    decrypted, and it is dropped."""
    layer._delivery.taken(channel, receipt)
    try:
        if receipt is SENT_HERE and not layer._own_codec:
            message = serializers.decode(layer._serializer, payload, unsealed=True)
        else:
            message = layer.deserialize(payload)
    except ValueError as error:
        logger.error("Dropped a message on %r: %s", channel, error)
        raise
    return receipt.add_to(message) if isinstance(receipt, Stamp) else message
