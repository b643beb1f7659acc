"""Issue 20 part 9 (sync9): the sync echo in one process, no server (part 7's drive3).

50 closed-loop connections on ``bench.apps.ours``; each reply schedules the next frame
(``call_soon``), the app's ``receive`` is an ``asyncio.Queue.get``. Prints CPU a round trip
of the process, of the loop's thread and of the rest (the pool's threads), in us.

    python -m bench.sync9_drive PATH [FRAMES]      (SYNC9_UVLOOP=1: on uvloop)

Run from the tree to measure, pinned to one core (``taskset -c 1``), as the servers are.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

from bench.echo_probe import websocket_scope

PATH = sys.argv[1]
FRAMES = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.apps.settings_ours")
from bench.apps.ours import application  # noqa: E402

TEXT = "x" * 20
count = 0
started = False  # counting starts after the warm-up


async def main() -> None:
    global count, started
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    tasks = []
    for i in range(50):
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        async def send(message: dict[str, Any], queue: asyncio.Queue[Any] = queue) -> None:
            global count
            kind = message["type"]
            if kind == "websocket.send":
                count += 1
                if started and count >= FRAMES:
                    if not done.done():
                        done.set_result(None)
                    return
            if kind in ("websocket.accept", "websocket.send"):
                loop.call_soon(queue.put_nowait, {"type": "websocket.receive", "text": TEXT})

        queue.put_nowait({"type": "websocket.connect"})
        scope = websocket_scope(PATH, 1000 + i)
        tasks.append(asyncio.ensure_future(application(scope, queue.get, send)))
    await asyncio.sleep(0.2)
    count, started = 0, True
    cpu0, loop0 = time.process_time(), time.thread_time()
    await done
    cpu, own = time.process_time() - cpu0, time.thread_time() - loop0
    print(
        f"{PATH} {'uvloop' if os.environ.get('SYNC9_UVLOOP') else 'asyncio'}:"
        f" {cpu / FRAMES * 1e6:.2f} us cpu/rt, loop {own / FRAMES * 1e6:.2f},"
        f" pool {(cpu - own) / FRAMES * 1e6:.2f}",
        flush=True,
    )
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


if os.environ.get("SYNC9_UVLOOP"):
    import uvloop

    uvloop.install()
asyncio.run(main())
