"""WebSocket and worker-channel routes of the reference project."""

from django.urls import path

from chat.routing import websocket_urlpatterns as chat_urlpatterns
from chat.routing import worker_channels as chat_workers
from consumers.routing import ChannelNameRouter
from project.consumers import EchoConsumer, LogWorker

websocket_urlpatterns = [
    path("ws/echo/", EchoConsumer.as_asgi()),
    *chat_urlpatterns,
]

channel_routes = ChannelNameRouter({"log": LogWorker.as_asgi(), **chat_workers})
