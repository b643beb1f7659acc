"""The application the metrics tests serve with Daphne: consumers whose traffic the tests
know exactly, behind the same origin check and routing as the reference project, and the
project's HTTP side (``/metrics``)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.e2e.settings_metrics")

from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()

from django.urls import path  # noqa: E402

from consumers.exceptions import ChannelFull, DenyConnection  # noqa: E402
from consumers.generic.websocket import AsyncWebsocketConsumer, WebsocketConsumer  # noqa: E402
from consumers.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from consumers.security.websocket import AllowedHostsOriginValidator  # noqa: E402


class Echo(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        await self.send(text_data=text_data, bytes_data=bytes_data)


class SyncEcho(WebsocketConsumer):
    def receive(self, text_data=None, bytes_data=None):
        self.send(text_data=text_data)


class Denied(AsyncWebsocketConsumer):
    async def connect(self):
        raise DenyConnection


class Refused(AsyncWebsocketConsumer):
    async def connect(self):
        await self.close()


class Crash(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        raise RuntimeError("a crash the metrics count")


class Flood(AsyncWebsocketConsumer):
    """Answers ``"<frames> <size>"`` with that many frames of that size."""

    async def receive(self, text_data=None, bytes_data=None):
        data = (text_data or bytes_data.decode()).split()
        frames, size = int(data[0]), int(data[1])
        for _ in range(frames):
            await self.send(text_data="x" * size)


class Room(AsyncWebsocketConsumer):
    groups = ["room"]

    async def receive(self, text_data=None, bytes_data=None):
        await self.channel_layer.group_send("room", {"type": "room.message", "text": text_data})

    async def room_message(self, event):
        await self.send(text_data=event["text"])


class Fill(AsyncWebsocketConsumer):
    """Sends ``n`` messages to its own channel while busy, and answers how many were full."""

    async def receive(self, text_data=None, bytes_data=None):
        full = 0
        for _ in range(int(text_data)):
            try:
                await self.channel_layer.send(self.channel_name, {"type": "noted"})
            except ChannelFull:
                full += 1
        await self.send(text_data=str(full))

    async def noted(self, event):
        pass


application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            URLRouter(
                [
                    path("echo/", Echo.as_asgi()),
                    path("sync/", SyncEcho.as_asgi()),
                    path("denied/", Denied.as_asgi()),
                    path("refused/", Refused.as_asgi()),
                    path("crash/", Crash.as_asgi()),
                    path("flood/", Flood.as_asgi()),
                    path("room/", Room.as_asgi()),
                    path("fill/", Fill.as_asgi()),
                ]
            )
        ),
    }
)
