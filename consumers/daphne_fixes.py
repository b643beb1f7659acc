"""Make Daphne honour the whole ASGI WebSocket spec, as Uvicorn and Hypercorn do.

Daphne 4 drops three things an application sends: the headers of ``websocket.accept``,
the ``reason`` of ``websocket.close`` and empty frames; and its WebSocket library refuses
every close code except 1000 and 3000-4999, so a consumer's 1007 (invalid payload) or 1011
(internal error) raises inside the server and the client sees a generic failure a second
later. ``install()`` replaces Daphne's reply handler with one that keeps all of them. It is
called from ``ConsumersConfig.ready()``; without Daphne it does nothing.

It also bounds what a client that stops reading can cost. Daphne buffers every frame the
application sends in the socket's write buffer, without limit, until the ping timeout
drops the client (about a minute): one stalled client can grow the process by the whole
broadcast stream. Here, once more than ``CONSUMERS_WEBSOCKET_MAX_BUFFER`` bytes (default
1 MiB) wait unsent, the connection is closed with ``CLOSE_SLOW_CLIENT`` (1008, the close
frame queued behind the backlog) and dropped; the consumer gets its disconnect (1006).
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("consumers.daphne")

# Codes a server may put in a close frame (RFC 6455 section 7.4 and the IANA registry).
_SENDABLE_CLOSE_CODES = {1000, 1001, 1002, 1003, *range(1007, 1015), *range(3000, 5000)}
CLOSE_SLOW_CLIENT = 1008
DEFAULT_MAX_BUFFER = 1024 * 1024
_max_buffer = DEFAULT_MAX_BUFFER


def install() -> None:
    global _max_buffer
    try:
        from daphne.ws_protocol import WebSocketProtocol
    except ImportError:
        return
    from django.conf import settings

    _max_buffer = getattr(settings, "CONSUMERS_WEBSOCKET_MAX_BUFFER", DEFAULT_MAX_BUFFER)
    if getattr(WebSocketProtocol.handle_reply, "consumers_fix", False):
        return
    daphne_handle_reply = WebSocketProtocol.handle_reply

    def handle_reply(self: Any, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "websocket.accept" and hasattr(self, "handshake_deferred"):
            _accept(self, message)
        elif kind == "websocket.close" and self.state != self.STATE_CONNECTING:
            _close(self, message)
        elif kind == "websocket.send" and self.state != self.STATE_CONNECTING:
            _send(self, message)
        else:
            daphne_handle_reply(self, message)

    handle_reply.consumers_fix = True  # type: ignore[attr-defined]
    WebSocketProtocol.handle_reply = handle_reply


def _accept(protocol: Any, message: dict[str, Any]) -> None:
    headers: dict[str, list[str]] = {}
    for name, value in message.get("headers") or ():
        headers.setdefault(name.decode("latin-1"), []).append(value.decode("latin-1"))
    protocol.handshake_deferred.callback((message.get("subprotocol"), headers))
    del protocol.handshake_deferred


def _close(protocol: Any, message: dict[str, Any]) -> None:
    code = message.get("code") or 1000
    if code not in _SENDABLE_CLOSE_CODES:
        raise ValueError(f"websocket.close code {code} may not be sent by a server")
    reason = (message.get("reason") or "").encode()[:123] or None
    protocol.sendCloseFrame(code=code, reasonUtf8=reason)


def _send(protocol: Any, message: dict[str, Any]) -> None:
    text, data = message.get("text"), message.get("bytes")
    if (text is None) == (data is None):
        raise ValueError("websocket.send needs exactly one of 'text' and 'bytes'")
    if protocol.state != protocol.STATE_OPEN:
        return  # closing: as for any send after close, the frame is dropped
    if text is not None:
        protocol.sendMessage(text.encode("utf-8"), False)
    else:
        protocol.sendMessage(data, True)
    unsent = _unsent_bytes(protocol.transport)
    if unsent > _max_buffer:
        logger.warning(
            "Closing the WebSocket of %s with %d: it stopped reading (%d bytes unsent, "
            "over CONSUMERS_WEBSOCKET_MAX_BUFFER of %d)",
            ":".join(map(str, protocol.client_addr or ("?",))),
            CLOSE_SLOW_CLIENT,
            unsent,
            _max_buffer,
        )
        protocol.sendCloseFrame(code=CLOSE_SLOW_CLIENT, reasonUtf8=b"too slow: buffer full")
        protocol.dropConnection(abort=True)


def _unsent_bytes(transport: Any) -> int:
    """Bytes waiting in a Twisted socket transport's write buffer (0 if unknown)."""
    try:
        pending = len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    except AttributeError:  # not a plain socket transport (e.g. TLS): no bound here
        return 0
    return int(pending)
