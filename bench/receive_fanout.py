"""A broadcast's CPU in one process when its members read with ``receive()``, over Redis.

    .venv/bin/python -m bench.receive_fanout [--members 10000] [--rounds 10] [--impl bare]
        [--profile FILE]

``--members`` channels of one Redis layer (``BENCH_REDIS_URL``, default db 5 of the local
Redis, under a prefix of its own) join a group and each is read by a ``receive()`` loop,
as busy or sync consumers and workers read; the process's CPU from ``group_send`` until
every member has its message, per broadcast (after two warm-up rounds): the receiving
side of the layer's "group of 10,000" row, without a server or the machine's noise. Pin it
(``taskset -c 0``) on a shared machine. ``--impl bare``: the layer scenario's raw redis-py
ceiling (``bench.layer_worker.BareLayer``) instead; ``--profile``: a cProfile of the
measured rounds written to FILE.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import statistics
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.apps.settings_ours")


async def measure(members: int, rounds: int, impl: str, profile: str | None) -> list[float]:
    import django

    django.setup()
    from bench.layer_worker import make_layer

    url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/5")
    layer = make_layer(impl, url, f"receive-fanout-{os.getpid()}")
    channels = [await layer.new_channel() for _ in range(members)]
    for channel in channels:
        await layer.group_add("room", channel)
    remaining = members
    everyone = asyncio.Event()

    async def read(channel: str) -> None:
        nonlocal remaining
        while True:
            await layer.receive(channel)
            remaining -= 1
            if remaining == 0:
                everyone.set()

    readers = [asyncio.ensure_future(read(channel)) for channel in channels]
    await asyncio.sleep(0.5)
    cpu_ms = []
    profiler = cProfile.Profile() if profile else None
    for round_ in range(rounds + 2):  # the first two warm up
        remaining = members
        everyone.clear()
        if profiler is not None and round_ == 2:
            profiler.enable()
        started = time.process_time()
        await layer.group_send("room", {"type": "room.message", "text": "x" * 32, "n": round_})
        await everyone.wait()
        if round_ >= 2:
            cpu_ms.append((time.process_time() - started) * 1e3)
        await asyncio.sleep(0.05)
    if profiler is not None and profile:
        profiler.disable()
        profiler.dump_stats(profile)
    for reader in readers:
        reader.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    if impl == "ours":
        await layer.flush()
    else:
        await layer.close()
    return cpu_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--impl", choices=("ours", "bare"), default="ours")
    parser.add_argument("--profile", metavar="FILE")
    args = parser.parse_args()
    cpu_ms = asyncio.run(measure(args.members, args.rounds, args.impl, args.profile))
    print(
        f"{args.impl}, {args.members} members, receive(): CPU per broadcast "
        f"min {min(cpu_ms):.1f} ms, median {statistics.median(cpu_ms):.1f} ms"
    )


if __name__ == "__main__":
    main()
