"""Errors a channel layer raises; ``consumers.exceptions`` re-exports the same objects."""


class ChannelFull(Exception):
    """``send`` found the channel at its capacity; the message was not queued."""


class InvalidChannelLayerError(ValueError):
    """``CHANNEL_LAYERS`` names a backend that cannot be loaded or lacks a needed extension."""
