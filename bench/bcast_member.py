"""One broadcast member's eager path in ns, on real broadcast consumers, in one process.

    env PYTHONPATH=. taskset -c 0 .venv/bin/python -m bench.bcast_member [--members 1000]
        [--passes 200] [--loop asyncio|uvloop]

Part 4's ``member.py.txt`` as a module: ``--members`` consumers of the benchmark's broadcast
route (in-memory layer, metrics on) are connected through the application with an ASGI
``send`` that only records, each one's layer reader started; then, as the minimum over
``--passes`` passes over all members, a member's ``EagerReader.claim()`` + ``handle()``
(the hand-over less the mailbox) and pieces of it: ``dispatch`` stepped alone, the
handler, ``self.send``, the connection's ``_asgi_send`` (``SendDeadline``) and the
recorder's own send (what bare pays).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.apps.settings_ours")
os.environ["BENCH_LAYER"] = "memory"


def _drive(awaitable: Any) -> None:
    step = awaitable.__await__()
    for _ in step:
        raise RuntimeError("suspended")


def _best(members: list[Any], passes: int, each: Callable[[Any], None], reset: Any) -> float:
    best = float("inf")
    for _ in range(passes):
        reset()
        started = time.perf_counter()
        for member in members:
            each(member)
        best = min(best, (time.perf_counter() - started) / len(members) * 1e9)
    return best


async def run(members: int, passes: int) -> None:
    import django

    django.setup()
    from bench.broadcast_timeline import Recorder, disconnect_members, reading_members

    recorder = Recorder(0.0)
    inboxes, tasks, readers = await reading_members(members, recorder)
    consumers = [reader._consumer for reader in readers]
    event = {"type": "bench.message", "text": "x" * 32}
    frame = {"type": "websocket.send", "text": "x" * 32}
    reset = recorder.stamps.clear

    def handle(reader: Any) -> None:
        reader.claim()
        reader.handle(event.copy())

    figures = {
        "claim + handle": _best(readers, passes, handle, reset),
        "dispatch": _best(consumers, passes, lambda c: _drive(c.dispatch(event.copy())), reset),
        "handler": _best(consumers, passes, lambda c: _drive(c.bench_message(event)), reset),
        "self.send": _best(consumers, passes, lambda c: _drive(c.send(text_data="x")), reset),
        "_asgi_send": _best(consumers, passes, lambda c: _drive(c._asgi_send(frame)), reset),
        "recorder": _best(consumers, passes, lambda c: _drive(recorder.send(frame)), reset),
    }
    print(f"{len(readers)} members, ns a member, min of {passes} passes:")
    print("  " + ", ".join(f"{name} {ns:.0f}" for name, ns in figures.items()))
    await disconnect_members(inboxes, tasks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--passes", type=int, default=200)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        uvloop.install()
    asyncio.run(run(args.members, args.passes))


if __name__ == "__main__":
    main()
