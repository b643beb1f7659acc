"""The benchmark's consumers and routes, written once for both frameworks.

``build("consumers", http)`` gives this project's application and ``build("channels", http)``
Django Channels' one: the same classes on the same base classes, which the two packages name
alike (``PACKAGE.generic.websocket``, ``PACKAGE.routing``).
"""

from __future__ import annotations

import time
from importlib import import_module
from typing import Any

from django.urls import path

GROUP = "bench"


def build(package: str, http: Any) -> Any:
    """The ASGI application: ``http`` for HTTP, the four WebSocket routes of the scenarios."""
    # Any: the base classes come from whichever package is named, known only at run time.
    websocket: Any = import_module(f"{package}.generic.websocket")
    routing: Any = import_module(f"{package}.routing")

    class AsyncEcho(websocket.AsyncWebsocketConsumer):
        async def receive(self, text_data=None, bytes_data=None):
            await self.send(text_data=text_data)

    class SyncEcho(websocket.WebsocketConsumer):
        def receive(self, text_data=None, bytes_data=None):
            if text_data.startswith("sleep"):
                time.sleep(1)  # the isolation scenario's slow handler
            self.send(text_data=text_data)

    class JsonEcho(websocket.AsyncJsonWebsocketConsumer):
        async def receive_json(self, content, **kwargs):
            await self.send_json(content)

    class Broadcast(websocket.AsyncWebsocketConsumer):
        groups = [GROUP]

        async def receive(self, text_data=None, bytes_data=None):
            await self.channel_layer.group_send(GROUP, {"type": "bench.message", "text": text_data})

        async def bench_message(self, event):
            await self.send(text_data=event["text"])

    return routing.ProtocolTypeRouter(
        {
            "http": http,
            "websocket": routing.URLRouter(
                [
                    path("ws/echo/", AsyncEcho.as_asgi()),
                    path("ws/sync/", SyncEcho.as_asgi()),
                    path("ws/json/", JsonEcho.as_asgi()),
                    path("ws/broadcast/", Broadcast.as_asgi()),
                ]
            ),
        }
    )
