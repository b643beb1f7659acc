"""A Daphne application for the shutdown drills: sockets in a group that report, over
the Redis layer, that their ``disconnect()`` ran; ``/stuck/`` ones never finish it."""

import asyncio
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django.setup()

from django.conf import settings  # noqa: E402
from django.urls import path  # noqa: E402

from consumers.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from consumers.routing import URLRouter  # noqa: E402

# Room for every socket's report (a named channel holds 100 messages by default).
settings.CHANNEL_LAYERS["default"]["CONFIG"]["channel_capacity"] = {"drain-probe": 10_000}
settings.CONSUMERS_SHUTDOWN_TIMEOUT = float(os.environ.get("SHUTDOWN_TIMEOUT", "10"))
settings.CONSUMERS_SHUTDOWN_BATCH = int(os.environ.get("SHUTDOWN_BATCH", "100"))


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
        path("drain/", Draining.as_asgi()),
        path("drain/stuck/", Draining.as_asgi(stuck=True)),
    ]
)
