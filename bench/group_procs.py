"""The layer scenario's group of 10,000, per broadcast, with each receiver's collections.

    .venv/bin/python -m bench.group_procs [--impl ours|bare] [--members 10000] [--sends 3]

As ``bench.harness.scenarios._group`` does it: two ``bench.layer_worker`` receiving
processes on core 0 with half the members each, the sender on core 1, ``--sends``
broadcasts one after the other; but each broadcast's latencies are reported apart (p50,
p99, max, ms), with the garbage collections each receiver ran meanwhile (count per
generation, their time in ms, the tracked objects after). ``--collect``: a full
collection in each receiver after the setup (the harness makes none). Run it under
``flock /tmp/bench.lock``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any


def _worker() -> None:
    """A ``bench.layer_worker`` with a ``gc`` command: the collections since the last."""
    import asyncio

    from bench import layer_worker

    counts = [0, 0, 0]
    seconds = [0.0, 0.0, 0.0]
    started = [0.0]

    def watch(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            generation = info["generation"]
            counts[generation] += 1
            seconds[generation] += time.perf_counter() - started[0]

    gc.callbacks.append(watch)

    class Worker(layer_worker.Worker):
        async def cmd_collect(self) -> dict[str, Any]:
            return {"collected": gc.collect()}

        async def cmd_gc(self) -> dict[str, Any]:
            reply = {
                "counts": list(counts),
                "ms": [round(s * 1e3, 2) for s in seconds],
                "objects": len(gc.get_objects()),
                "get_count": gc.get_count(),
            }
            counts[:] = [0, 0, 0]
            seconds[:] = [0.0, 0.0, 0.0]
            return reply

    layer_worker.Worker = Worker  # type: ignore[misc]
    asyncio.run(layer_worker.main())


class Child:
    def __init__(self, argv: list[str], core: int) -> None:
        env = dict(os.environ)
        env.pop("DJANGO_SETTINGS_MODULE", None)
        self.proc = subprocess.Popen(
            [shutil.which("taskset") or "taskset", "-c", str(core), *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.read()

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        return dict(json.loads(self.proc.stdout.readline()))

    def request(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write('{"cmd": "quit"}\n')
        self.proc.stdin.flush()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", choices=("ours", "bare"), default="ours")
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--sends", type=int, default=3)
    parser.add_argument(
        "--collect",
        action="store_true",
        help="a full collection in each receiver after the setup, before the first send",
    )
    args = parser.parse_args()
    url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/5")
    prefix = f"group-procs-{os.getpid()}"
    argv = [sys.executable, "-m", "bench.group_procs", "--worker", args.impl, url, prefix]
    sender = Child(argv, 1)
    receivers = [Child(argv, 0), Child(argv, 0)]
    try:
        shares = [args.members // 2, args.members - args.members // 2]
        for receiver, share in zip(receivers, shares, strict=True):
            receiver.request({"cmd": "group", "group": "g", "count": share})
            if args.collect:
                receiver.request({"cmd": "collect"})
            print("after setup:", receiver.request({"cmd": "gc"}), flush=True)
        for key in range(args.sends):
            sender.request({"cmd": "group_send", "group": "g", "key": key})
            latencies: list[float] = []
            collections = []
            for receiver, share in zip(receivers, shares, strict=True):
                receiver.request({"cmd": "wait", "key": key, "expected": share, "timeout": 20})
                latencies += receiver.request({"cmd": "stats"})["latencies"]
                collections.append(receiver.request({"cmd": "gc"}))
            latencies.sort()
            ms = [1e3 * latencies[int(q * (len(latencies) - 1))] for q in (0.5, 0.99, 1.0)]
            print(
                f"{args.impl} send {key}: p50 {ms[0]:.1f} p99 {ms[1]:.1f} max {ms[2]:.1f} ms"
                f" ({len(latencies)} got); gc "
                + "; ".join(
                    f"{c['counts']} {c['ms']} ms, {c['objects']} objects" for c in collections
                ),
                flush=True,
            )
            time.sleep(0.2)
    finally:
        for child in (sender, *receivers):
            child.stop()
        import redis

        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.unlink(*keys)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        sys.argv = [sys.argv[0], *sys.argv[2:]]
        _worker()
    else:
        main()
