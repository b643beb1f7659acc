"""The Python cost of one WebSocket connect and disconnect through the benchmark's application,
without a server: what a connection storm costs the server on top of its own work.

    .venv/bin/python -m bench.connect_cost [--impl ours|bare] [-n 5000] [--no-gc]

Opens ``n`` connections to ``/ws/broadcast/`` (the scale scenario's route) with in-memory
ASGI ``receive``/``send``, keeping them open as a storm does, then ends them all, and prints
the process CPU time per connect and per disconnect. ``--no-gc`` leaves the cyclic collector
off during the measurement: the difference is what the collections set off by the
connections' objects cost.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import os
import time
from typing import Any

SCOPE: dict[str, Any] = {
    "type": "websocket",
    "path": "/ws/broadcast/",
    "raw_path": b"/ws/broadcast/",
    "root_path": "",
    "query_string": b"",
    "headers": [(b"host", b"127.0.0.1:8000"), (b"sec-websocket-version", b"13")],
    "scheme": "ws",
    "server": ("127.0.0.1", 8000),
    "client": ("127.0.0.1", 50000),
    "subprotocols": [],
    "asgi": {"version": "3.0"},
}


async def connect(application: Any) -> tuple[asyncio.Task[Any], asyncio.Queue[Any]]:
    """One connection, returned once the application accepted it."""
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    inbox.put_nowait({"type": "websocket.connect"})
    accepted = asyncio.get_running_loop().create_future()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "websocket.accept":
            accepted.set_result(None)

    task = asyncio.ensure_future(application(dict(SCOPE), inbox.get, send))
    await accepted
    return task, inbox


async def storm(application: Any, n: int, collect: bool) -> tuple[float, float]:
    """CPU seconds per connect and per disconnect of ``n`` connections open at once."""
    for _ in range(200):  # warm-up: imports, caches, the layer
        task, inbox = await connect(application)
        inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
        await task
    if not collect:
        gc.disable()
    started = time.process_time()
    connections = [await connect(application) for _ in range(n)]
    opened = time.process_time()
    for _, inbox in connections:
        inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
    await asyncio.gather(*(task for task, _ in connections))
    ended = time.process_time()
    gc.enable()
    return (opened - started) / n, (ended - opened) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--impl", choices=("ours", "bare"), default="ours")
    parser.add_argument("-n", type=int, default=5000)
    parser.add_argument("--no-gc", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.apps.settings_ours")
    application = importlib.import_module(f"bench.apps.{args.impl}").application
    per_connect, per_disconnect = asyncio.run(storm(application, args.n, not args.no_gc))
    print(
        f"{args.impl}: {per_connect * 1e6:.1f} us CPU per connect, "
        f"{per_disconnect * 1e6:.1f} us per disconnect "
        f"(n={args.n}, collector {'off' if args.no_gc else 'on'})"
    )


if __name__ == "__main__":
    main()
