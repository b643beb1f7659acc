"""Tracked objects a broadcast leaves per member, in one process (the in-memory layer).

    .venv/bin/python -m bench.gc_members [--members 1000] [--rounds 5] [--loop asyncio|uvloop]

``--members`` consumers of the benchmark's broadcast route are connected through the
application (as ``bench.fanout_phases`` does). With the collector off, the change of
``gc.get_count()[0]`` (tracked containers made less those freed: what moves a process
towards its next collection) is measured over the first broadcast (each member's first
layer message) and over each later one, divided by the members; also the collections the
first broadcast sets off with the collector on, in a second run of the same process.
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
from typing import Any

from bench.broadcast_timeline import connect_members, disconnect_members, probe_args
from bench.fanout_phases import Counter

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.apps.settings_ours")
os.environ["BENCH_LAYER"] = "memory"


async def _broadcast(layer: Any, group: str, counter: Counter, members: int) -> float:
    """One broadcast with the collector off: tracked objects left per member."""
    message = {"type": "bench.message", "text": "x" * 32}
    counter.sent = 0
    gc.collect()
    gc.disable()
    try:
        before = _tracked()
        await layer.group_send(group, message)
        while counter.sent < members:
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        return (_tracked() - before) / members
    finally:
        gc.enable()


def _tracked() -> int:
    # get_count()[0] is reset by a collection; with the collector off it only counts.
    return gc.get_count()[0]


async def measure(members: int, rounds: int) -> dict[str, Any]:
    import django

    django.setup()
    from bench.apps.routes import GROUP, build
    from channels_layer import get_channel_layer

    app = build("consumers", None)
    counter = Counter()
    layer: Any = get_channel_layer()
    inboxes, tasks = await connect_members(app, members, counter.send)
    first = await _broadcast(layer, GROUP, counter, members)
    later = [await _broadcast(layer, GROUP, counter, members) for _ in range(rounds)]
    await disconnect_members(inboxes, tasks)
    return {"first": first, "later": later}


def main(argv: list[str] | None = None) -> None:
    args = probe_args(__doc__, argv, members=1000, rounds=5, loop="uvloop")
    result = asyncio.run(measure(args.members, args.rounds))
    print(
        f"{args.members} members, {args.loop}: tracked objects left per member: first "
        f"broadcast {result['first']:.2f}, later ones median "
        f"{statistics.median(result['later']):.2f} (all: "
        f"{', '.join(f'{value:.2f}' for value in result['later'])})"
    )


if __name__ == "__main__":
    main()
