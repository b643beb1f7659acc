"""An ASGI application for a project without the ``consumers`` app (settings from the
environment: ``tests.e2e.settings_without_consumers`` or ``tests.e2e.settings_minimal``).

- ``/json/``: a JSON echo in group ``room``; ``{"stats": true}`` answers how many
  ``disconnect()`` calls ran and how many channels are still in the group;
- ``/json-64k/``: the same with ``max_frame_size`` 64 KiB;
- ``/sink-64k/``: decodes JSON frames of up to 64 KiB and does nothing with them;
- ``/flood/``: tests/flood_consumer.py's ``Flood``, with its ``disconnect()`` counted too.
"""

from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()  # sets Django up

from django.urls import path  # noqa: E402

from consumers.generic.websocket import AsyncJsonWebsocketConsumer  # noqa: E402
from consumers.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from tests.flood_consumer import Flood  # noqa: E402

DISCONNECTS = [0]


class JsonEcho(AsyncJsonWebsocketConsumer):
    groups = ["room"]

    async def receive_json(self, content, **kwargs):
        if content == {"stats": True}:
            members = self.channel_layer._groups.live_members("room")
            content = {"disconnects": DISCONNECTS[0], "members": len(members)}
        await self.send_json(content)

    async def disconnect(self, code):
        DISCONNECTS[0] += 1


class Sink(AsyncJsonWebsocketConsumer):
    max_frame_size = 64 * 1024

    async def receive_json(self, content, **kwargs):
        pass


class CountedFlood(Flood):
    async def disconnect(self, code):
        DISCONNECTS[0] += 1


application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter(
            [
                path("json/", JsonEcho.as_asgi()),
                path("json-64k/", JsonEcho.as_asgi(max_frame_size=64 * 1024)),
                path("sink-64k/", Sink.as_asgi()),
                path("flood/", CountedFlood.as_asgi()),
            ]
        ),
    }
)
