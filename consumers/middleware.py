"""The base class for ASGI middleware that adds things to a connection's scope."""

from consumers.types import ASGIApp, Receive, Scope, Send


class BaseMiddleware:
    """Wraps an ASGI application and hands it a copy of the scope.

    The copy matters because a server may reuse or inspect the scope it passed in: keys a
    middleware adds (``cookies``, ``session``, ``user``...) must reach only the application
    below it. Subclasses override ``__call__``, change the scope and call ``super().__call__``.
    """

    def __init__(self, inner: ASGIApp) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.inner(dict(scope), receive, send)
