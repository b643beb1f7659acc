"""The sender's Python per cross-process send with Redis stubbed out (the batcher's call
answered at once): CPU us per send, and Python function calls per send.

usage: TREE=<a source tree> python bench/layer6_floor.py
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.environ.get("TREE", "."))

from channels_layer.redis import RedisChannelLayer
from channels_layer.script_batcher import ScriptBatcher


async def main() -> None:
    loop = asyncio.get_running_loop()
    layer = RedisChannelLayer(hosts=["redis://127.0.0.1:6379/9"], prefix="l6floor")
    channel, message = "specific.abababababab!x", {"type": "bench.msg", "t": 0.0}

    def answered(self: Any, name: str, keys: Any, args: Any, on_result: Any = None) -> Any:
        future = loop.create_future()
        future.set_result(1)
        return future

    ScriptBatcher.call = answered  # type: ignore[method-assign]
    for _ in range(1000):
        await layer.send(channel, message)
    calls = 0

    def count(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    sys.setprofile(count)
    for _ in range(1000):
        await layer.send(channel, message)
    sys.setprofile(None)
    print(f"function calls per send (Python and C): {calls / 1000:.1f}")
    n = 50000
    for _ in range(3):
        started = time.process_time()
        for _ in range(n):
            await layer.send(channel, message)
        print(f"send, batcher answered at once: {1e6 * (time.process_time() - started) / n:.2f} us")


asyncio.run(main())
