"""Issue 20 part 9 (frame9): an application's own cost a frame, without the event loop's: one
connection whose ``receive`` never suspends (a coroutine that returns the next frame at once)
and whose ``send`` is a coroutine that ends at once, so the whole echo of FRAMES frames runs
in one step of one task. Wall time a frame, ns; the best of REPEATS (a noisy machine only
adds time).

    python bench/frame9_micro.py [--root DIR] IMPL PATH [FRAMES] [REPEATS]

``FRAME9_TOGGLE=module:Class.attr`` alternates the repeats between the attribute as it is
("on") and None ("off"), and prints the best of each.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from typing import Any

from bench.echo_probe import application_for, toggled

TEXTS = {
    "/ws/echo/": "x" * 32,
    "/ws/json/": '{"text": "xxxxxxxxxxxxxxxxxxxx", "n": 1}',
}


class _Done(Exception):
    pass


async def echo(application: Any, path: str, frames: int) -> float:
    frame = {"type": "websocket.receive", "text": TEXTS[path]}
    left = [frames + 1]
    clock: list[float] = []

    async def receive() -> dict[str, Any]:
        left[0] -= 1
        if left[0] < 0:
            clock.append(time.perf_counter())
            raise _Done
        if left[0] == frames:  # the first: the connect
            return {"type": "websocket.connect"}
        return frame

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "websocket.accept":
            clock.append(time.perf_counter())

    scope = {
        "type": "websocket",
        "path": path,
        "headers": [],
        "query_string": b"",
        "root_path": "",
        "client": ("127.0.0.1", 1000),
        "server": ("127.0.0.1", 8000),
        "subprotocols": [],
        "scheme": "ws",
        "asgi": {"version": "3.0"},
    }
    with contextlib.suppress(_Done):
        await application(scope, receive, send)
    return (clock[1] - clock[0]) / frames * 1e9


def main() -> None:
    application, impl, args = application_for(sys.argv[1:])
    path = args[0]
    frames = int(args[1]) if len(args) > 1 else 100_000
    repeats = int(args[2]) if len(args) > 2 else 10
    owner, attribute, original = toggled()
    best: dict[str, float] = {}
    for run in range(repeats):
        tag = ""
        if owner is not None:
            tag = "on" if run % 2 else "off"
            setattr(owner, attribute, original if run % 2 else None)
        ns = asyncio.run(echo(application, path, frames))
        best[tag] = min(best.get(tag, ns), ns)
    for tag, ns in sorted(best.items()):
        print(f"{tag} {impl} {path}: best {ns:.0f} ns a frame", flush=True)


if __name__ == "__main__":
    main()
