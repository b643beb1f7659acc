"""The base class for ASGI middleware that adds things to a connection's scope."""

from typing import Any

from consumers.types import ASGIApp, Receive, Scope, Send


class BaseMiddleware:
    """Wraps an ASGI application and hands it a copy of the scope.

    The copy matters because a server may reuse or inspect the scope it passed in: keys a
    middleware adds (``cookies``, ``session``, ``user``...) must reach only the application
    below it. Subclasses override ``__call__``, change the scope and return
    ``await super().__call__(...)``: what the application returns is passed up, as in Channels.
    """

    def __init__(self, inner: ASGIApp) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        return await self.inner(dict(scope), receive, send)
