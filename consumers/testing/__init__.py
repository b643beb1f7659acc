"""Test helpers: communicators that speak ASGI to an application, and a live Daphne."""

from consumers.testing.communicators import (
    ApplicationCommunicator,
    HttpCommunicator,
    WebsocketCommunicator,
)
from consumers.testing.live import ChannelsLiveServerTestCase

__all__ = ["ApplicationCommunicator", "HttpCommunicator", "WebsocketCommunicator"]
__all__ += ["ChannelsLiveServerTestCase"]
