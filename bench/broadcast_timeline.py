"""A broadcast's timeline in one process, without a server: ours against a bare fan-out.

    .venv/bin/python -m bench.broadcast_timeline [--members 1000] [--rounds 40]
        [--send-us 10] [--loop asyncio|uvloop]

``--members`` consumers of the benchmark's broadcast route (``bench/apps/routes.py``, the
in-memory layer, metrics on) are connected through the application itself, with an ASGI
``send`` that spins ``--send-us`` microseconds per frame (what a server's write costs) and
records when it was called. One of them gets a frame and ``group_send``s it; bare is a loop
awaiting the same ``send`` for every member. For each, the medians over the rounds of the
time from the frame to the first, the middle, the 99th-percentile and the last member's
send, and of the process's CPU per broadcast: what the server's own share of the benchmark's
p99 is, without the load generator or the machine's noise. Pin it (``taskset -c 0``) on a
shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.apps.settings_ours")
os.environ["BENCH_LAYER"] = "memory"

MARKS = (("first", 0.0), ("half", 0.5), ("p99", 0.99), ("last", 1.0))


class Recorder:
    """The ASGI ``send`` of every member: spins ``cost`` seconds per frame, notes when."""

    def __init__(self, cost: float) -> None:
        self.cost = cost
        self.stamps: list[float] = []

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "websocket.send":
            end = time.perf_counter() + self.cost
            while time.perf_counter() < end:
                pass
            self.stamps.append(time.perf_counter())


Inbox = asyncio.Queue[dict[str, Any]]


async def connect_members(
    app: Any, members: int, send: Any
) -> tuple[list[Inbox], list[asyncio.Future[Any]]]:
    """Connect ``members`` consumers of the broadcast route through ``app`` (each reads
    its frames from an inbox of its own, all write to ``send``) and let them join."""
    inboxes: list[Inbox] = []
    tasks = []
    for index in range(members):
        inbox: Inbox = asyncio.Queue()
        inbox.put_nowait({"type": "websocket.connect"})
        inboxes.append(inbox)
        scope = {
            "type": "websocket",
            "path": "/ws/broadcast/",
            "headers": [],
            "query_string": b"",
            "client": ("127.0.0.1", index),
            "server": ("127.0.0.1", 80),
            "subprotocols": [],
        }
        tasks.append(asyncio.ensure_future(app(scope, inbox.get, send)))
    await asyncio.sleep(0.5)  # every consumer has joined and parked
    return inboxes, tasks


async def reading_members(
    members: int, recorder: Recorder
) -> tuple[list[Inbox], list[asyncio.Future[Any]], list[Any]]:
    """``members`` consumers of the broadcast route (``bench.apps.routes``, Django set up
    already) connected in this process, each with its layer reader started by a first
    broadcast, all writing to ``recorder``, and their readers (``EagerReader``): what the
    per-member probes (``bench.bcast_member``, ``bench.bcast9_*``) measure on."""
    from bench.apps.routes import build

    app = build("consumers", None)
    inboxes, tasks = await connect_members(app, members, recorder.send)
    inboxes[0].put_nowait({"type": "websocket.receive", "text": "x" * 32})  # readers start
    await asyncio.sleep(0.3)
    readers = [o for o in gc.get_objects() if type(o).__name__ == "EagerReader"]
    return inboxes, tasks, readers


async def disconnect_members(inboxes: list[Inbox], tasks: list[asyncio.Future[Any]]) -> None:
    for inbox in inboxes:
        inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
    await asyncio.gather(*tasks, return_exceptions=True)


def marks(stamps: list[float], start: float) -> list[float]:
    """Milliseconds from ``start`` to the sends at each of MARKS."""
    last = len(stamps) - 1
    return [(stamps[max(0, round(share * (last + 1)) - 1)] - start) * 1e3 for _, share in MARKS]


async def measure(members: int, rounds: int, cost: float) -> dict[str, list[list[float]]]:
    import django

    django.setup()
    from bench.apps.routes import build

    app = build("consumers", None)
    recorder = Recorder(cost)
    inboxes, tasks = await connect_members(app, members, recorder.send)
    results: dict[str, list[list[float]]] = {"ours": [], "bare": []}
    frame = {"type": "websocket.send", "text": "x" * 32}
    for round_ in range(rounds + 2):  # the first two warm up
        for impl in ("ours", "bare"):
            recorder.stamps.clear()
            start, cpu = time.perf_counter(), time.process_time()
            if impl == "ours":
                inboxes[0].put_nowait({"type": "websocket.receive", "text": "x" * 32})
                while len(recorder.stamps) < members:
                    await asyncio.sleep(0)
            else:
                for _ in range(members):
                    await recorder.send(frame)
            used = (time.process_time() - cpu) * 1e3
            if round_ >= 2:
                results[impl].append([*marks(recorder.stamps, start), used])
            await asyncio.sleep(0.01)
    await disconnect_members(inboxes, tasks)
    return results


def probe_args(
    doc: str | None,
    argv: list[str] | None,
    members: int,
    rounds: int,
    loop: str,
    extra: Callable[[argparse.ArgumentParser], object] | None = None,
) -> argparse.Namespace:
    """The options these in-process probes share (``--members``, ``--rounds``, ``--loop``),
    parsed, with uvloop installed when asked for."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--members", type=int, default=members)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default=loop)
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    if args.loop == "uvloop":
        import uvloop

        uvloop.install()
    return args


def main(argv: list[str] | None = None) -> None:
    args = probe_args(
        __doc__,
        argv,
        members=1000,
        rounds=40,
        loop="asyncio",
        extra=lambda parser: parser.add_argument("--send-us", type=float, default=10.0),
    )
    results = asyncio.run(measure(args.members, args.rounds, args.send_us / 1e6))
    names = [name for name, _ in MARKS]
    print(f"{args.members} members, {args.loop}, send {args.send_us} us, {args.rounds} rounds")
    for impl, rows in results.items():
        columns = [statistics.median(column) for column in zip(*rows, strict=True)]
        figures = ", ".join(f"{n} {v:.2f}" for n, v in zip(names, columns, strict=False))
        print(f"{impl}: ms from the frame to the send: {figures}; CPU {columns[-1]:.2f} ms")


if __name__ == "__main__":
    main()
