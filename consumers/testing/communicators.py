"""Drive an ASGI application in tests by speaking the protocol to it, no server needed.

The communicators are asgiref's ``ApplicationCommunicator`` underneath, as in Channels, so
``future``, ``input_queue``, ``output_queue``, ``send_input``, ``receive_output`` and
``wait`` keep asgiref's meaning, and libraries that subclass or override them work.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import unquote, urlsplit

from asgiref.testing import ApplicationCommunicator as BaseApplicationCommunicator
from django.conf import settings

from consumers.headers import Headers, encode_headers
from consumers.types import ASGIApp, Message, Scope


class ApplicationCommunicator(BaseApplicationCommunicator):
    """Runs one instance of an ASGI application and exchanges messages with it.

    The application starts at the first ``send_input`` or ``receive_output``, so the scope
    can still be changed before then (``force_login`` adds a cookie that way). Sending to an
    application that has finished is ignored, unless it crashed: then its exception is
    raised, as asgiref does.
    """

    # asgiref's __del__ reads it: there must be one even if a subclass's __init__ refused
    # its arguments before asgiref's ran.
    _future = None

    async def receive_output(self, timeout: float = 1) -> Message:
        """The next message the application sent.

        Raises the application's exception if it crashed, or ``TimeoutError`` (cancelling
        it, as asgiref does) if nothing comes in time. Unlike asgiref's, a crash or an
        application that ended without sending is reported at once, not after ``timeout``.
        """
        if self.future.done():
            self.future.result()
        getter: asyncio.Future[Message] = asyncio.ensure_future(self.output_queue.get())
        await asyncio.wait({getter, self.future}, timeout=timeout, return_when="FIRST_COMPLETED")
        if getter.done():
            return getter.result()
        getter.cancel()
        if self.future.done():
            self.future.result()
            raise TimeoutError("The application finished without sending anything")
        self.future.cancel()
        await asyncio.gather(self.future, return_exceptions=True)
        raise TimeoutError(f"The application sent nothing within {timeout} s")


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


def _request_scope(path: str, headers: Headers | None) -> Scope:
    """The scope keys HTTP and WebSocket requests share, as a server would fill them."""
    if not isinstance(path, str):
        raise TypeError(f"path must be a str, got {type(path).__name__}")
    parts = urlsplit(path)
    return {
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "path": unquote(parts.path),
        "raw_path": parts.path.encode("utf-8"),
        "query_string": parts.query.encode("utf-8"),
        "root_path": "",
        "headers": encode_headers(headers),
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


class HttpCommunicator(_LoggedInMixin, ApplicationCommunicator):
    """Sends one HTTP request and collects the response."""

    def __init__(
        self,
        application: ASGIApp,
        method: str,
        path: str,
        body: bytes = b"",
        headers: Headers | None = None,
    ) -> None:
        if not isinstance(body, bytes):
            # AssertionError, as Channels' communicator raises for a misused helper.
            raise AssertionError(f"body must be bytes, got {type(body).__name__}")
        scope = {
            **_request_scope(path, headers),
            "type": "http",
            "method": method.upper(),
            "scheme": "http",
        }
        super().__init__(application, scope)
        self.body = body
        self.sent_request = False

    async def get_response(self, timeout: float = 1) -> dict[str, Any]:
        """Send the request (once) and return the response start message without its
        ``type``, plus the whole ``body``: ``{"status", "headers", "body", ...}``.

        Returns when the last body chunk arrives; the application may still be running.
        """
        if not self.sent_request:
            self.sent_request = True
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
        response = {key: value for key, value in start.items() if key != "type"}
        response.setdefault("headers", [])
        response["body"] = b"".join(chunks)
        return response


class WebsocketCommunicator(_LoggedInMixin, ApplicationCommunicator):
    """Plays the client side of one WebSocket connection.

    ``response_headers`` holds the headers the application sent with ``websocket.accept``,
    as it sent them (``None`` until it accepts).
    """

    def __init__(
        self,
        application: ASGIApp,
        path: str,
        headers: Headers | None = None,
        subprotocols: list[str] | None = None,
        spec_version: str | None = None,
    ) -> None:
        scope: Scope = {
            **_request_scope(path, headers),
            "type": "websocket",
            "scheme": "ws",
            "subprotocols": subprotocols or [],
        }
        scope["asgi"]["spec_version"] = spec_version or "2.3"
        super().__init__(application, scope)
        self.response_headers: list[tuple[bytes, bytes]] | None = None

    async def connect(self, timeout: float = 1) -> tuple[bool, str | int | None]:
        """Open the connection: ``(True, subprotocol)`` if accepted, else
        ``(False, close code)``."""
        await self.send_input({"type": "websocket.connect"})
        response = await self.receive_output(timeout)
        if response["type"] == "websocket.close":
            return False, response.get("code", 1000)
        if response["type"] != "websocket.accept":
            raise AssertionError(f"Expected websocket.accept or close, got {response!r}")
        self.response_headers = response.get("headers", [])
        return True, response.get("subprotocol")

    async def send_to(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Send one frame from the client."""
        if text_data is not None:
            await self.send_input({"type": "websocket.receive", "text": text_data})
        elif bytes_data is not None:
            await self.send_input({"type": "websocket.receive", "bytes": bytes_data})
        else:
            raise AssertionError("send_to() needs text_data or bytes_data")

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
        """Close from the client side and wait for the application to finish.

        A second call, after the application has finished, does nothing (it raises the
        application's exception if it crashed)."""
        await self.send_input({"type": "websocket.disconnect", "code": code})
        await self.wait(timeout)
