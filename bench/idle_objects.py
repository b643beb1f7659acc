"""What each idle connection keeps alive, in objects and bytes, without a server.

    .venv/bin/python -m bench.idle_objects [--impl ours|bare] [-n 2000] [--top 15]

Opens ``n`` connections to ``/ws/broadcast/`` through the benchmark's application (as
``bench.connect_cost`` does), lets the loop settle, and prints the GC-tracked objects per
connection by type (``gc.get_objects()`` before and after) and the bytes per connection by
allocating line (``tracemalloc``): what the collector rescans and what memory an idle
connection costs.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import importlib
import os
import tracemalloc
from typing import Any

from bench.connect_cost import connect


async def probe(application: Any, n: int, top: int) -> None:
    for _ in range(50):  # warm-up: imports, caches, the layer
        task, inbox = await connect(application)
        inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
        await task
    for _ in range(3):
        await asyncio.sleep(0)
    gc.collect()
    before = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
    tracemalloc.start(1)
    snap0 = tracemalloc.take_snapshot()
    connections = [await connect(application) for _ in range(n)]
    for _ in range(3):
        await asyncio.sleep(0)
    gc.collect()
    snap1 = tracemalloc.take_snapshot()
    after = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
    tracemalloc.stop()
    diff = after - before
    total = sum(diff.values())
    print(f"GC-tracked objects per connection: {total / n:.2f}")
    for name, count in diff.most_common(top):
        print(f"  {count / n:6.2f}  {name}")
    stats = snap1.compare_to(snap0, "lineno")
    size = sum(s.size_diff for s in stats)
    print(f"bytes per connection (tracemalloc): {size / n:.0f}")
    for stat in stats[:top]:
        frame = stat.traceback[0]
        where = f"{os.path.relpath(frame.filename)}:{frame.lineno}"
        print(f"  {stat.size_diff / n:7.0f} B {stat.count_diff / n:5.2f} blocks  {where}")
    for _, inbox in connections:
        inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
    await asyncio.gather(*(task for task, _ in connections))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--impl", choices=("ours", "bare"), default="ours")
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.apps.settings_ours")
    application = importlib.import_module(f"bench.apps.{args.impl}").application
    asyncio.run(probe(application, args.n, args.top))


if __name__ == "__main__":
    main()
