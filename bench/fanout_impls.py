"""A broadcast's CPU a member in one process, for bare, the API floor and ours side by side.

    env PYTHONPATH=. taskset -c 1 .venv/bin/python -m bench.fanout_impls
        [--impls bare,floor,ours] [--members 1000] [--broadcasts 60] [--rounds 2] [--uvloop]

Each implementation runs in a process of its own, in turn, ``--rounds`` times: ``--members``
connections to the benchmark's ``/ws/broadcast/`` route (in-memory layer) behind a fake
server (``receive`` an ``asyncio.Queue``, each ``send`` a coroutine that ends at once), then
``--broadcasts`` frames, each from another member, one at a time: the thread's CPU from
the frame's arrival to 5 ms after the last member's send (so what a fan-out leaves to a
task of its own counts too), over the members. The first 10 broadcasts
are a warm-up. Prints the minimum and median ns a member of each process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

WARM_UP = 10
TIMEOUT = 30.0  # seconds for every connection to join, and for a broadcast to reach all


def _application(impl: str) -> Any:
    os.environ["BENCH_LAYER"] = "memory"
    if impl == "bare":
        from bench.apps.bare import application
    elif impl == "floor":
        from bench.apps.floor import application
    else:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.apps.settings_ours")
        from bench.apps.ours import application
    return application


async def measure(application: Any, members: int, broadcasts: int) -> list[float]:
    """ns of thread CPU a member, one figure a measured broadcast."""
    from bench.echo_probe import websocket_scope

    sent, accepted = [0], [0]
    everyone, joined = asyncio.Event(), asyncio.Event()

    def new_send() -> Callable[[dict[str, Any]], Awaitable[None]]:
        async def send(message: dict[str, Any]) -> None:  # one per connection, as a server's
            if message["type"] == "websocket.send":
                sent[0] += 1
                if sent[0] == members:
                    everyone.set()
            elif message["type"] == "websocket.accept":
                accepted[0] += 1
                if accepted[0] == members:
                    joined.set()

        return send

    inboxes: list[asyncio.Queue[dict[str, Any]]] = []
    connections = []
    for number in range(members):
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        inbox.put_nowait({"type": "websocket.connect"})
        inboxes.append(inbox)
        scope = websocket_scope("/ws/broadcast/", 10_000 + number)
        connections.append(asyncio.ensure_future(application(scope, inbox.get, new_send())))
    await asyncio.wait_for(joined.wait(), TIMEOUT)  # each joins its group before accepting
    per_member = []
    for number in range(broadcasts + WARM_UP):
        sent[0] = 0
        everyone.clear()
        started = time.thread_time_ns()
        inboxes[number % members].put_nowait({"type": "websocket.receive", "text": "hello"})
        await asyncio.wait_for(everyone.wait(), TIMEOUT)
        # Read after a pause: what a fan-out left to a task of its own after the last send
        # (ours' writes that wait) is counted too; an idle loop adds next to nothing.
        await asyncio.sleep(0.005)
        if number >= WARM_UP:
            per_member.append((time.thread_time_ns() - started) / members)
    for inbox in inboxes:
        inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
    await asyncio.gather(*connections, return_exceptions=True)
    return per_member


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--impls", default="bare,floor,ours")
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--broadcasts", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop (Uvicorn's loop)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child: measure this impl
    args = parser.parse_args(argv)
    if args.one:
        run = measure(_application(args.one), args.members, args.broadcasts)
        if args.uvloop:
            import uvloop

            figures = uvloop.run(run)
        else:
            figures = asyncio.run(run)
        print(
            f"{args.one}: ns a member min {min(figures):.0f}, "
            f"median {statistics.median(figures):.0f}",
            flush=True,
        )
        return
    child = [sys.executable, "-m", "bench.fanout_impls", "--members", str(args.members)]
    child += ["--broadcasts", str(args.broadcasts), *(["--uvloop"] if args.uvloop else [])]
    for _ in range(args.rounds):
        for impl in args.impls.split(","):
            subprocess.run([*child, "--one", impl], check=True)


if __name__ == "__main__":
    main()
