"""Exceptions that steer a consumer, plus the channel layer's errors under their usual names."""

from channels_layer.exceptions import (
    ChannelFull,
    InvalidChannelLayerError,
    LayerUnavailable,
    MessageTooLarge,
)

__all__ = [
    "AcceptConnection",
    "ChannelFull",
    "ClientGone",
    "DenyConnection",
    "InvalidChannelLayerError",
    "LayerUnavailable",
    "MessageTooLarge",
    "RequestAborted",
    "RequestTimeout",
    "StopConsumer",
]


class StopConsumer(Exception):
    """Raised by a handler to end the consumer cleanly (no error is logged)."""


class ClientGone(Exception):
    """A send found the client gone: the server raised ``OSError`` from ``send``, as ASGI
    asks of servers (Uvicorn does; Daphne and Hypercorn drop such messages silently).
    WebSocket consumers answer it by running the disconnect path, quietly."""


class AcceptConnection(Exception):
    """Raised from ``connect()`` to accept the WebSocket handshake."""


class DenyConnection(Exception):
    """Raised from ``connect()`` to reject the WebSocket handshake (HTTP 403)."""


class RequestAborted(Exception):
    """The client went away before the HTTP request body was complete."""


class RequestTimeout(RequestAborted):
    """The HTTP request body did not arrive in time."""
