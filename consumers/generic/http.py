"""HTTP consumer for long-lived or streamed responses, such as Server-Sent Events."""

from __future__ import annotations

from typing import Any

from consumers.consumer import AsyncConsumer
from consumers.exceptions import StopConsumer
from consumers.headers import Headers, encode_headers
from consumers.types import Message


class AsyncHttpConsumer(AsyncConsumer):
    """Collects the request body, then calls ``handle(body)``.

    ``handle`` may answer at once (``send_response``) or start a stream (``send_headers``
    and ``send_body(..., more_body=True)``) that later handlers, e.g. for channel layer
    messages, continue. The consumer stops once the last body chunk is sent or the client
    disconnects, calling ``disconnect()`` either way.
    """

    def __init__(self, **initkwargs: Any) -> None:
        super().__init__(**initkwargs)
        self.body: list[bytes] = []
        self._response_complete = False

    async def send_headers(self, *, status: int = 200, headers: Headers | None = None) -> None:
        await self.send(
            {"type": "http.response.start", "status": status, "headers": encode_headers(headers)}
        )

    async def send_body(self, body: bytes, *, more_body: bool = False) -> None:
        if not isinstance(body, bytes | bytearray):
            raise TypeError(f"send_body() needs bytes, got {type(body).__name__}")
        await self.send({"type": "http.response.body", "body": bytes(body), "more_body": more_body})
        self._response_complete = not more_body

    async def send_response(self, status: int, body: bytes, **kwargs: Any) -> None:
        await self.send_headers(status=status, **kwargs)
        await self.send_body(body)

    async def handle(self, body: bytes) -> None:
        raise NotImplementedError("Subclasses of AsyncHttpConsumer must provide handle(body)")

    async def disconnect(self) -> None:
        """Called once when the response is complete or the client has gone."""

    async def http_request(self, message: Message) -> None:
        self.body.append(message.get("body", b""))
        if not message.get("more_body"):
            await self.handle(b"".join(self.body))

    async def http_disconnect(self, message: Message) -> None:
        await self.disconnect()
        raise StopConsumer

    async def dispatch(self, message: Message) -> None:
        await super().dispatch(message)
        if self._response_complete:
            await self.disconnect()
            raise StopConsumer
