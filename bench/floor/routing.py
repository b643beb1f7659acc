"""Routing at its floor: by scope type, then by the first matching URL pattern."""

from __future__ import annotations

from typing import Any

ASGIApp = Any


class ProtocolTypeRouter:
    def __init__(self, routes: dict[str, ASGIApp]) -> None:
        self.routes = routes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.routes[scope["type"]](scope, receive, send)


class URLRouter:
    """Django ``path()`` patterns, matched against the path without its leading slash."""

    def __init__(self, patterns: list[Any]) -> None:
        self.patterns = patterns

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope["path"].lstrip("/")
        for pattern in self.patterns:
            match = pattern.pattern.match(path)
            if match:
                await pattern.callback(dict(scope, url_route={"kwargs": match[2]}), receive, send)
                return
        raise ValueError(f"no route for {path!r}")
