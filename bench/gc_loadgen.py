"""``bench.loadgen`` that also reports when it sent each broadcast's frame (``sends``:
``[sequence, time.perf_counter()]``), for ``bench.gc_log`` to place a server's garbage
collections inside or outside the measured broadcasts."""

from __future__ import annotations

import asyncio
import json
import sys
import time

from bench import loadgen

sends: list[tuple[int, float]] = []
_send = loadgen.WebSocket.send


def _recorded(self: loadgen.WebSocket, payload: bytes) -> None:
    head = payload.split(b":", 1)[0]
    if head.lstrip(b"-").isdigit():
        sends.append((int(head), time.perf_counter()))
    _send(self, payload)


loadgen.WebSocket.send = _recorded  # type: ignore[method-assign]

if __name__ == "__main__":
    loadgen.raise_open_files_limit()
    started = time.perf_counter()
    result = asyncio.run(loadgen.main(json.loads(sys.argv[1])))
    result["sends"] = sends
    result["started"] = started
    print(json.dumps(result), flush=True)
