"""A Redis layer's messages that stay in this process: encoded for its own mailboxes, not
sealed (``encode_here``), and what it makes of a message from them: the one decoding for
``receive()`` and for a consumer handed it eagerly (``handover.EagerReceiver``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from . import serializers
from .base import Message
from .flat_copy import copy_if_flat
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
    last = layer._last_broadcast  # only a broadcast's members share a payload object
    if last is not None and last[0] is payload and last[1] is receipt:
        return last[2].copy()  # (a broadcast's receipt: ``taken`` counts nothing for it)
    layer._delivery.taken(channel, receipt)
    try:
        if receipt is SENT_HERE and not layer._own_codec:
            message = serializers.decode(layer._serializer, payload, unsealed=True)
        else:
            message = layer.deserialize(payload)
    except ValueError as error:
        logger.error("Dropped a message on %r: %s", channel, error)
        raise
    if isinstance(receipt, Stamp):
        message = receipt.add_to(message)
    # A broadcast's (or a published message's): its members that receive() it next copy
    # it rather than decode it again, as hand_over does for those handed it.
    broadcast = receipt is None and layer._mailboxes.decode_once
    if broadcast and (copy := copy_if_flat(message)) is not None:
        layer._last_broadcast = (payload, receipt, copy)
    return message
