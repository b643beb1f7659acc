"""Errors a channel layer raises; ``consumers.exceptions`` re-exports the same objects."""


class ChannelFull(Exception):
    """``send`` found the channel at its capacity; the message was not queued."""


class MessageTooLarge(ValueError):
    """The encoded message exceeds ``max_message_size`` (default 1 MiB, the limit the channel
    layer spec sets); the message was not sent, to anyone, rather than truncated."""


class InvalidChannelLayerError(ValueError):
    """``CHANNEL_LAYERS`` names a backend that cannot be loaded or lacks a needed extension."""


class LayerUnavailable(ConnectionError):
    """The layer's server stayed unreachable for the layer's ``retry_timeout``; the message
    was not sent. Nothing is lost that was already queued; catch it where a sender can
    tell its user "try again"."""
