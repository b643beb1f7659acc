"""Recovery: a thousand clients drop and reconnect at once after missing 100 messages each.

    .venv/bin/python -m bench.run --scenarios recovery --impls ours   # within the harness
    .venv/bin/python -m bench.recovery [--clients 1000] [--missed 100] [--redis-url URL]

Two Daphne processes of ``bench.recovery_app`` over Redis (a key prefix of this run,
deleted afterwards) on the server core; one client process on the load core. The clients
connect (half to each Daphne) and each notes the position ``consumers.joined`` gives it;
all of them close; one more client has the server send ``--missed`` messages to the group;
then every client reconnects at once (100 handshakes in flight at a time) asking to resume
from its position. Reported: the time from the first reconnect until every client has
received ``consumers.recovered`` (and the median), the messages lost (expected offsets
never received) and duplicated (received twice), failed recoveries, and Redis's CPU over
that window (``INFO cpu``, user + system) with the commands it ran (``INFO commandstats``).
Only ours runs it: Channels has no history.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench import loadgen
from bench.harness.procs import LOAD_CORE, Processes
from bench.harness.scenarios import (
    PROFILES,
    Context,
    Impl,
    delete_keys,
    make_impls,
    start_servers,
    stop,
)
from testsupport.system import raise_open_files_limit

PATH = "/ws/recover/"
GROUP = "bench.recovery"
SIZES = {"full": (1000, 100), "quick": (1000, 100), "tiny": (20, 5)}  # clients, missed
IN_FLIGHT = 100  # handshakes at a time


def recovery(ctx: Context, impl: Impl) -> dict[str, Any]:
    """The harness scenario (``ours`` only)."""
    if impl.name != "ours":
        ctx.log(f"  recovery: not run for {impl.name} (no group history)")
        return {}
    clients, missed = SIZES[ctx.profile.name]
    app = Impl(impl.name, impl.python, impl.pythonpath, None, "bench.recovery_app")
    servers = start_servers(ctx, app, count=2, layer="redis")
    spec = {
        "ports": [port for _, port in servers],
        "clients": clients,
        "missed": missed,
        "redis_url": ctx.redis_url,
    }
    client = ctx.procs.start(
        "recovery-clients",
        [sys.executable, "-m", "bench.recovery", "--drive", json.dumps(spec)],
        core=LOAD_CORE,
        pipe=True,
    )
    try:
        result = client.read_json(timeout=300)
    finally:
        stop(ctx, [client, *(proc for proc, _ in servers)])
        delete_keys(ctx.redis_url, ctx.prefix)
    commands = result.pop("commands")
    return {
        **{f"recovery.{key}": value for key, value in result.items()},
        **{f"recovery.redis_calls.{name}": calls for name, calls in commands.items()},
    }


class Client:
    """One simulated page: its position, and what it received after reconnecting."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.position: dict[str, Any] | None = None
        self.joined = loop.create_future()
        self.done = loop.create_future()
        self.offsets: list[int] = []
        self.recovered_at = 0.0
        self.failed = False

    def on_frame(self, socket: loadgen.WebSocket, payload: bytes) -> None:
        frame = json.loads(payload)
        kind = frame.get("type")
        if kind == "consumers.joined" and not self.joined.done():
            self.position = frame["position"]
            self.joined.set_result(None)
        elif kind == "bench.note":
            self.offsets.append(frame["__position__"]["offset"])
        elif kind in ("consumers.recovered", "consumers.recovery_failed") and not self.done.done():
            self.failed = kind == "consumers.recovery_failed"
            self.recovered_at = time.monotonic()
            self.done.set_result(None)

    def path(self) -> str:
        if self.position is None:
            return PATH
        return PATH + "?recover=" + quote(json.dumps({GROUP: self.position}))


async def open_sockets(
    clients: list[Client], ports: list[int], waiting_for: str
) -> list[loadgen.WebSocket]:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(index: int, client: Client) -> loadgen.WebSocket:
        port = ports[index % len(ports)]
        async with gate:
            socket = loadgen.WebSocket(client.path(), port, client.on_frame)
            await loop.create_connection(lambda: socket, loadgen.HOST, port)
            return await asyncio.wait_for(socket.opened, 60)

    sockets = await asyncio.gather(*(one(i, c) for i, c in enumerate(clients)))
    await asyncio.wait_for(asyncio.gather(*(getattr(c, waiting_for) for c in clients)), 120)
    return list(sockets)


def redis_counters(url: str) -> tuple[float, dict[str, int]]:
    """Redis's CPU seconds (user + system) and its calls per command, so far."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=10)
    try:
        cpu = client.info("cpu")
        calls = {
            name.removeprefix("cmdstat_"): int(stats["calls"])
            for name, stats in client.info("commandstats").items()
        }
    finally:
        client.close()
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), calls


async def drive(spec: dict[str, Any]) -> dict[str, Any]:
    ports, count, missed = spec["ports"], spec["clients"], spec["missed"]
    clients = [Client() for _ in range(count)]
    await loadgen.close_all(await open_sockets(clients, ports, "joined"))
    # Everyone is away: the group gets its messages.
    sender = Client()
    [socket] = await open_sockets([sender], ports[:1], "joined")
    published = asyncio.get_running_loop().create_future()
    socket.on_message = lambda _, payload: (
        published.set_result(json.loads(payload)) if b'"published"' in payload else None
    )
    socket.send(json.dumps({"type": "publish", "count": missed}).encode())
    last = (await asyncio.wait_for(published, 60))["offset"]
    await loadgen.close_all([socket])

    cpu_before, calls_before = redis_counters(spec["redis_url"])
    started = time.monotonic()
    sockets = await open_sockets(clients, ports, "done")
    ended = max(client.recovered_at for client in clients)
    cpu_after, calls_after = redis_counters(spec["redis_url"])
    await asyncio.sleep(0.5)  # anything sent twice would arrive now
    await loadgen.close_all(sockets)

    lost = duplicates = 0
    for client in clients:
        assert client.position is not None
        expected = set(range(client.position["offset"] + 1, last + 1))
        lost += len(expected - set(client.offsets))
        duplicates += len(client.offsets) - len(set(client.offsets))
    window = ended - started
    commands = Counter(calls_after) - Counter(calls_before)
    return {
        "clients": count,
        "missed_each": missed,
        "all_recovered_s": round(window, 3),
        "median_recovered_s": round(
            statistics.median(client.recovered_at - started for client in clients), 3
        ),
        "lost": lost,
        "duplicates": duplicates,
        "failed": sum(client.failed for client in clients),
        "redis_cpu_s": round(cpu_after - cpu_before, 3),
        "redis_cpu_pct": round(100 * (cpu_after - cpu_before) / window, 1) if window else None,
        "redis_commands": sum(commands.values()),
        "commands": dict(commands.most_common()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--drive", help=argparse.SUPPRESS)  # the client process's spec
    parser.add_argument("--clients", type=int, default=SIZES["full"][0])
    parser.add_argument("--missed", type=int, default=SIZES["full"][1])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/10")
    args = parser.parse_args(argv)
    if args.drive:
        raise_open_files_limit()
        print(json.dumps(asyncio.run(drive(json.loads(args.drive)))), flush=True)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-recovery-") as temp:
        procs = Processes(Path(temp))
        ours = make_impls(Path(sys.executable), None)["ours"]
        prefix = f"bench-recovery-{time.time_ns()}"
        ctx = Context(procs, {"ours": ours}, PROFILES["full"], args.redis_url, prefix)
        SIZES["full"] = (args.clients, args.missed)
        try:
            metrics = recovery(ctx, ours)
        finally:
            procs.stop_all()
    print(json.dumps(metrics, indent=1))
    return 0 if metrics.get("recovery.lost") == 0 and metrics.get("recovery.duplicates") == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
