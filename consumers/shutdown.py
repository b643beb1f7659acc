"""Graceful shutdown for Daphne: drain WebSockets instead of dropping them.

On SIGTERM (or SIGINT) Daphne cancels every application at once: consumers never see a
disconnect, ``disconnect()`` never runs, and clients get a dropped TCP connection.
``consumers.daphne`` makes ``drain_daphne`` Daphne's shutdown step instead. The server
stops accepting connections (so a load balancer sends new ones elsewhere), closes open
WebSockets with ``CONSUMERS_SHUTDOWN_CLOSE_CODE`` (1012, "service restart": reconnect) in
batches of ``CONSUMERS_SHUTDOWN_BATCH`` so their reconnections do not arrive at the other
servers all at once, lets each consumer run its usual disconnect path (``disconnect()``,
leaving its groups), and waits for HTTP requests in flight. What is still running after
``CONSUMERS_SHUTDOWN_TIMEOUT`` seconds is cancelled, as Daphne would have done at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from django.conf import settings

logger = logging.getLogger("consumers.shutdown")

DEFAULTS = {
    "CONSUMERS_SHUTDOWN_TIMEOUT": 10.0,
    "CONSUMERS_SHUTDOWN_CLOSE_CODE": 1012,
    "CONSUMERS_SHUTDOWN_BATCH": 100,
}
# Pause between batches of closes.
BATCH_INTERVAL = 0.05


def _setting(name: str) -> Any:
    return getattr(settings, name, DEFAULTS[name])


def drain_daphne(server: Any) -> Any:
    """Daphne's "before shutdown" step: the reactor waits for the Deferred returned."""
    from twisted.internet import defer

    return defer.Deferred.fromFuture(asyncio.ensure_future(drain(server)))


async def drain(server: Any) -> None:
    """Stop listening, close WebSockets in batches, wait for applications to finish."""
    from daphne.ws_protocol import WebSocketProtocol

    started = time.monotonic()
    deadline = started + float(_setting("CONSUMERS_SHUTDOWN_TIMEOUT"))
    for port in getattr(server, "consumers_ports", []):
        port.stopListening()
    sockets = [
        protocol
        for protocol in server.connections
        if isinstance(protocol, WebSocketProtocol) and protocol.state == protocol.STATE_OPEN
    ]
    code = int(_setting("CONSUMERS_SHUTDOWN_CLOSE_CODE"))
    batch = max(1, int(_setting("CONSUMERS_SHUTDOWN_BATCH")))
    logger.info("Shutting down: closing %d WebSockets with %d", len(sockets), code)
    for start in range(0, len(sockets), batch):
        for protocol in sockets[start : start + batch]:
            if protocol.state == protocol.STATE_OPEN:
                protocol.sendCloseFrame(code=code, reasonUtf8=b"server shutting down")
        if start + batch < len(sockets):
            await asyncio.sleep(BATCH_INTERVAL)
    while _running(server) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    left = _running(server)
    logger.info(
        "Shut down in %.1f s; %d applications still running are cancelled",
        time.monotonic() - started,
        len(left),
    )
    for instance in left:
        instance.cancel()
    await asyncio.gather(*left, return_exceptions=True)


def _running(server: Any) -> list[asyncio.Future[Any]]:
    return [
        instance
        for details in list(server.connections.values())
        if (instance := details.get("application_instance")) is not None and not instance.done()
    ]
