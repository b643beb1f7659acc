"""The ceiling: a hand-written ASGI callable with no framework, the same routes as the others.

- ``/ws/echo/`` and ``/ws/sync/``: echo each text frame (``/ws/sync/`` runs a frame that
  starts with ``sleep`` through ``time.sleep(1)`` on the default thread pool first, the
  isolation scenario's slow handler);
- ``/ws/json/``: ``json.loads`` then ``json.dumps`` each frame;
- ``/ws/broadcast/``: every connection joins one in-process set; a frame from any member is
  written to all members. With ``BENCH_LAYER=redis`` the frame is PUBLISHed on Redis and
  each process fans it out to its own members from one SUBSCRIBE reader (raw redis-py).
- HTTP: a fixed plain-text reply.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

Send = Any
members: set[Send] = set()
_redis: dict[str, Any] = {}


async def application(scope: dict[str, Any], receive: Any, send: Send) -> None:
    kind = scope["type"]
    if kind == "websocket":
        await websocket(scope["path"], receive, send)
    elif kind == "http":
        await receive()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")],
            }
        )
        await send({"type": "http.response.body", "body": b"Hello, world!"})
    elif kind == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return


async def websocket(path: str, receive: Any, send: Send) -> None:
    message = await receive()  # websocket.connect
    broadcast = path == "/ws/broadcast/"
    if broadcast:
        await _ensure_subscriber()
        members.add(send)
    await send({"type": "websocket.accept"})
    loop = asyncio.get_running_loop()
    try:
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                return
            text = message.get("text")
            if broadcast:
                await _broadcast(text)
            elif path == "/ws/json/":
                await send({"type": "websocket.send", "text": json.dumps(json.loads(text))})
            else:
                if path == "/ws/sync/" and text.startswith("sleep"):
                    await loop.run_in_executor(None, time.sleep, 1)
                await send({"type": "websocket.send", "text": text})
    finally:
        members.discard(send)


async def _fan_out(text: str) -> None:
    frame = {"type": "websocket.send", "text": text}
    for member in list(members):
        await member(frame)


async def _broadcast(text: str) -> None:
    client = _redis.get("client")
    if client is None:
        await _fan_out(text)
    else:
        await client.publish(_redis["channel"], text)


async def _ensure_subscriber() -> None:
    """With ``BENCH_LAYER=redis``: one pub/sub reader per process, started once."""
    if os.environ.get("BENCH_LAYER") != "redis":
        return
    if "ready" not in _redis:
        _redis["ready"] = asyncio.ensure_future(_subscribe())
    await asyncio.shield(_redis["ready"])


async def _subscribe() -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    channel = f"{os.environ['BENCH_PREFIX']}:broadcast"
    pubsub = client.pubsub()
    await pubsub.subscribe(channel)

    async def read() -> None:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                await _fan_out(message["data"].decode())

    _redis.update(client=client, channel=channel, pubsub=pubsub)
    _redis["reader"] = asyncio.ensure_future(read())
