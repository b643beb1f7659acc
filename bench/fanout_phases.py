"""A broadcast's phases in one process, at scale: claim, hand-over, and the first broadcast.

    .venv/bin/python -m bench.fanout_phases [--members 10000] [--rounds 20]
        [--loop asyncio|uvloop]

``--members`` consumers of the benchmark's broadcast route (``bench/apps/routes.py``, the
in-memory layer, metrics on) are connected through the application with an ASGI ``send``
that only counts. The first broadcast (every consumer's first layer message: it starts
each one's layer reader) is timed alone, with the garbage collections it set off. Then,
for ``--rounds`` broadcasts made by hand as the layer's ``group_send`` makes them, the time
of each phase: the members' list (``live_members``), the claim of every idle member
(``Mailboxes.put_many`` into a list) and the hand-over (``Mailboxes.hand_over``: each
member's handler, up to its send). Minimum and median over the rounds, in ms. Pin it
(``taskset -c 0``) on a shared machine.
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import time
from typing import Any

from bench.broadcast_timeline import connect_members, disconnect_members, probe_args

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.apps.settings_ours")
os.environ["BENCH_LAYER"] = "memory"


class Counter:
    def __init__(self) -> None:
        self.sent = 0

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "websocket.send":
            self.sent += 1


async def measure(members: int, rounds: int) -> dict[str, Any]:
    import django

    django.setup()
    from bench.apps.routes import GROUP, build
    from channels_layer import get_channel_layer

    app = build("consumers", None)
    counter = Counter()
    inboxes, tasks = await connect_members(app, members, counter.send)
    layer: Any = get_channel_layer()
    mailboxes, groups = layer._mailboxes, layer._groups
    message = {"type": "bench.message", "text": "x" * 32}

    collections: list[float] = []

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            collections.append(time.perf_counter())
        else:
            collections[-1] = (time.perf_counter() - collections[-1]) * 1e3
            if info["generation"] == 2:
                full.append(collections[-1])

    full: list[float] = []
    gc.callbacks.append(on_gc)
    start = time.perf_counter()
    await layer.group_send(GROUP, message)
    while counter.sent < members:
        await asyncio.sleep(0)
    first = {
        "ms": (time.perf_counter() - start) * 1e3,
        "collections": len(collections),
        "gc_ms": sum(collections),
        "full_gc_ms": full[:],
    }
    await asyncio.sleep(0.1)
    phases: dict[str, list[float]] = {"members": [], "claim": [], "hand_over": [], "cpu": []}
    payload = layer.serialize(message)
    for round_ in range(rounds + 2):
        counter.sent = 0
        cpu = time.process_time()
        t0 = time.perf_counter()
        names = groups.live_members(GROUP)
        t1 = time.perf_counter()
        handing: list[Any] = []
        mailboxes.put_many(names, payload, layer.expiry, layer.get_capacity, deferred=handing)
        t2 = time.perf_counter()
        mailboxes.hand_over(handing)
        t3 = time.perf_counter()
        while counter.sent < members:
            await asyncio.sleep(0)
        used = (time.process_time() - cpu) * 1e3
        if round_ >= 2:
            for key, value in zip(
                phases, ((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3, used), strict=True
            ):
                phases[key].append(value)
        await asyncio.sleep(0.01)
    gc.callbacks.remove(on_gc)
    await disconnect_members(inboxes, tasks)
    return {"first": first, "phases": phases}


def main(argv: list[str] | None = None) -> None:
    args = probe_args(__doc__, argv, members=10_000, rounds=20, loop="uvloop")
    result = asyncio.run(measure(args.members, args.rounds))
    first = result["first"]
    print(
        f"{args.members} members, {args.loop}: first broadcast {first['ms']:.1f} ms, "
        f"{first['collections']} collections {first['gc_ms']:.1f} ms, "
        f"full: {', '.join(f'{ms:.1f}' for ms in first['full_gc_ms']) or 'none'}"
    )
    for name, values in result["phases"].items():
        print(f"{name}: min {min(values):.2f} median {statistics.median(values):.2f} ms")


if __name__ == "__main__":
    main()
