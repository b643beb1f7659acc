"""Issue 20 part 9 (frame9): CPU per echo round trip of ``bench.apps.ours`` or
``bench.apps.bare`` in process, behind a fake server: 50 connections, ``receive`` an
``asyncio.Queue.get`` (as Hypercorn's), each ``send`` of a frame (a coroutine that ends at
once) queues the connection's next frame with ``call_soon``. No server code in the way.

    python bench/frame9_probe.py [--root DIR] IMPL PATH [FRAMES] [RUNS]

``--root``: import the apps (and the project) from DIR, e.g. an export of main, so "before"
and "after" run the same probe. Prints one line a run: us of process CPU a round trip.
``FRAME9_UVLOOP=1`` runs on uvloop (Uvicorn's loop). ``FRAME9_TOGGLE=module:Class.attr``:
the runs alternate between the attribute as it is ("on") and set to None ("off") on the
class, in the same process (an A/B less exposed to a noisy machine than two processes).
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import time
from typing import Any

from bench.echo_probe import application_for, toggled, websocket_scope

TEXTS = {
    "/ws/echo/": "x" * 20,
    "/ws/sync/": "x" * 20,
    "/ws/json/": '{"text": "xxxxxxxxxxxxxxxxxxxx", "n": 1}',
}


def main() -> None:
    application, impl, args = application_for(sys.argv[1:])
    path = args[0]
    frames = int(args[1]) if len(args) > 1 else 100_000
    runs = int(args[2]) if len(args) > 2 else 1
    if os.environ.get("FRAME9_UVLOOP") == "1":
        import uvloop

        uvloop.install()
    owner, attribute, original = toggled()
    for run in range(runs):
        tag = ""
        if owner is not None:
            tag = "on " if run % 2 else "off "
            setattr(owner, attribute, original if run % 2 else None)
        cpu = asyncio.run(drive(application, path, frames))
        print(f"{tag}{impl} {path}: {cpu:.3f} us cpu/rt", flush=True)


async def drive(application: Any, path: str, frames: int) -> float:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    text = TEXTS[path]
    state = {"count": 0, "limit": 10**12}
    tasks = []
    for i in range(50):
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        async def send(message: dict[str, Any], put: Any = queue.put_nowait) -> None:
            kind = message["type"]
            if kind == "websocket.send":
                state["count"] += 1
                if state["count"] >= state["limit"]:
                    if not done.done():
                        done.set_result(None)
                    return
                loop.call_soon(put, {"type": "websocket.receive", "text": text})
            elif kind == "websocket.accept":
                loop.call_soon(put, {"type": "websocket.receive", "text": text})

        queue.put_nowait({"type": "websocket.connect"})
        scope = websocket_scope(path, 1000 + i)
        tasks.append(asyncio.ensure_future(application(scope, queue.get, send)))
    await asyncio.sleep(0.2)  # warm up
    state["count"] = 0
    state["limit"] = frames
    gc.collect()
    started = time.process_time()
    await done
    cpu = time.process_time() - started
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return cpu / frames * 1e6


if __name__ == "__main__":
    main()
