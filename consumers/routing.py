"""Routers: pick the ASGI application for a connection by protocol, URL path or channel name."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, cast

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.urls import URLPattern, URLResolver
from django.urls.resolvers import RegexPattern, RoutePattern
from django.utils.module_loading import import_string

from consumers import metrics
from consumers.types import ASGIApp, Receive, Scope, Send

logger = logging.getLogger("consumers.routing")


def get_default_application() -> ASGIApp:
    """The application named by ``settings.ASGI_APPLICATION``."""
    path = getattr(settings, "ASGI_APPLICATION", None)
    if not path:
        raise ImproperlyConfigured(
            "ASGI_APPLICATION is not set: point it at your application, "
            "e.g. ASGI_APPLICATION = 'project.asgi.application'"
        )
    try:
        application: ASGIApp = import_string(path)
        return application
    except ImportError as error:
        raise ImproperlyConfigured(f"Cannot import ASGI_APPLICATION {path!r}: {error}") from error


class NoRouteFound(ValueError):
    """No route of a ``URLRouter`` matches the connection's path.

    A ``ValueError``, as Channels raises. The outermost ``ProtocolTypeRouter`` turns it into
    a refused handshake or a 404, so a served application never crashes on a bad path.
    """


# Set while a ProtocolTypeRouter runs, so routers nested inside it leave the answer to it.
_outermost_router: ContextVar[bool] = ContextVar("consumers_outermost_router", default=False)


class ProtocolTypeRouter:
    """Sends each connection to the application for its scope type (``http``, ``websocket``,
    ``channel``...) and returns what that application returns.

    A ``lifespan`` scope without an application of its own is answered here, so servers
    that send it (Uvicorn, Hypercorn) start cleanly. The outermost ``ProtocolTypeRouter``
    answers an HTTP or WebSocket path no ``URLRouter`` knows with a 404 or a refused
    handshake and one log line, instead of an exception in the server.
    """

    def __init__(self, application_mapping: Mapping[str, ASGIApp]) -> None:
        self.application_mapping = dict(application_mapping)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        application = self.application_mapping.get(scope["type"])
        if application is None:
            if scope["type"] == "lifespan":
                return await _answer_lifespan(receive, send)
            raise ValueError(
                f"No application configured for scope type {scope['type']!r} "
                f"(ProtocolTypeRouter knows {sorted(self.application_mapping)})"
            )
        if _outermost_router.get() or scope["type"] not in ("http", "websocket"):
            return await _started(application, scope, receive, send)
        _outermost_router.set(True)  # unset below as set(False), not reset(): no token kept
        # The metrics' watch in this frame, not in a coroutine of its own (see _started).
        watch = metrics.watching(scope, receive, send)
        try:
            if watch is None:
                return await _started(application, scope, receive, send)
            try:
                return await _started(application, scope, watch.receive, watch.send)
            finally:
                watch.end(1006)
        except NoRouteFound:
            await _refuse(scope, receive, send)
            return None
        finally:
            _outermost_router.set(False)  # what it was: only an outermost router gets here


async def _answer_lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


# The application, its positional and keyword arguments, and the path left for it to route.
Match = tuple[ASGIApp, tuple[Any, ...], dict[str, Any], str]


class URLRouter:
    """Routes HTTP and WebSocket connections by path with Django's ``path()``/``re_path()``.

    Another ``URLRouter`` as a route's target matches the route as a prefix and resolves the
    rest of the path, as ``include()`` does; so does any application with a true
    ``_path_routing`` attribute, as in Channels, which gets the rest in
    ``scope["path_remaining"]``. Matched arguments land in
    ``scope["url_route"]`` as ``{"args": ..., "kwargs": ...}``. A path that matches nothing,
    or lies outside ``root_path``, raises ``NoRouteFound`` (a ``ValueError``, as in
    Channels), which the outermost ``ProtocolTypeRouter`` answers.
    """

    # Tells routers (ours and Channels') to match a route to this router as a prefix.
    _path_routing = True

    def __init__(self, routes: Sequence[URLPattern]) -> None:
        self.routes = list(routes)
        self._patterns = [_pattern_for(route) for route in self.routes]
        self._literals = [_literal_for(pattern) for pattern in self._patterns]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        return await self._route(scope, receive, send)

    def _route(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[Any]:
        """What ``__call__`` awaits: the routed application's awaitable for the connection,
        or ``NoRouteFound`` at once. For a caller that awaits it in its own frame."""
        path = _routing_path(scope)
        match = None if path is None else self.resolve(path)
        if match is None:
            raise NoRouteFound(f"No route found for path {scope.get('path')!r}.")
        application, args, kwargs, remaining = match
        scope = dict(scope)
        url_route = scope.get("url_route")
        scope["path_remaining"] = remaining
        if url_route is None:
            scope["url_route"] = {"args": tuple(args), "kwargs": dict(kwargs)}
        else:
            scope["url_route"] = {
                "args": (*url_route["args"], *args),
                "kwargs": {**url_route["kwargs"], **kwargs},
            }
        return _started(application, scope, receive, send)

    def resolve(self, path: str) -> Match | None:
        """The application and arguments for a path, trying nested routers depth first."""
        routes = zip(self.routes, self._patterns, self._literals, strict=True)
        for route, pattern, literal in routes:
            if literal is None:
                matched = pattern.match(path)
                if not matched:
                    continue
                rest, args, kwargs = matched
                kwargs = {**kwargs, **route.default_args}
            else:  # what pattern.match gives, without its regex
                route_text, is_endpoint = literal
                if path == route_text:
                    rest = ""
                elif is_endpoint or not path.startswith(route_text):
                    continue
                else:
                    rest = path[len(route_text) :]
                args, kwargs = (), dict(route.default_args)
            if isinstance(route.callback, URLRouter):
                inner = route.callback.resolve(rest)
                if inner is None:
                    continue
                application, inner_args, inner_kwargs, remaining = inner
                return application, (*args, *inner_args), {**kwargs, **inner_kwargs}, remaining
            return cast(ASGIApp, route.callback), tuple(args), kwargs, rest
        return None


def _started(application: ASGIApp, scope: Scope, receive: Receive, send: Send) -> Awaitable[Any]:
    """``application(scope, receive, send)``, less the coroutines of a ``URLRouter`` and an
    ``as_asgi()`` app that only pass the connection on: each would stay suspended for the
    whole connection (memory per connection) and be resumed at each wake-up of its task."""
    if type(application).__call__ is URLRouter.__call__:
        return cast(URLRouter, application)._route(scope, receive, send)
    start = getattr(application, "_asgi_start", None)
    # Its own, not one functools.wraps() copied onto a wrapper that must run.
    if start is not None and getattr(start, "app", None) is application:
        return cast(Awaitable[Any], start(scope, receive, send))
    return cast(Awaitable[Any], application(scope, receive, send))


def _pattern_for(route: URLPattern | URLResolver) -> RoutePattern | RegexPattern:
    """The pattern to match a route with: a prefix pattern when a router is nested in it."""
    if isinstance(route, URLResolver):
        raise ImproperlyConfigured(
            f"URLRouter does not take include() ({route.pattern}): "
            "nest another URLRouter as the route's target instead"
        )
    pattern = route.pattern
    if not isinstance(pattern, RoutePattern | RegexPattern):
        raise ImproperlyConfigured(f"URLRouter takes path() and re_path() routes, not {route!r}")
    if getattr(route.callback, "_path_routing", False) is True:
        # The nested router resolves the rest of the path, so match only the prefix.
        return type(pattern)(str(pattern), is_endpoint=False)
    return pattern


def _literal_for(pattern: RoutePattern | RegexPattern) -> tuple[str, bool] | None:
    """A ``path()`` route without converters as its text and whether it must match the
    whole path: comparing strings gives what its regex (the escaped text, anchored at the
    start, and at the end for an endpoint) would, a few hundred ns less for each route
    tried. None for any other pattern, or one whose regex is not that shape."""
    if not isinstance(pattern, RoutePattern) or pattern.converters:
        return None
    # A translated route (gettext_lazy) has a regex per active language: not one text.
    if not isinstance(getattr(pattern, "_route", None), str):
        return None
    text = str(pattern)
    is_endpoint = getattr(pattern, "_is_endpoint", None)
    if type(is_endpoint) is not bool:
        return None
    expected = "^" + re.escape(text) + ("\\Z" if is_endpoint else "")
    if pattern.regex.pattern != expected:  # a Django that builds it otherwise: its regex
        return None
    return text, is_endpoint


def _routing_path(scope: Scope) -> str | None:
    """The path still to route, relative to ``root_path`` and without its leading slash;
    ``None`` for a path outside ``root_path``, which no route can match."""
    remaining = scope.get("path_remaining")
    if remaining:
        return str(remaining)
    if "path" not in scope:
        raise ValueError("No 'path' key in connection scope, cannot route URLs")
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root:
        if not path.startswith(root):
            return None
        path = path[len(root) :]
    return path.removeprefix("/")


async def _refuse(scope: Scope, receive: Receive, send: Send) -> None:
    """Answer a connection no route matched: a refused handshake or a 404."""
    logger.warning("No route for %s path %r", scope["type"], scope.get("path"))
    if scope["type"] == "websocket":
        metrics.refused_route()
        message = await receive()
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.close", "code": 1000})
        return
    await send(
        {
            "type": "http.response.start",
            "status": 404,
            "headers": [(b"content-type", b"text/plain; charset=utf-8")],
        }
    )
    await send({"type": "http.response.body", "body": b"Not Found"})


class ChannelNameRouter:
    """Sends worker messages to the application for their ``scope["channel"]``."""

    def __init__(self, application_mapping: Mapping[str, ASGIApp]) -> None:
        self.application_mapping = dict(application_mapping)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        if "channel" not in scope:
            raise ValueError(
                "ChannelNameRouter got a scope without 'channel': it routes only the "
                "'channel' scope type that runworker creates"
            )
        try:
            application = self.application_mapping[scope["channel"]]
        except KeyError:
            raise ValueError(
                f"No application configured for channel {scope['channel']!r} "
                f"(ChannelNameRouter knows {sorted(self.application_mapping)})"
            ) from None
        return await application(scope, receive, send)
