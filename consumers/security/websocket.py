"""Refuse WebSocket handshakes started by pages on origins the site does not trust.

A browser lets any page open a WebSocket to any site and sends that site's cookies with
it, so a consumer that trusts the session must check the Origin header (cross-site
WebSocket hijacking). Only ``websocket`` scopes are checked: browsers enforce the
same-origin policy on HTTP responses and Django's CSRF protection covers HTTP writes, so
``http`` and other scopes pass through untouched.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.utils.http import is_same_domain

from consumers import metrics
from consumers.types import ASGIApp, Receive, Scope, Send

__all__ = ["AllowedHostsOriginValidator", "OriginValidator", "WebsocketDenier"]

logger = logging.getLogger("consumers.security")

_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")
# The host syntax Django accepts in a Host header: a name or a bracketed IPv6 address.
_HOST_PORT = re.compile(
    r"(?P<host>[a-z0-9.-]+|\[[a-f0-9]*:[a-f0-9.:]+\])(?::(?P<port>[0-9]{1,5}))?"
)
# Kept in step with django.http.HttpRequest.get_host().
_DEBUG_HOSTS = [".localhost", "127.0.0.1", "[::1]"]


@dataclass(frozen=True)
class _Address:
    """``[scheme://]host[:port]``, lower-cased, as an origin or as an allowed pattern."""

    scheme: str | None
    host: str
    port: int | None

    @property
    def effective_port(self) -> int | None:
        return self.port if self.port is not None else _DEFAULT_PORTS.get(self.scheme or "")

    def allows(self, origin: _Address) -> bool:
        """Whether this pattern admits ``origin``; the rules are in ``OriginValidator``."""
        if self.scheme is not None and origin.scheme != self.scheme:
            return False
        if not is_same_domain(origin.host, self.host):
            return False
        if self.port is not None or self.scheme is not None:
            return origin.effective_port == self.effective_port
        return True


def _parse(value: str) -> _Address | None:
    scheme: str | None
    scheme, separator, rest = value.lower().partition("://")
    if not separator:
        scheme, rest = None, value.lower()
    elif not _SCHEME.fullmatch(scheme):
        return None
    match = _HOST_PORT.fullmatch(rest)
    if match is None:
        return None
    # As Django does for Host: "example.com." names the same site as "example.com".
    host = match["host"].removesuffix(".")
    port = int(match["port"]) if match["port"] else None
    if not host or (port is not None and port > 65535):
        return None
    return _Address(scheme, host, port)


def _pattern(value: str) -> _Address:
    address = _parse(value) if isinstance(value, str) else None
    if address is None:
        raise ValueError(
            f"{value!r} is not an allowed-origin pattern: expected '*', 'host' or '.domain', "
            "optionally with 'scheme://' before and ':port' after"
        )
    return address


def _origin_header(scope: Scope) -> str | None:
    values = [
        value.decode("latin-1")
        for name, value in scope.get("headers", ())
        if name.lower() == b"origin"
    ]
    # Several Origin headers come out joined by ", ", which no pattern matches.
    return ", ".join(values) if values else None


class WebsocketDenier:
    """ASGI application that refuses a WebSocket handshake (servers answer HTTP 403)."""

    @classmethod
    def as_asgi(cls) -> WebsocketDenier:
        # Channels' denier is a consumer, so existing routes may spell it this way.
        return cls()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "websocket.connect":
                await send({"type": "websocket.close"})
            elif message["type"] == "websocket.disconnect":
                return


class OriginValidator:
    """Lets a WebSocket handshake reach ``application`` only from an allowed origin.

    ``allowed_origins`` is a list of ``"*"`` (any origin, even none) or patterns
    ``[scheme://]host[:port]``, compared case-insensitively:

    - ``host`` matches exactly (``"example.com"``, ``"[::1]"``), or with a leading dot
      as the domain and all its subdomains (``".example.com"``);
    - a ``scheme`` must match the origin's (``"https://example.com"``);
    - a ``port`` must match the origin's, whose default is 80 for http/ws, 443 for
      https/wss (``"example.com:8443"``); a pattern with a scheme and no port wants the
      scheme's default port, so ``"https://example.com"`` is exactly that origin as
      browsers define it; a pattern with neither allows any port, like ``ALLOWED_HOSTS``.

    Unless ``"*"`` is allowed, a handshake without an Origin header, or with ``null``
    (sandboxed pages, files) or a malformed one, is refused by ``WebsocketDenier`` and
    logged on ``consumers.security``. Bad patterns raise ``ValueError`` here, at startup.
    """

    def __init__(self, application: ASGIApp, allowed_origins: Iterable[str]) -> None:
        if isinstance(allowed_origins, str | bytes):
            raise TypeError("allowed_origins must be a list of patterns, not a single string")
        self.application = application
        self.allowed_origins = list(allowed_origins)
        self._allow_any = "*" in self.allowed_origins
        self._patterns = [_pattern(value) for value in self.allowed_origins if value != "*"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        if scope["type"] == "websocket":
            origin = _origin_header(scope)
            if not self._allows(origin):
                metrics.refusing("origin")
                logger.warning(
                    "WebSocket handshake refused: origin %r not allowed for path %r",
                    origin,
                    scope.get("path"),
                )
                return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)

    def _allows(self, origin: str | None) -> bool:
        if self._allow_any:
            return True
        parsed = _parse(origin) if origin is not None else None
        # Browsers always send scheme://host; anything else is not from a browser we trust.
        if parsed is None or parsed.scheme is None or parsed.host.startswith("."):
            return False
        return any(pattern.allows(parsed) for pattern in self._patterns)


def AllowedHostsOriginValidator(application: ASGIApp) -> OriginValidator:
    """An ``OriginValidator`` allowing the hosts in ``settings.ALLOWED_HOSTS`` on any port.

    Settings are read here, once. As in Django, ``DEBUG`` with an empty ``ALLOWED_HOSTS``
    means localhost (and its subdomains), 127.0.0.1 and [::1].
    """
    allowed_hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed_hosts:
        allowed_hosts = _DEBUG_HOSTS
    return OriginValidator(application, allowed_hosts)
