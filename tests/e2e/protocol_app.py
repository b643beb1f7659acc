"""An ASGI app for testing WebSocket protocol details through a real server."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django.setup()

from django.urls import path  # noqa: E402

from consumers.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from consumers.routing import URLRouter  # noqa: E402


class ProtocolProbe(AsyncWebsocketConsumer):
    """Accepts with headers; echoes frames as they came, empty ones included; on request,
    closes with a code and reason or crashes."""

    async def connect(self):
        await self.accept(headers=[(b"x-probe", b"yes"), (b"set-cookie", b"probe=1; Path=/")])

    async def receive(self, text_data=None, bytes_data=None):
        if text_data == "crash":
            raise RuntimeError("probe crashed on purpose")
        if text_data is not None and text_data.startswith("close "):
            _, code, reason = text_data.split(" ", 2)
            await self.close(int(code), reason)
        else:
            await self.send(text_data=text_data, bytes_data=bytes_data)


application = URLRouter([path("probe/", ProtocolProbe.as_asgi())])
