"""WebSocket and worker-channel routes of the reference project."""

from django.urls import path

from consumers.routing import ChannelNameRouter
from project.consumers import EchoConsumer, LogWorker

websocket_urlpatterns = [
    path("ws/echo/", EchoConsumer.as_asgi()),
]

channel_routes = ChannelNameRouter({"log": LogWorker.as_asgi()})
