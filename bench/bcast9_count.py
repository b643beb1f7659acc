"""Where a broadcast member's server CPU goes: inside the fan-out or outside it, and what
per-member events (suspended sends, hand-overs to reader tasks, wake-ups) happen at all.

    flock /tmp/bench.lock .venv/bin/python -m bench.bcast9_count [--server uvicorn]
        [--size 1000] [--messages 10,90] [--rounds 2] [--impls ours,bare]

The broadcast scenario's server (in-memory layer) serves ``bench.bcast9_app``; the load
generator runs twice on it (the fewer, then the more ``--messages``), as ``bench.bcast_cpu``
does. From the difference of the two runs, over the extra broadcasts' members: the process
CPU a member (``/proc``, user + system), the fan-out's thread CPU a member, the rest
(outside the fan-out), and each event counted by the app, a member.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bcast_cpu import _cpu, broadcast_spec
from bench.bcast_profile import _workers
from bench.harness import scenarios
from bench.harness.scenarios import Context
from bench.probe_servers import probe_context


def run_one(ctx: Context, impl: Any, out: Path, size: int, messages: list[int]) -> dict[str, Any]:
    servers = scenarios.start_servers(ctx, impl, count=1, layer="memory")
    try:
        time.sleep(0.5)
        pids = [pid for proc, _ in servers for pid in _workers(proc.pid)]
        taken = []
        for number in messages:
            spec = broadcast_spec(impl, size, number, 0.02)
            user, system = _cpu(pids)
            result = scenarios.loadgen(ctx, spec, servers)
            time.sleep(0.3)
            user_after, system_after = _cpu(pids)
            counts = json.loads(out.read_text())
            taken.append((user_after - user + system_after - system, counts, result))
    finally:
        scenarios.stop(ctx, [proc for proc, _ in servers])
    (cpu0, first, _), (cpu1, total, result) = taken
    # Each run's own counts; the second run's extra broadcasts over the first's.
    gen2 = total.pop("gen2")
    first.pop("gen2")
    second = {name: value - first.get(name, 0) for name, value in total.items()}
    members = second["members"] - first["members"]

    def extra(name: str) -> float:
        return (second[name] - first[name]) / members

    found: dict[str, Any] = {
        "extra_members": members,
        "us_a_member": round((cpu1 - cpu0) / members * 1e6, 2),
        "fanout_us_a_member": round(extra("fanout_cpu_s") * 1e6, 2),
        "p99_ms": result.get("p99_ms"),
    }
    found["server_send_us"] = round(extra("server_send_s") * 1e6, 2)
    user, system = extra("process_user_s") * 1e6, extra("process_system_s") * 1e6
    found["user_system_us"] = [round(user, 2), round(system, 2)]
    found["fanout_user_system_us"] = [
        round(extra("fanout_user_s") * 1e6, 2),
        round(extra("fanout_system_s") * 1e6, 2),
    ]
    found["outside_us_a_member"] = round(found["us_a_member"] - found["fanout_us_a_member"], 2)
    found["gen2"] = gen2  # (broadcasts before it, ms, objects collected)
    for name in ("gc0_s", "gc1_s", "gc2_s", "gc0_n", "gc1_n", "gc2_n"):
        first.setdefault(name, 0)
        second.setdefault(name, 0)
    for name in total:
        if not name.endswith("_s") and name not in ("members", "broadcasts"):
            found[name] = round(extra(name), 4)
    found["gc_us_a_member"] = round(extra("gc_s") * 1e6, 2)
    found["gc_runs"] = [  # each run's collections by generation: count, ms
        {k: round(v * 1e3, 1) if k.endswith("_s") else v for k, v in run.items() if k[:2] == "gc"}
        for run in (first, second)
    ]
    return found


def _with(env: Any, more: dict[str, str]) -> Any:
    """The harness's server environment, plus ``more``."""

    def with_more(impl: Any, extra: Any = None) -> Any:
        return {**env(impl, extra), **more}

    return with_more


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="uvicorn", choices=tuple(scenarios.SERVERS))
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--messages", default="10,90")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--impls", default="ours,bare")
    args = parser.parse_args(argv)
    messages = [int(number) for number in args.messages.split(",")]
    saved_env = scenarios._env
    with tempfile.TemporaryDirectory(prefix="bcast9-count-") as temp:
        temp_dir = Path(temp)
        ctx = probe_context(temp_dir, args.server, "bcast9count")
        try:
            for round_ in range(1, args.rounds + 1):
                for name in args.impls.split(","):
                    out = temp_dir / f"counts-{name}.json"
                    base = ctx.impls["ours"]
                    impl = dataclasses.replace(base, name=name, app="bench.bcast9_app")
                    extra = {"BCAST9_IMPL": name, "BCAST9_OUT": str(out)}
                    scenarios._env = _with(saved_env, extra)
                    try:
                        found = run_one(ctx, impl, out, args.size, messages)
                    finally:
                        scenarios._env = saved_env
                    print(json.dumps({"round": round_, "impl": name, **found}), flush=True)
        finally:
            ctx.procs.stop_all()


if __name__ == "__main__":
    main()
