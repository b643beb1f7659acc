"""The scale scenario's load from several processes: more WebSockets than one process may
open (its open-files limit, 20,000 on the benchmark machine, counts every socket), e.g.
20,000 over two servers behind nginx.

    python -m bench.scale_fleet '<spec>'     # as bench.loadgen's scale mode, plus "shards"

A coordinator (this process, no connections of its own) forks ``shards`` processes, each
opening its share of ``connections``. All storm at once; then one shard sends each
broadcast and every shard times the deliveries to its own clients against the send time
(``time.perf_counter`` is the system's monotonic clock, the same in every process). The
result has the keys of ``bench.loadgen.scale`` but its own CPU share (``lg_cpu_pct``).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

from bench.loadgen import (
    SocketIO,
    WebSocket,
    close_all,
    open_clients,
    scale_figures,
    storm,
    tree_cpu_seconds,
    tree_rss_kib,
)
from testsupport.system import raise_open_files_limit

# Each shard's connections: well under a 20,000 open-files limit.
PER_SHARD = 8000


class Shard:
    """One process's share of the clients, driven by the coordinator's commands."""

    def __init__(self, spec: dict[str, Any], count: int, pipe: Connection) -> None:
        self.spec, self.count, self.pipe = spec, count, pipe
        self.clients: list[WebSocket] = []
        self.members: set[int] = set()
        self.arrivals: dict[int, list[float]] = {}
        self.pending: dict[int, int] = {}
        self.sent_at: dict[int, float] = {}
        self.everyone = asyncio.Event()

    def on_message(self, client: WebSocket, payload: bytes) -> None:
        now = time.perf_counter()
        sequence = int(payload.split(b":", 1)[0])
        if sequence not in self.pending or id(client) not in self.members:
            return
        self.arrivals[sequence].append(now)
        self.pending[sequence] -= 1
        if self.pending[sequence] == 0:
            self.everyone.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                command = await loop.run_in_executor(None, self.pipe.recv)
            except EOFError:  # the coordinator gave up (``Fleet.stop`` after a failure)
                return
            reply = await getattr(self, command.pop("cmd"))(**command)
            self.pipe.send(reply)
            if reply.get("closed"):
                return

    async def warm(self) -> dict[str, Any]:
        """A few connections opened and closed: lazy imports and caches before the RSS."""
        warm = await open_clients(self.spec, self.spec["path"], 10, self.on_message, "broadcast")
        await asyncio.sleep(0.3)
        await close_all(warm)
        return {}

    async def storm(self, at: float) -> dict[str, Any]:
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        limit = at + self.spec.get("storm_s", 10.0) - time.perf_counter()
        clients, errors, last_open = await storm(self.spec, self.count, self.on_message, limit)
        self.clients = clients
        self.members = {id(client) for client in clients}
        return {"opened": len(clients), "errors": errors, "last_open": last_open}

    async def arm(self, sequence: int) -> dict[str, Any]:
        self.everyone.clear()
        self.pending[sequence] = len(self.clients)
        self.arrivals[sequence] = []
        if not self.clients:
            self.everyone.set()
        return {}

    async def send(self, sequence: int) -> dict[str, Any]:
        for client in self.clients:
            if isinstance(client, SocketIO):
                client.event = b"broadcast"
        sent_at = time.perf_counter()
        self.clients[0].send(f"{sequence}:{'x' * 32}".encode())
        return {"sent_at": sent_at}

    async def wait(self, sequence: int, sent_at: float, timeout: float) -> dict[str, Any]:
        self.sent_at[sequence] = sent_at
        try:
            await asyncio.wait_for(self.everyone.wait(), timeout)
        except TimeoutError:
            return {"complete": False}
        return {"complete": True}

    async def stats(self) -> dict[str, Any]:
        latencies = [
            arrival - self.sent_at[sequence]
            for sequence, arrivals in self.arrivals.items()
            if sequence >= 0 and sequence in self.sent_at
            for arrival in arrivals
        ]
        return {"latencies": latencies}

    async def close(self) -> dict[str, Any]:
        await close_all(self.clients, wait=10)
        return {"closed": True}


def _shard_main(
    spec: dict[str, Any], count: int, pipe: Connection, inherited: list[Connection]
) -> None:
    # The coordinator's pipe ends, copied by fork: kept open here, the coordinator's
    # closing them would never reach this shard's ``recv``.
    for end in inherited:
        end.close()
    asyncio.run(Shard(spec, count, pipe).run())


class Fleet:
    """The coordinator's side: a command to every shard, their replies in shard order."""

    def __init__(self, spec: dict[str, Any]) -> None:
        total = spec["connections"]
        shards = max(spec.get("shards", 1), -(-total // PER_SHARD))
        context = multiprocessing.get_context("fork")
        self.pipes: list[Connection] = []
        self.processes = []
        for index in range(shards):
            share = total // shards + (index < total % shards)
            ours, theirs = context.Pipe()
            process = context.Process(
                target=_shard_main, args=(spec, share, theirs, [*self.pipes, ours])
            )
            process.start()
            theirs.close()  # the shard's own now
            self.pipes.append(ours)
            self.processes.append(process)

    def ask(
        self, pipes: list[Connection], within: float, command: dict[str, Any]
    ) -> list[dict[str, Any]]:
        for pipe in pipes:
            pipe.send(command)
        replies = []
        for pipe in pipes:
            if not pipe.poll(within):
                raise TimeoutError(f"a shard did not answer {command['cmd']!r} in {within} s")
            replies.append(pipe.recv())
        return replies

    def everyone(self, within: float, command: dict[str, Any]) -> list[dict[str, Any]]:
        return self.ask(self.pipes, within, command)

    def stop(self) -> None:
        """Closing the pipes ends a shard still waiting for a command (after a failure)."""
        for pipe in self.pipes:
            pipe.close()
        for process in self.processes:
            process.join(15)
            if process.is_alive():
                process.kill()
                process.join()


def scale(spec: dict[str, Any]) -> dict[str, Any]:
    """As ``bench.loadgen.scale``, the clients spread over shard processes."""
    pids, messages = spec["server_pids"], spec.get("messages", 5)
    storm_s, timeout = spec.get("storm_s", 10.0), spec.get("timeout", 30)
    fleet = Fleet(spec)
    try:
        fleet.ask(fleet.pipes[:1], 60, {"cmd": "warm"})
        time.sleep(spec.get("settle", 1.0))
        before = sum(map(tree_rss_kib, pids))
        at = time.perf_counter() + 0.5
        storms = fleet.everyone(storm_s + 30, {"cmd": "storm", "at": at})
        opened = sum(result["opened"] for result in storms)
        errors = [error for result in storms for error in result["errors"]]
        time.sleep(spec.get("settle", 1.0))
        after = sum(map(tree_rss_kib, pids))
        senders = [pipe for pipe, r in zip(fleet.pipes, storms, strict=True) if r["opened"]]
        timed_out, cpu_before = 0, 0.0
        for sequence in range(-1, messages if senders else -1):  # -1: unmeasured warm-up
            if sequence == 0:
                cpu_before = sum(map(tree_cpu_seconds, pids))
            fleet.everyone(30, {"cmd": "arm", "sequence": sequence})
            (sent,) = fleet.ask(senders[:1], 30, {"cmd": "send", "sequence": sequence})
            command = {"cmd": "wait", "sequence": sequence, "timeout": timeout, **sent}
            waited = fleet.everyone(timeout + 30, command)
            timed_out += sequence >= 0 and not all(reply["complete"] for reply in waited)
        broadcasts_cpu = sum(map(tree_cpu_seconds, pids)) - cpu_before if senders else 0.0
        time.sleep(0.2)
        latencies = [
            x for reply in fleet.everyone(60, {"cmd": "stats"}) for x in reply["latencies"]
        ]
        fleet.everyone(60, {"cmd": "close"})
    finally:
        fleet.stop()
    last_open = max(result["last_open"] for result in storms)
    figures = scale_figures(
        opened, errors, last_open, (before, after), messages, latencies, broadcasts_cpu
    )
    return {**figures, "shards": len(fleet.pipes), "timed_out_messages": timed_out}


if __name__ == "__main__":
    raise_open_files_limit()
    print(json.dumps(scale(json.loads(sys.argv[1]))), flush=True)
