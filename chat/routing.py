"""The chat's WebSocket route and its worker channel."""

from django.urls import re_path

from chat.consumers import ChatConsumer, ModerationWorker
from chat.models import ROOM_NAME_PATTERN
from chat.moderation import MODERATION_CHANNEL

websocket_urlpatterns = [
    re_path(rf"^ws/chat/(?P<room>{ROOM_NAME_PATTERN})/$", ChatConsumer.as_asgi()),
]

worker_channels = {MODERATION_CHANNEL: ModerationWorker.as_asgi()}
