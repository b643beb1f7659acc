"""Drive an ASGI application in tests by speaking the protocol to it, no server needed."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import unquote, urlsplit

from django.conf import settings

from consumers.headers import Headers, encode_headers
from consumers.types import ASGIApp, Message, Scope


class ApplicationCommunicator:
    """Runs one instance of an ASGI application and exchanges messages with it.

    The application starts at the first ``send_input`` or ``receive_output``, so the scope
    can still be changed before then (``force_login`` adds a cookie that way). An exception
    raised by the application surfaces from the next call that waits on it.
    """

    def __init__(self, application: ASGIApp, scope: Scope) -> None:
        self.application = application
        self.scope = scope
        self._input: asyncio.Queue[Message] = asyncio.Queue()
        self._output: asyncio.Queue[Message] = asyncio.Queue()
        self._instance: asyncio.Future[None] | None = None

    @property
    def instance(self) -> asyncio.Future[None]:
        if self._instance is None:
            self._instance = asyncio.ensure_future(
                self.application(self.scope, self._input.get, self._output.put)
            )
        return self._instance

    async def send_input(self, message: Message) -> None:
        """Give the application a message, as a server would."""
        if self.instance.done():
            self.instance.result()
            raise RuntimeError(f"The application has already finished; cannot send {message!r}")
        await self._input.put(message)

    async def receive_output(self, timeout: float = 1) -> Message:
        """The next message the application sent; raises its exception if it crashed, or
        ``TimeoutError`` (stopping it) if nothing comes in time."""
        getter: asyncio.Future[Any] = asyncio.ensure_future(self._output.get())
        await asyncio.wait(
            {getter, self.instance}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if getter.done():
            return getter.result()
        getter.cancel()
        if self.instance.done():
            self.instance.result()
            raise AssertionError("The application finished without sending anything")
        await self._stop()
        raise TimeoutError(f"The application sent nothing within {timeout} s")

    async def receive_nothing(self, timeout: float = 0.1, interval: float = 0.01) -> bool:
        """True if the application sends nothing for ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._output.empty() and loop.time() < deadline:
            await asyncio.sleep(interval)
        return self._output.empty()

    async def wait(self, timeout: float = 1) -> None:
        """Wait for the application to finish; raises its exception, or ``TimeoutError``."""
        done, _ = await asyncio.wait({self.instance}, timeout=timeout)
        if not done:
            await self._stop()
            raise TimeoutError(f"The application did not finish within {timeout} s")
        self.instance.result()

    async def _stop(self) -> None:
        self.instance.cancel()
        await asyncio.gather(self.instance, return_exceptions=True)


class _LoggedInMixin:
    """Adds ``force_login``: a real session for a user, sent as the session cookie."""

    scope: Scope

    async def force_login(self, user: Any, backend: str | None = None) -> None:
        """Log ``user`` in without a password, as Django's test ``Client.force_login`` does.

        Creates and saves a session through ``consumers.auth.login`` and adds its cookie to
        this communicator's request, so the whole middleware stack sees a logged-in user.
        Call it before ``connect()`` / ``get_response()``.
        """
        from importlib import import_module

        from consumers.auth import login

        session = import_module(settings.SESSION_ENGINE).SessionStore()
        backend = backend or settings.AUTHENTICATION_BACKENDS[0]
        await login({"session": session}, user, backend=backend)
        cookie = f"{settings.SESSION_COOKIE_NAME}={session.session_key}".encode()
        self.scope["headers"] = [
            *self.scope["headers"],
            (b"cookie", cookie),
        ]


def _path_and_query(path: str) -> tuple[str, bytes]:
    parts = urlsplit(path)
    return unquote(parts.path), parts.query.encode("latin-1")


class HttpCommunicator(_LoggedInMixin, ApplicationCommunicator):
    """Sends one HTTP request and collects the whole response."""

    def __init__(
        self,
        application: ASGIApp,
        method: str,
        path: str,
        body: bytes = b"",
        headers: Headers | None = None,
    ) -> None:
        route, query = _path_and_query(path)
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method.upper(),
            "scheme": "http",
            "path": route,
            "raw_path": path.encode("latin-1"),
            "query_string": query,
            "root_path": "",
            "headers": encode_headers(headers),
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        super().__init__(application, scope)
        self.body = body

    async def get_response(self, timeout: float = 1) -> dict[str, Any]:
        """Send the request and return ``{"status", "headers", "body"}``."""
        await self.send_input({"type": "http.request", "body": self.body})
        start = await self.receive_output(timeout)
        if start["type"] != "http.response.start":
            raise AssertionError(f"Expected http.response.start, got {start!r}")
        chunks = []
        while True:
            message = await self.receive_output(timeout)
            if message["type"] != "http.response.body":
                raise AssertionError(f"Expected http.response.body, got {message!r}")
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        await self.wait(timeout)
        return {
            "status": start["status"],
            "headers": start.get("headers", []),
            "body": b"".join(chunks),
        }


class WebsocketCommunicator(_LoggedInMixin, ApplicationCommunicator):
    """Plays the client side of one WebSocket connection."""

    def __init__(
        self,
        application: ASGIApp,
        path: str,
        headers: Headers | None = None,
        subprotocols: list[str] | None = None,
        spec_version: str | None = None,
    ) -> None:
        route, query = _path_and_query(path)
        scope: Scope = {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": spec_version or "2.3"},
            "http_version": "1.1",
            "scheme": "ws",
            "path": route,
            "raw_path": path.encode("latin-1"),
            "query_string": query,
            "root_path": "",
            "headers": encode_headers(headers),
            "subprotocols": subprotocols or [],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        super().__init__(application, scope)

    async def connect(self, timeout: float = 1) -> tuple[bool, str | int | None]:
        """Open the connection: ``(True, subprotocol)`` if accepted, else
        ``(False, close code)``."""
        await self.send_input({"type": "websocket.connect"})
        response = await self.receive_output(timeout)
        if response["type"] == "websocket.close":
            return False, response.get("code", 1000)
        if response["type"] != "websocket.accept":
            raise AssertionError(f"Expected websocket.accept or close, got {response!r}")
        return True, response.get("subprotocol")

    async def send_to(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Send one frame from the client."""
        if text_data is not None:
            await self.send_input({"type": "websocket.receive", "text": text_data})
        elif bytes_data is not None:
            await self.send_input({"type": "websocket.receive", "bytes": bytes_data})
        else:
            raise ValueError("send_to() needs text_data or bytes_data")

    async def send_json_to(self, data: Any) -> None:
        await self.send_to(text_data=json.dumps(data))

    async def receive_from(self, timeout: float = 1) -> str | bytes:
        """The next frame the application sent, as str or bytes."""
        message = await self.receive_output(timeout)
        if message["type"] != "websocket.send":
            raise AssertionError(f"Expected a websocket.send frame, got {message!r}")
        return message["text"] if message.get("text") is not None else message["bytes"]

    async def receive_json_from(self, timeout: float = 1) -> Any:
        frame = await self.receive_from(timeout)
        if not isinstance(frame, str):
            raise AssertionError(f"Expected a JSON text frame, got bytes {frame!r}")
        return json.loads(frame)

    async def receive_close(self, timeout: float = 1) -> tuple[int, str]:
        """Wait for the application to close the connection: ``(code, reason)``."""
        message: Message = await self.receive_output(timeout)
        if message["type"] != "websocket.close":
            raise AssertionError(f"Expected websocket.close, got {message!r}")
        return message.get("code", 1000), message.get("reason", "")

    async def disconnect(self, code: int = 1000, timeout: float = 1) -> None:
        """Close from the client side and wait for the application to finish."""
        await self.send_input({"type": "websocket.disconnect", "code": code})
        await self.wait(timeout)
