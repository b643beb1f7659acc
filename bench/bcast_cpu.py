"""Server CPU a broadcast member, ours (and ours at a base commit) against bare.

    flock /tmp/bench.lock .venv/bin/python -m bench.bcast_cpu [--server hypercorn]
        [--layer redis] [--size 1000] [--messages 10,110] [--rounds 3]
        [--impls base,ours,bare] [--base REV]

For each round and implementation in turn, the server(s) of the broadcast scenario are
started (as ``bench.gc_log`` does) and the load generator run twice on them, with the
fewer and then the more ``--messages`` broadcasts to ``--size`` clients; the serving
processes' CPU (``/proc``, user + system) is read around each run. The difference of the
two runs' CPU over the difference of their broadcasts is what a broadcast costs the
server(s) without the connection storm and its close; over ``--size``, a member. Also the
p50/p99 of the longer run. ``--gap`` (the load generator's, 0.02 s by default): a longer
one shows whether some of it is a cost per second rather than per broadcast.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bcast_profile import _workers
from bench.harness import scenarios
from bench.harness.scenarios import Context
from bench.probe_servers import probe_context

TICK = os.sysconf("SC_CLK_TCK")


def _cpu(pids: list[int]) -> tuple[float, float]:
    """User and system CPU seconds of ``pids``."""
    user = system = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        user, system = user + int(fields[11]), system + int(fields[12])
    return user / TICK, system / TICK


def broadcast_spec(impl: Any, size: int, messages: int, gap: float) -> dict[str, Any]:
    """The load generator's broadcast run: ``size`` clients, ``messages`` broadcasts,
    ``gap`` seconds between a broadcast's last delivery and the next one's send."""
    return {
        "mode": "broadcast",
        "protocol": impl.protocol,
        "path": "/ws/broadcast/",
        "connections": size,
        "messages": messages,
        "gap": gap,
    }


def run_one(
    ctx: Context, impl: Any, layer: str, size: int, messages: list[int], gap: float = 0.02
) -> dict[str, Any]:
    count = 1 if layer == "memory" else 2
    servers = scenarios.start_servers(ctx, impl, count=count, layer=layer)
    try:
        time.sleep(0.5)
        pids = [pid for proc, _ in servers for pid in _workers(proc.pid)]
        spent = []
        result: dict[str, Any] = {}
        for number in messages:
            spec = broadcast_spec(impl, size, number, gap)
            user, system = _cpu(pids)
            result = scenarios.loadgen(ctx, spec, servers)
            time.sleep(0.3)  # the departed clients leave the group
            user_after, system_after = _cpu(pids)
            spent.append((user_after - user, system_after - system))
    finally:
        scenarios.stop(ctx, [proc for proc, _ in servers])
    extra = messages[-1] - messages[0]
    per_broadcast = (sum(spent[-1]) - sum(spent[0])) / extra
    return {
        "cpu_s": [[round(u, 2), round(s, 2)] for u, s in spent],  # user, system
        "system_us_a_member": round((spent[-1][1] - spent[0][1]) / extra / size * 1e6, 2),
        "ms_a_broadcast": round(per_broadcast * 1e3, 2),
        "us_a_member": round(per_broadcast / size * 1e6, 2),
        "p50_ms": result.get("p50_ms"),
        "p99_ms": result.get("p99_ms"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="hypercorn", choices=tuple(scenarios.SERVERS))
    parser.add_argument("--layer", default="redis", choices=("memory", "redis"))
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--messages", default="10,110")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--impls", default="base,ours,bare")
    parser.add_argument("--base", default="main")
    parser.add_argument("--gap", type=float, default=0.02, help="seconds between broadcasts")
    args = parser.parse_args(argv)
    names = [name for name in args.impls.split(",") if name]
    messages = [int(number) for number in args.messages.split(",")]
    found: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="bcast-cpu-") as temp:
        temp_dir = Path(temp)
        base = args.base if "base" in names else None
        ctx = probe_context(temp_dir, args.server, "bcastcpu", base)
        impls, procs = ctx.impls, ctx.procs
        try:
            for round_ in range(1, args.rounds + 1):
                for name in names:
                    run = run_one(ctx, impls[name], args.layer, args.size, messages, args.gap)
                    found[name].append(run)
                    print(json.dumps({"round": round_, "impl": name, **run}), flush=True)
        finally:
            procs.stop_all()
            if args.layer == "redis":
                scenarios.delete_keys(ctx.redis_url, ctx.prefix)
    for name, runs in found.items():
        members = sorted(run["us_a_member"] for run in runs)
        p99 = sorted(run["p99_ms"] or 0.0 for run in runs)
        print(f"{name}: us a member {members} (median {statistics.median(members)}), p99 {p99}")


if __name__ == "__main__":
    main()
