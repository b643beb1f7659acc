# ruff: noqa: S108  (a measurement probe: fixed /tmp/why8 files, taskset/perf on PATH)
"""why8: ours or bare (``WHY8_APP``) behind a timing wrapper, on any server: per WebSocket
frame, the time from ``receive`` giving the frame to the app's next ``receive`` call (the app's
whole handling, the server's send included) and the time inside the server's ``send``. The
wrapper is the same for both apps, so the differences are the apps' own."""

import json
import os
import threading
import time
from importlib import import_module

inner = import_module(f"bench.apps.{os.environ.get('WHY8_APP', 'bare')}").application
# WHY8_CLOCK=thread: CPU time of the thread (a syscall each, the same for both apps), not wall
pc = time.thread_time if os.environ.get("WHY8_CLOCK") == "thread" else time.perf_counter
n = {"frames": 0, "us:app": 0.0, "us:send": 0.0}


async def application(scope, receive, send):
    if scope["type"] != "websocket":
        return await inner(scope, receive, send)
    got = [0.0]

    async def timed_receive():
        if got[0]:
            n["frames"] += 1
            n["us:app"] += (pc() - got[0]) * 1e6
        message = await receive()
        got[0] = pc() if message["type"] == "websocket.receive" else 0.0
        return message

    async def timed_send(message):
        t = pc()
        try:
            return await send(message)
        finally:
            if message["type"] == "websocket.send":
                n["us:send"] += (pc() - t) * 1e6

    return await inner(scope, timed_receive, timed_send)


def _dump() -> None:
    while True:
        time.sleep(0.5)
        with open(f"/tmp/why8/handles-{os.getpid()}.json", "w") as f:
            json.dump(n, f)


threading.Thread(target=_dump, daemon=True).start()
