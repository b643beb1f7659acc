"""A garbage-collection log for a benchmark server (``bench.gc_log`` puts this directory
first on the server's PYTHONPATH). With ``BENCH_GC_LOG`` set to a directory, each
collection is written as it ends, one JSON line (generation, start on
``time.perf_counter()`` (the system's monotonic clock, which the load generator's
timestamps share), duration in s, objects collected, objects frozen) to
``BENCH_GC_LOG/<pid>.jsonl``, after a first line naming the process: servers end in
several ways (Uvicorn raises its SIGTERM again, Hypercorn's workers end with ``os._exit``),
so nothing waits for an exit hook. A line costs some microseconds, against the
milliseconds of the collections it records."""

import gc
import json
import os
import sys
import time
from typing import Any

_directory = os.environ.get("BENCH_GC_LOG", "")
if _directory:
    _file: list[Any] = [None]
    _started = [0.0]
    _clock = time.perf_counter

    def _open():
        # The pid at the first collection: a forked or spawned child gets its own file.
        file = open(os.path.join(_directory, f"{os.getpid()}.jsonl"), "a", buffering=1)  # noqa: SIM115
        head = {"argv": sys.argv, "pid": os.getpid(), "ppid": os.getppid()}
        head["layer"] = os.environ.get("BENCH_LAYER")
        file.write(json.dumps(head) + "\n")
        _file[0] = (os.getpid(), file)
        return file

    def _on_gc(phase, info):
        if phase == "start":
            _started[0] = _clock()
            return
        now = _clock()
        opened = _file[0]
        file = opened[1] if opened is not None and opened[0] == os.getpid() else _open()
        line = [info["generation"], _started[0], now - _started[0], info["collected"]]
        file.write(json.dumps([*line, gc.get_freeze_count()]) + "\n")

    gc.callbacks.append(_on_gc)
