"""What Daphne needs to serve consumers as Uvicorn and Hypercorn do: the one module that
changes Daphne, and checks Daphne's shape before it changes anything.

Daphne 4 drops the headers of ``websocket.accept``, the ``reason`` of ``websocket.close``
and empty frames; refuses every close code except 1000 and 3000-4999 (a consumer's 1007 or
1011 raises inside the server and the client sees a 1011 a second later); turns a frame
over its size limit or invalid UTF-8 into a bare TCP drop (Autobahn's ``failByDrop``)
instead of 1009/1007; buffers without limit for a client that stops reading, until the
ping timeout; and cancels every application at once on SIGTERM. Here:

- ``WebSocketProtocol`` extends Daphne's protocol: it keeps what the application sends,
  closes a client whose unsent bytes pass ``CONSUMERS_WEBSOCKET_MAX_BUFFER`` (default
  1 MiB, plain TCP or TLS) with ``CLOSE_SLOW_CLIENT``, logs a frame Autobahn refused
  (one line), and writes a frame to a plain TCP socket at once when nothing waits before
  it (``write_now``), as asyncio's transports do, instead of at the reactor's next turn.
- Daphne builds its ``Server`` itself (the CLI, ``runserver``, the live-server test case),
  in ``runserver`` before the application is imported, so the server cannot be
  subclassed on every path. ``install()`` patches one method, ``Server.listen_success``,
  which Daphne calls once per endpoint before it serves anything: it gives the server's
  WebSocket factory our protocol and ``failByDrop=False``, and the server the drain of
  ``consumers.shutdown`` as its shutdown step (Daphne looks that up only after listening).

``install()`` runs when ``consumers`` is imported in a process that has imported Daphne,
so it holds whatever ``INSTALLED_APPS`` says. If Daphne's shape is not the one tested
(``TESTED_VERSIONS`` and every attribute listed in ``_SHAPE``), nothing is changed and
one warning says so, as does the system check ``consumers.W001``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
from typing import Any

logger = logging.getLogger("consumers.daphne")

#: Daphne releases this module was tested with: (major, minor) from, up to excluded.
TESTED_VERSIONS = ((4, 2), (4, 3))
# Codes a server may put in a close frame (RFC 6455 section 7.4 and the IANA registry).
SENDABLE_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015), *range(3000, 5000)})
CLOSE_SLOW_CLIENT = 1008
DEFAULT_MAX_BUFFER = 1024 * 1024
# Close codes Autobahn fails a connection with on a client's bad frame.
_REFUSAL_CODES = frozenset({1002, 1007, 1009})
HINT = (
    "Install the Daphne release in pyproject.toml (daphne>={}.{},<{}.{}), or run on "
    "Uvicorn or Hypercorn, which need no adaptation."
).format(*TESTED_VERSIONS[0], *TESTED_VERSIONS[1])

# What this module reads or replaces, by module, class and attribute.
_SHAPE: dict[str, dict[str, tuple[str, ...]]] = {
    "daphne.server": {"Server": ("listen_success", "kill_all_applications", "run")},
    "daphne.ws_protocol": {
        "WebSocketProtocol": (
            "handle_reply",
            "onClose",
            "sendCloseFrame",
            "sendMessage",
            "sendData",
            "dropConnection",
            "STATE_CONNECTING",
            "STATE_OPEN",
        ),
        "WebSocketFactory": ("protocol", "setProtocolOptions"),
    },
    "twisted.internet.abstract": {
        "FileDescriptor": ("dataBuffer", "offset", "write", "disconnecting", "_writeDisconnected")
    },
    "twisted.internet.tcp": {"Connection": ("TLS", "writeSomeData")},
}

_installed = False
_warned: set[str] = set()
#: True once a Daphne server of this process listens with the adaptations.
serving = False


def problems() -> list[str]:
    """How the importable Daphne differs from the one tested; empty if it does not."""
    try:
        import daphne
    except ImportError:
        return []
    found: list[str] = []
    version = tuple(int(part) for part in daphne.__version__.split(".")[:2] if part.isdigit())
    if not TESTED_VERSIONS[0] <= version < TESTED_VERSIONS[1]:
        found.append(f"Daphne {daphne.__version__} is outside the tested range")
    for module_name, classes in _SHAPE.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            found.append(f"{module_name} cannot be imported ({error})")
            continue
        for class_name, attributes in classes.items():
            cls = getattr(module, class_name, None)
            if cls is None:
                found.append(f"{module_name}.{class_name} is missing")
                continue
            found.extend(
                f"{module_name}.{class_name}.{name} is missing"
                for name in attributes
                if not hasattr(cls, name)
            )
    if not found:
        found.extend(_signature_problems())
    return found


def _signature_problems() -> list[str]:
    from daphne.server import Server
    from daphne.ws_protocol import WebSocketFactory

    found = []
    if list(inspect.signature(Server.listen_success).parameters) != ["self", "port"]:
        found.append("daphne.server.Server.listen_success(self, port) changed its arguments")
    if "failByDrop" not in inspect.signature(WebSocketFactory.setProtocolOptions).parameters:
        found.append("WebSocketFactory.setProtocolOptions() takes no failByDrop")
    return found


def install() -> None:
    """Adapt Daphne if its shape is the tested one; otherwise warn, once, and change nothing."""
    global _installed
    if _installed:
        return
    found = problems()
    if found:
        warn_once(
            "shape",
            "Daphne is not the one consumers was tested with, so it runs unadapted (close "
            "codes, close reasons, accept headers, slow clients, graceful shutdown): %s. %s",
            "; ".join(found),
            HINT,
        )
        return
    from daphne.server import Server

    daphne_listen_success = Server.listen_success

    @functools.wraps(daphne_listen_success)
    def listen_success(self: Any, port: Any) -> None:
        _adapt(self, port)
        daphne_listen_success(self, port)

    Server.listen_success = listen_success
    _installed = True


def warn_once(key: str, text: str, *args: Any) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.warning(text, *args)


def _adapt(server: Any, port: Any) -> None:
    global serving
    from twisted.internet import reactor

    from consumers import shutdown

    server.consumers_ports = [*getattr(server, "consumers_ports", []), port]
    factory = server.ws_factory
    if factory.protocol is _DaphneWebSocketProtocol:
        factory.protocol = WebSocketProtocol
    factory.setProtocolOptions(failByDrop=False)
    if reactor.running:
        # The endpoint listened late: Daphne has already registered its own shutdown.
        warn_once("drain", "An endpoint listened after start-up: SIGTERM cancels at once")
    # An instance attribute: Daphne's run() registers it as its shutdown step next.
    server.kill_all_applications = functools.partial(shutdown.drain_daphne, server)
    serving = True


def max_buffer() -> int:
    from django.conf import settings

    return int(getattr(settings, "CONSUMERS_WEBSOCKET_MAX_BUFFER", DEFAULT_MAX_BUFFER))


def unsent_bytes(transport: Any) -> int | None:
    """Bytes written to a Twisted transport and not yet sent, through TLS if there is
    one; ``None`` if the transport is of a kind this does not know."""
    pending = 0
    # TLS (twisted.protocols.tls) keeps cleartext written before its handshake ends, then
    # hands ciphertext to the socket transport below it.
    while hasattr(transport, "_appSendBuffer") and hasattr(transport, "transport"):
        pending += sum(map(len, transport._appSendBuffer))
        transport = transport.transport
    try:
        pending += len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    except AttributeError:
        return None
    return pending


def write_now(transport: Any, data: bytes) -> int:
    """Write what the socket takes of ``data`` now, if ``transport`` is plain TCP with
    nothing unsent; the bytes written (0: none, the caller buffers them as before).

    Twisted's ``write`` only buffers: each frame costs two ``epoll_ctl`` (``addWriter``,
    then ``removeWriter`` once written), a handle and a context for the loop, and waits
    for the reactor's next turn: a broadcast to 1,000 clients sent nothing until all 1,000
    frames were made, and those handles, alive meanwhile, were promoted by the collections
    the fan-out set off, which brought a full collection (30-70 ms with 1,000 connections)
    every 26 broadcasts. An error is left for Twisted's own write to find, which closes
    the connection as it does."""
    if not isinstance(transport, _TCPConnection):  # TLS wraps it in a proxy of its attributes
        return 0
    try:
        if (
            transport.TLS  # TLS started on the connection itself
            or not transport.connected
            or transport.disconnecting
            or transport._writeDisconnected
            or transport._tempDataLen
            or len(transport.dataBuffer) != transport.offset
        ):
            return 0
        sent = transport.writeSomeData(data)
    except AttributeError:  # a connection of another shape: as Twisted would
        return 0
    return sent if type(sent) is int else 0


def _peer(protocol: Any) -> str:
    return ":".join(map(str, getattr(protocol, "client_addr", None) or ("?",)))


try:
    from daphne.ws_protocol import WebSocketProtocol as _DaphneWebSocketProtocol
    from twisted.internet.tcp import Connection as _TCPConnection
except ImportError:  # no Daphne: nothing to adapt
    _DaphneWebSocketProtocol = object

    class _TCPConnection:  # type: ignore[no-redef]
        """Nothing is one: without Twisted, nothing is written at once."""


class WebSocketProtocol(_DaphneWebSocketProtocol):
    """Daphne's WebSocket protocol, passing on everything the application sends."""

    # Set once the application asked to close, so a close it caused is not logged twice.
    consumers_closing = False
    # CONSUMERS_WEBSOCKET_MAX_BUFFER, read at the connection's first frame: reading the
    # setting cost more than the rest of a frame's bookkeeping here.
    consumers_max_buffer: int | None = None

    def handle_reply(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "websocket.accept" and hasattr(self, "handshake_deferred"):
            self._accept(message)
        elif kind == "websocket.close" and self.state != self.STATE_CONNECTING:
            self._close(message)
        elif kind == "websocket.send" and self.state != self.STATE_CONNECTING:
            self._send_frame(message)
        else:
            super().handle_reply(message)

    def _accept(self, message: dict[str, Any]) -> None:
        headers: dict[str, list[str]] = {}
        for name, value in message.get("headers") or ():
            headers.setdefault(name.decode("latin-1"), []).append(value.decode("latin-1"))
        self.handshake_deferred.callback((message.get("subprotocol"), headers))
        del self.handshake_deferred

    def _close(self, message: dict[str, Any]) -> None:
        code = message.get("code") or 1000
        if code not in SENDABLE_CLOSE_CODES:
            raise ValueError(f"websocket.close code {code} may not be sent by a server")
        self.consumers_closing = True
        reason = (message.get("reason") or "").encode()[:123] or None
        self.sendCloseFrame(code=code, reasonUtf8=reason)

    def _send_frame(self, message: dict[str, Any]) -> None:
        text, data = message.get("text"), message.get("bytes")
        if (text is None) == (data is None):
            raise ValueError("websocket.send needs exactly one of 'text' and 'bytes'")
        if self.state != self.STATE_OPEN:
            return  # closing: as for any send after close, the frame is dropped
        if text is not None:
            self.sendMessage(text.encode("utf-8"), False)
        else:
            self.sendMessage(data, True)
        self._bound_unsent()

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        """Autobahn's, with the frame written at once when nothing waits before it."""
        if sync or chopsize or self.send_queue or self.logOctets:
            super().sendData(data, sync, chopsize)
            return
        sent = write_now(self.transport, data)
        if sent < len(data):
            super().sendData(data[sent:] if sent else data)
        if sent:
            if self.state == self.STATE_OPEN:
                self.trafficStats.outgoingOctetsWireLevel += sent
            elif self.state in (self.STATE_CONNECTING, self.STATE_PROXY_CONNECTING):
                self.trafficStats.preopenOutgoingOctetsWireLevel += sent

    def _bound_unsent(self) -> None:
        unsent = unsent_bytes(self.transport)
        if unsent is None:
            warn_once(
                "transport",
                "Cannot see the unsent bytes of a %s: clients that stop reading are not "
                "bounded by CONSUMERS_WEBSOCKET_MAX_BUFFER on this endpoint",
                type(self.transport).__name__,
            )
            return
        limit = self.consumers_max_buffer
        if limit is None:
            limit = self.consumers_max_buffer = max_buffer()
        if unsent > limit:
            logger.warning(
                "Closing the WebSocket of %s with %d: it stopped reading (%d bytes unsent, "
                "over CONSUMERS_WEBSOCKET_MAX_BUFFER of %d)",
                _peer(self),
                CLOSE_SLOW_CLIENT,
                unsent,
                limit,
            )
            from consumers.metrics import slow_client_dropped

            slow_client_dropped()
            self.consumers_closing = True
            self.sendCloseFrame(code=CLOSE_SLOW_CLIENT, reasonUtf8=b"too slow: buffer full")
            self.dropConnection(abort=True)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        local = getattr(self, "localCloseCode", None)
        if local in _REFUSAL_CODES and not self.consumers_closing:
            logger.warning(
                "Closed the WebSocket of %s on %s with %d: %s",
                _peer(self),
                getattr(self, "path", b"?").decode("ascii", "replace"),
                local,
                (getattr(self, "localCloseReason", None) or b"").decode("utf-8", "replace"),
            )
        super().onClose(wasClean, code, reason)
