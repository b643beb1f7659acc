"""The benchmark routes on this project's packages (``consumers``, ``channels_layer``).

``apps.channels_app`` is the same file with Django Channels' import paths.
"""

import os
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "apps.settings_ours")

from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()

from django.urls import path  # noqa: E402

from consumers.generic.websocket import (  # noqa: E402
    AsyncJsonWebsocketConsumer,
    AsyncWebsocketConsumer,
    WebsocketConsumer,
)
from consumers.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

GROUP = "bench"


class AsyncEcho(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        await self.send(text_data=text_data)


class SyncEcho(WebsocketConsumer):
    def receive(self, text_data=None, bytes_data=None):
        if text_data.startswith("sleep"):
            time.sleep(1)  # the isolation scenario's slow handler
        self.send(text_data=text_data)


class JsonEcho(AsyncJsonWebsocketConsumer):
    async def receive_json(self, content, **kwargs):
        await self.send_json(content)


class Broadcast(AsyncWebsocketConsumer):
    groups = [GROUP]

    async def receive(self, text_data=None, bytes_data=None):
        await self.channel_layer.group_send(GROUP, {"type": "bench.message", "text": text_data})

    async def bench_message(self, event):
        await self.send(text_data=event["text"])


application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter(
            [
                path("ws/echo/", AsyncEcho.as_asgi()),
                path("ws/sync/", SyncEcho.as_asgi()),
                path("ws/json/", JsonEcho.as_asgi()),
                path("ws/broadcast/", Broadcast.as_asgi()),
            ]
        ),
    }
)
