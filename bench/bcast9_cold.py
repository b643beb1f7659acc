"""A broadcast member's eager path in ns with the CPU caches hot, and cold (evicted first).

    env PYTHONPATH=. taskset -c 0 .venv/bin/python -m bench.bcast9_cold [--members 1000]
        [--passes 60] [--evict-mb 32]

``bench.bcast_member``'s setup (real broadcast consumers, in-memory layer, a recording ASGI
send). Each pass is one whole ``group_send`` of the benchmark's event to all members (the
mailbox's claims, the hand-over, each member's handler and send), timed with
``time.thread_time`` as ns a member; "hot" passes run back to back, "cold" ones after
writing ``--evict-mb`` MB (what a server's core sees between two broadcasts while the
kernel and other processes run on it). The recorder's send alone, hot and cold, is what
bare pays in the same conditions. Medians and minimums over the passes.
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


def _passes(
    count: int, members: int, body: Callable[[], None], evict: bytearray | None
) -> list[float]:
    spent = []
    for _ in range(count):
        if evict is not None:
            evict[::64] = b"\x01" * (len(evict) // 64)  # a write to every cache line
        started = time.thread_time_ns()
        body()
        spent.append((time.thread_time_ns() - started) / members)
    return spent


async def run(members: int, passes: int, evict_mb: int, syscall: bool) -> None:
    import django

    django.setup()
    from bench.apps.routes import GROUP
    from bench.broadcast_timeline import Recorder, disconnect_members, reading_members

    recorder = Recorder(0.0)
    inboxes, tasks, readers = await reading_members(members, recorder)
    layer = readers[0]._consumer.channel_layer
    event = {"type": "bench.message", "text": "x" * 32}
    frame = {"type": "websocket.send", "text": "x" * 32}
    sends = [reader._consumer._asgi_send._send for reader in readers]
    drain = None
    if syscall:  # each send writes its frame to a pipe, as a server's send writes a socket
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)

        async def piped(message: Any, write: Any = os.write, fd: int = write_end) -> None:
            write(fd, message["text"].encode())

        for reader in readers:
            reader._consumer._asgi_send._send = piped
        sends = [piped] * len(readers)

        def drain() -> None:
            while True:
                try:
                    os.read(read_end, 1 << 16)
                except BlockingIOError:
                    return

    def broadcast() -> None:
        step = layer.group_send(GROUP, event).__await__()
        for _ in step:
            raise RuntimeError("suspended")
        recorder.stamps.clear()
        if drain is not None:
            drain()

    def bare() -> None:
        for send in sends:
            for _ in send(frame).__await__():
                raise RuntimeError("suspended")
        recorder.stamps.clear()
        if drain is not None:
            drain()

    evict = bytearray(evict_mb << 20)
    gc.disable()
    figures: dict[str, list[float]] = {}
    for _ in range(2):  # interleaved: the machine's noise hits both alike
        for name, body in (("group_send", broadcast), ("recorder", bare)):
            for temp, evicting in (("hot", None), ("cold", evict)):
                found = _passes(passes, len(readers), body, evicting)
                figures.setdefault(f"{name} {temp}", []).extend(found)
    gc.enable()
    print(f"{len(readers)} members, ns a member (thread CPU), median / min of {2 * passes}:")
    for name, found in figures.items():
        print(f"  {name}: {statistics.median(found):.0f} / {min(found):.0f}")
    await disconnect_members(inboxes, tasks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--passes", type=int, default=60)
    parser.add_argument("--evict-mb", type=int, default=32)
    parser.add_argument(
        "--syscall", action="store_true", help="each send writes to a pipe (a system call)"
    )
    args = parser.parse_args()
    asyncio.run(run(args.members, args.passes, args.evict_mb, args.syscall))


if __name__ == "__main__":
    main()
