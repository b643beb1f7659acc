"""The reference project's consumers: a WebSocket echo and a background worker."""

from __future__ import annotations

import logging
from typing import Any

from consumers.consumer import SyncConsumer
from consumers.generic.websocket import AsyncJsonWebsocketConsumer

logger = logging.getLogger(__name__)


class EchoConsumer(AsyncJsonWebsocketConsumer):
    """Echoes each JSON message back, tagged with who sent it."""

    async def connect(self) -> None:
        await self.accept()
        user = self.scope.get("user")
        name = user.get_username() if user is not None and user.is_authenticated else None
        await self.send_json({"type": "welcome", "user": name})

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.send_json({"type": "echo", "message": content})


class LogWorker(SyncConsumer):
    """A worker for ``python manage.py runworker log``: logs what it is sent."""

    def log_message(self, message: dict[str, Any]) -> None:
        logger.info("Worker got: %s", message.get("text", ""))
