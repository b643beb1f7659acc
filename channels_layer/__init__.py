"""Channel layers: named queues that let consumers, workers and other processes message each
other, plus groups for broadcast. Configure them in ``settings.CHANNEL_LAYERS`` and fetch one
with ``get_channel_layer()``.
"""

from .base import BaseChannelLayer
from .exceptions import (
    ChannelFull,
    InvalidChannelLayerError,
    LayerUnavailable,
    MessageTooLarge,
)
from .memory import InMemoryChannelLayer
from .registry import DEFAULT_CHANNEL_LAYER, channel_layers, get_channel_layer

__all__ = [
    "DEFAULT_CHANNEL_LAYER",
    "BaseChannelLayer",
    "ChannelFull",
    "InMemoryChannelLayer",
    "InvalidChannelLayerError",
    "LayerUnavailable",
    "MessageTooLarge",
    "channel_layers",
    "get_channel_layer",
]
