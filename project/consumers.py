"""The reference project's consumers: a WebSocket echo and a background worker."""

from __future__ import annotations

import logging
from typing import Any

from chat import limits
from chat.conf import setting
from consumers.consumer import SyncConsumer
from consumers.generic.websocket import AsyncJsonWebsocketConsumer

logger = logging.getLogger(__name__)

CLOSE_RATE_LIMITED = 4029
CLOSE_TOO_MANY_SOCKETS = 4030


class EchoConsumer(AsyncJsonWebsocketConsumer):
    """Echoes each JSON message back, tagged with who sent it. Open to anyone, so frames
    are limited per client address over all its sockets (``CHAT_ECHO_RATE``): an
    over-limit frame is refused, and a client that keeps on is closed with 4029. Its
    sockets count towards the address's cap with the chat's (4030 beyond it)."""

    strikes = 0
    slot = ""

    async def connect(self) -> None:
        await self.accept()
        address = limits.client_address_of(self.scope)
        slot = f"sockets:address:{address}"
        if not await limits.claim(slot, self.channel_name, setting("CHAT_MAX_SOCKETS_PER_ADDRESS")):
            await self.close(CLOSE_TOO_MANY_SOCKETS, "too many open connections")
            return
        self.slot = slot
        user = self.scope.get("user")
        name = user.get_username() if user is not None and user.is_authenticated else None
        self.sender = f"echo:address:{address}"
        await self.send_json({"type": "welcome", "user": name})

    async def disconnect(self, code: int) -> None:
        if self.slot:
            await limits.release(self.slot, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not self.slot:  # refused: frames sent before the close are ignored
            return
        if await limits.allow(self.sender, *setting("CHAT_ECHO_RATE")):
            await self.send_json({"type": "echo", "message": content})
            return
        self.strikes += 1
        if self.strikes >= setting("CHAT_STRIKES_BEFORE_CLOSE"):
            await self.close(CLOSE_RATE_LIMITED, "too many messages")
        else:
            await self.send_json({"type": "error", "code": "rate_limited"})


class LogWorker(SyncConsumer):
    """A worker for ``python manage.py runworker log``: logs what it is sent."""

    def log_message(self, message: dict[str, Any]) -> None:
        logger.info("Worker got: %s", message.get("text", ""))
