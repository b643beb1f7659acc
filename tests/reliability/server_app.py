"""A Daphne application for the reliability drills.

- ``/drain/``: sockets in a group that report over the Redis layer that ``disconnect()``
  ran (``/drain/stuck/`` ones never finish it);
- ``/flood/``: tests/flood_consumer.py's ``Flood``, for the slow-client drill.
"""

import asyncio
import os

import django
from django.conf import settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

# Room for every socket's report (a named channel holds 100 messages by default).
settings.CHANNEL_LAYERS["default"].setdefault("CONFIG", {})["channel_capacity"] = {
    "drain-probe": 10_000
}
settings.CONSUMERS_WEBSOCKET_MAX_BUFFER = int(os.environ.get("MAX_BUFFER", 1024 * 1024))
settings.CONSUMERS_SHUTDOWN_TIMEOUT = float(os.environ.get("SHUTDOWN_TIMEOUT", "10"))
settings.CONSUMERS_SHUTDOWN_BATCH = int(os.environ.get("SHUTDOWN_BATCH", "100"))
django.setup()  # after the settings above: ready() reads them

from django.urls import path  # noqa: E402

from consumers.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from consumers.routing import URLRouter  # noqa: E402
from tests.flood_consumer import Flood  # noqa: E402


class Draining(AsyncWebsocketConsumer):
    groups = ["drain"]
    stuck = False

    async def disconnect(self, code):
        if self.stuck:
            await asyncio.sleep(3600)
        await asyncio.sleep(0.05)  # a little work, such as saving state
        await self.channel_layer.send("drain-probe", {"type": "gone", "code": code})


application = URLRouter(
    [
        path("flood/", Flood.as_asgi()),
        path("drain/", Draining.as_asgi()),
        path("drain/stuck/", Draining.as_asgi(stuck=True)),
    ]
)
