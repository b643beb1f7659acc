"""What the metrics cost per message, in one process, without a server or the network.

    .venv/bin/python -m bench.metrics_cost [--frames 20000] [--rounds 15]

Drives the benchmark's consumers (``bench/apps/routes.py``: the broadcast to 200 members
of an in-memory group, then the async, sync and JSON echoes) behind the same
``ProtocolTypeRouter`` through their ASGI callables, with metrics on and off in
alternation (``channels_layer.metrics._enabled``), and prints the median CPU time per
message (an echo: a frame in and its echo out; a broadcast: one delivery sent out) and the
difference. On a shared machine the echo benchmark's throughput swings by more than the
metrics cost; CPU time measured this way, in alternating rounds, swings much less. The
server's own cost (Daphne, Twisted, the socket) comes on top of these figures, so the
percentages here are upper bounds of the slowdown a real server sees.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.apps.settings_ours")

import django

django.setup()

from bench.apps.routes import build  # noqa: E402
from channels_layer import metrics as layer_metrics  # noqa: E402

VARIANTS = {"async": ("/ws/echo/", "x" * 32), "sync": ("/ws/sync/", "x" * 32)}
VARIANTS["json"] = ("/ws/json/", '{"text": "xxxxxxxxxxxxxxxxxxxx", "n": 1}')


async def one_connection(application: Any, path: str, text: str, frames: int) -> float:
    """Seconds of CPU time (this process) to open, echo ``frames`` frames and close."""
    scope = {
        "type": "websocket",
        "path": path,
        "headers": [(b"origin", b"http://127.0.0.1")],
        "query_string": b"",
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
        "subprotocols": [],
    }
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    echoed = asyncio.Event()
    remaining = [frames]

    async def receive() -> dict[str, Any]:
        return await inbox.get()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "websocket.send":
            remaining[0] -= 1
            if remaining[0]:
                inbox.put_nowait({"type": "websocket.receive", "text": text})
            else:
                echoed.set()
        elif message["type"] == "websocket.accept":
            inbox.put_nowait({"type": "websocket.receive", "text": text})

    inbox.put_nowait({"type": "websocket.connect"})
    started = time.process_time()
    task = asyncio.ensure_future(application(scope, receive, send))
    await echoed.wait()
    inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
    await task
    return time.process_time() - started


async def broadcast(application: Any, members: int, messages: int) -> float:
    """Seconds of CPU time for ``messages`` broadcasts to ``members`` connections of the
    in-memory layer's group (``/ws/broadcast/``), each delivered and sent out."""
    delivered = [0]
    everyone = asyncio.Event()
    inboxes: list[asyncio.Queue[dict[str, Any]]] = []
    accepted = asyncio.Semaphore(0)

    async def connection() -> None:
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        inboxes.append(inbox)
        inbox.put_nowait({"type": "websocket.connect"})

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "websocket.accept":
                accepted.release()
            elif message["type"] == "websocket.send":
                delivered[0] += 1
                if delivered[0] % members == 0:
                    everyone.set()

        scope = {
            "type": "websocket",
            "path": "/ws/broadcast/",
            "headers": [(b"origin", b"http://127.0.0.1")],
            "query_string": b"",
            "subprotocols": [],
        }
        await application(scope, inbox.get, send)

    tasks = [asyncio.ensure_future(connection()) for _ in range(members)]
    for _ in range(members):
        await accepted.acquire()
    started = time.process_time()
    for _ in range(messages):
        everyone.clear()
        inboxes[0].put_nowait({"type": "websocket.receive", "text": "x" * 32})
        await everyone.wait()
    spent = time.process_time() - started
    for inbox in inboxes:
        inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
    await asyncio.gather(*tasks)
    return spent


async def main(frames: int, rounds: int) -> None:
    application = build("consumers", None)
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(rounds):
        for enabled in (True, False):
            layer_metrics._enabled = enabled
            seconds = await broadcast(application, 200, 50)
            times[enabled].append(seconds / (200 * 50) * 1e6)
    on, off = statistics.median(times[True]), statistics.median(times[False])
    print(
        f"broadcast to 200, per delivery: metrics on {on:6.2f} us, off {off:6.2f} us, "
        f"cost {on - off:5.2f} us ({(on - off) / off:+.1%} of the consumer side)"
    )
    for variant, (path, text) in VARIANTS.items():
        times = {True: [], False: []}
        await one_connection(application, path, text, 200)  # warm-up
        for _ in range(rounds):
            for enabled in (True, False):
                layer_metrics._enabled = enabled
                seconds = await one_connection(application, path, text, frames)
                times[enabled].append(seconds / frames * 1e6)
        on, off = statistics.median(times[True]), statistics.median(times[False])
        print(
            f"{variant:5s} per frame: metrics on {on:6.2f} us, off {off:6.2f} us, "
            f"cost {on - off:5.2f} us ({(on - off) / off:+.1%} of the consumer side)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    asyncio.run(main(args.frames, args.rounds))
