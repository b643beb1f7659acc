"""The benchmark's peer on python-socketio 5 (run in bench/.venv-socketio), the same scenarios
as the others in Socket.IO's own terms.

Clients connect over a plain WebSocket (``PATH?EIO=4&transport=websocket``, no long-polling
first) to the paths the other apps use:

- ``/ws/echo/`` and ``/ws/json/``: an ``echo`` event is emitted back to its sender only;
- ``/ws/broadcast/``: the connection enters the room ``bench``; a ``broadcast`` event is
  emitted to the whole room as a ``message`` event. With ``BENCH_LAYER=redis`` the server
  uses python-socketio's ``AsyncRedisManager`` (``BENCH_REDIS_URL``, its pub/sub channel
  named by ``BENCH_PREFIX``), so the room spans the server processes; otherwise its default
  in-memory manager.
"""

from __future__ import annotations

import os
from typing import Any

import socketio

ROOM = "bench"


def _manager() -> Any:
    if os.environ.get("BENCH_LAYER", "memory") == "redis":
        return socketio.AsyncRedisManager(
            os.environ["BENCH_REDIS_URL"], channel=f"{os.environ['BENCH_PREFIX']}:socketio"
        )
    return None  # the in-memory manager, for one process


sio = socketio.AsyncServer(
    async_mode="asgi",
    client_manager=_manager(),
    cors_allowed_origins="*",
    logger=False,
    engineio_logger=False,
)


@sio.event
async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
    if environ.get("PATH_INFO", "").startswith("/ws/broadcast/"):
        await sio.enter_room(sid, ROOM)


@sio.event
async def echo(sid: str, data: Any) -> None:
    await sio.emit("echo", data, to=sid)


@sio.event
async def broadcast(sid: str, data: Any) -> None:
    await sio.emit("message", data, room=ROOM)


# Every path under /ws/ is Socket.IO's; the connect handler tells the routes apart.
application = socketio.ASGIApp(sio, socketio_path="ws")
