"""Benchmark this project against Django Channels 4.3, python-socketio 5 and a bare ASGI
ceiling, on one or several ASGI servers.

    .venv/bin/python -m bench.run [--quick] [--rounds N] [--scenarios a,b] [--server a,b]
                                  [--impls a,b] [--output DIR]

Scenarios (run in this order): layer, echo, broadcast, isolation, http, memory, recovery,
scale. Within a round each scenario runs on each server in turn, and on each server ours,
the peers and bare one after another (A, B, C, A, B, C, ...); the layer has no server and
runs once a round, with redis-benchmark after it. Writes ``latest.md`` (the ratio table,
one table per server, targets) and ``latest.json`` (every run's raw figures) to the output
directory (``bench/results`` by default). See bench/README.md."""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness import envs, report
from bench.harness.procs import Processes, pinning_available
from bench.harness.scenarios import (
    BENCH,
    PROFILES,
    SCENARIOS,
    SERVERLESS,
    SERVERS,
    Context,
    Impl,
    delete_keys,
    make_impls,
    redis_benchmark,
    snapshot_source,
)

DEFAULT_REDIS = "redis://127.0.0.1:6379/10"
ALL_IMPLS = ("ours", "channels", "socketio", "bare", "ours-nometrics", "bare-adapted", "floor")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round, short windows (~2 min)")
    parser.add_argument(
        "--tiny", action="store_true", help="smoke test: tiny sizes, for tests/test_bench.py"
    )
    parser.add_argument("--rounds", type=int, help="rounds per scenario (default 5, quick 1)")
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help=f"comma list of {','.join(SCENARIOS)}"
    )
    parser.add_argument(
        "--impls", default="ours,channels,bare", help="comma list of " + ",".join(ALL_IMPLS)
    )
    parser.add_argument(
        "--server",
        default="daphne",
        help="the ASGI server(s) every implementation runs on, a comma list of "
        f"{','.join(SERVERS)} (default daphne); each scenario runs on each in every round",
    )
    parser.add_argument("--output", type=Path, default=BENCH / "results")
    parser.add_argument(
        "--logs", type=Path, help="keep every process's output here (default: a temp dir)"
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS),
        help=f"Redis for the Redis scenarios; keys get a per-run prefix (default {DEFAULT_REDIS})",
    )
    args = parser.parse_args(argv)
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    args.impls = [i for i in args.impls.split(",") if i]
    for name in args.scenarios:
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
    for name in args.impls:
        if name not in ALL_IMPLS:
            parser.error(f"unknown implementation {name!r}; choose from {', '.join(ALL_IMPLS)}")
    args.servers = [server for server in args.server.split(",") if server]
    for name in args.servers:
        if name not in SERVERS:
            parser.error(f"unknown server {name!r}; choose from {', '.join(SERVERS)}")
    if not args.servers or len(set(args.servers)) != len(args.servers):
        parser.error("--server: name each server once")
    args.profile = "tiny" if args.tiny else "quick" if args.quick else "full"
    if args.rounds is None:
        args.rounds = 5 if args.profile == "full" else 1
    return args


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop processes


def redis_server_pid(url: str) -> int | None:
    """Redis's own pid when it runs on this machine (to report its CPU; read-only)."""
    try:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=2)
        try:
            pid = int(client.info("server")["process_id"])
        finally:
            client.close()
        return pid if os.path.exists(f"/proc/{pid}/stat") else None
    except Exception:
        return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:7.1f}s] {message}", flush=True)

    peers = {
        name: envs.ensure_venv(envs.PEERS[name], log) for name in args.impls if name in envs.PEERS
    }
    profile = PROFILES[args.profile]
    args.output.mkdir(parents=True, exist_ok=True)
    run_id = f"bench-{os.getpid()}-{int(time.time())}"
    runs: list[dict[str, Any]] = []
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-") as temp_dir:
        # Ours runs from a copy of consumers/ and channels_layer/ taken now, so that edits
        # made while the benchmark runs cannot mix versions between rounds.
        git_revision = _git_revision()
        source = snapshot_source(Path(temp_dir) / "src")
        impls = make_impls(Path(sys.executable), peers, source)
        log_dir = args.logs or Path(temp_dir) / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        procs = Processes(log_dir)
        ctx = Context(
            procs=procs,
            impls=impls,
            profile=profile,
            redis_url=args.redis_url,
            prefix=run_id,
            log=log,
            redis_pid=redis_server_pid(args.redis_url),
            server=args.servers[0],
        )
        if not pinning_available():
            log("taskset unavailable (or one core): processes run unpinned")
        try:
            for round_index in range(1, args.rounds + 1):
                for scenario in args.scenarios:
                    # The layer scenario has no server: it runs once a round, with
                    # redis-benchmark beside it.
                    servers = [None] if scenario in SERVERLESS else args.servers
                    for server in servers:
                        ctx.server = server or args.servers[0]
                        steps = [
                            (impl, SCENARIOS[scenario])
                            for impl in args.impls
                            if impls[impl].runs(scenario)
                        ]
                        if scenario == "layer":
                            steps.append(("redis", lambda ctx, _: redis_benchmark(ctx)))
                        for impl, measure in steps:
                            where = f" on {server}" if server else ""
                            log(f"round {round_index}/{args.rounds}: {scenario} / {impl}{where}")
                            run = _measure(ctx, impls.get(impl), measure, log)
                            run.update(round=round_index, scenario=scenario, impl=impl)
                            run["server"] = server
                            if "error" in run:
                                errors.append(
                                    f"round {round_index} {scenario}/{impl}{where}: "
                                    + run["error"].splitlines()[0]
                                )
                            runs.append(run)
        finally:
            procs.stop_all()
            if any(s in ("layer", "broadcast") for s in args.scenarios):
                try:
                    delete_keys(args.redis_url, run_id)  # e.g. channels_redis's group sets
                except Exception as error:
                    log(f"could not delete the run's Redis keys: {error}")
    started_pids = procs.started
    elapsed = time.monotonic() - started
    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", "-m", "bench.run", *sys.argv[1:]]),
        "profile": args.profile,
        "rounds": args.rounds,
        "scenarios": args.scenarios,
        "impls": args.impls,
        "servers": args.servers,
        "pinned": pinning_available(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "versions": envs.versions_report(peers),
        "redis_url": args.redis_url,
        "elapsed_s": round(elapsed, 1),
        "git": git_revision,
        "ours_source": "a copy of consumers/ and channels_layer/ taken at the start",
        "started_pids": started_pids,
    }
    write_results(args.output, meta, runs, errors, profile)
    log(f"done in {elapsed:.0f} s: {args.output / 'latest.md'}")
    return 0


def _measure(
    ctx: Context, impl: Impl | None, measure: Callable[[Context, Any], dict[str, Any]], log: Any
) -> dict[str, Any]:
    """One scenario for one implementation on one server; every process it started is
    stopped afterwards, also on failure."""
    began = time.monotonic()
    run: dict[str, Any] = {}
    try:
        run["metrics"] = measure(ctx, impl)
    except Exception as error:
        run["error"] = f"{type(error).__name__}: {error}"
        log(f"  failed: {traceback.format_exc()}")
    finally:
        ctx.procs.stop_all()
    run["elapsed_s"] = round(time.monotonic() - began, 2)
    return run


def _git_revision() -> str:
    """The commit measured, with "+changes" when the tree had uncommitted changes
    (the bench directory itself aside)."""
    try:
        head = subprocess.run(
            # git from PATH, as a developer runs it; fixed arguments.
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607
            cwd=BENCH,
            capture_output=True,
            text=True,
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "status", "--porcelain", "--", "consumers", "channels_layer"],  # noqa: S607
            cwd=BENCH.parent,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (head or "unknown") + ("+changes" if changes else "")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def write_results(
    output: Path, meta: dict[str, Any], runs: list[dict[str, Any]], errors: list[str], profile: Any
) -> None:
    """``latest.md``: the ratio table, one table per server, the layer's table (no server)
    with redis-benchmark beside it; ``latest.json``: every run, the medians and rows per
    server."""
    rows = report.rows(profile.broadcast_sizes, profile.group_sizes)
    versions = meta["versions"]
    project = versions.get("project", {})
    peers = ", ".join(
        f"{name} {versions.get(venv, {}).get(name) or '-'}"
        for venv, name in (
            ("channels", "channels"),
            ("channels", "channels-redis"),
            ("socketio", "python-socketio"),
            ("socketio", "python-engineio"),
        )
    )
    servers = meta["servers"]
    header = [
        "# Benchmark: django-consumers vs Django Channels vs python-socketio vs bare ASGI",
        "",
        f"{meta['date']}, commit {meta.get('git', '?')}, `{meta['command']}`: "
        f"profile {meta['profile']}, {meta['rounds']} round(s), medians over rounds; "
        f"{meta['elapsed_s']} s in all.",
        f"{meta['cores']} cores ({meta['cpu']}), Python {meta['python']}; "
        + (
            "servers and receivers pinned to core 0, load generator and sender to core 1."
            if meta["pinned"]
            else "**not pinned** (taskset missing or one core)."
        ),
        "Servers: "
        + ", ".join(f"{server} {project.get(server) or '?'}" for server in servers)
        + f" (each scenario on each in every round); Django {project.get('Django')}; "
        + f"peers: {peers}.",
        "",
        "Ratios are ours divided by the other column (for latencies and memory lower is "
        "better). CPU rows: % of one core over the measurement window, server / load "
        "generator (layer: both receivers / sender / Redis); a load generator near 100 % "
        "would be the bottleneck and is flagged. In the HTTP rows the bare column is "
        "Django's own ASGI handler.",
    ]
    ran = {run["scenario"] for run in runs}
    with_server = {scenario for scenario in SCENARIOS if scenario not in SERVERLESS}
    sections: list[str] = []
    evaluated: dict[str, list[dict[str, Any]]] = {}
    med_by_server: dict[str, Any] = {}
    for server in servers:
        med = report.medians(runs, server)
        med_by_server[server] = med
        extras = tuple(impl for impl in report.EXTRA_IMPLS if impl in med)
        text, evaluated[server] = report.markdown(
            rows,
            med,
            ran,
            [],
            [f"## On {server} {project.get(server) or ''}"],
            with_server,
            (*report.IMPLS, *extras),
        )
        sections += [text, *_targets(evaluated[server]), ""]
    if ran & SERVERLESS:
        med = report.medians([run for run in runs if run.get("server") is None])
        med_by_server["(no server)"] = med
        text, evaluated["(no server)"] = report.markdown(
            rows,
            med,
            ran,
            [],
            ["## The channel layer alone (no server)"],
            set(SERVERLESS),
            ("ours", "channels", "bare"),
        )
        sections += [text, *report.redis_benchmark_table(med), *_targets(evaluated["(no server)"])]
    size = max(profile.broadcast_sizes)
    ratio_lines = report.ratio_table({s: evaluated[s] for s in servers}, size)
    lines = [*header, "", "## Ratios per server, measured in the same run", "", *ratio_lines]
    lines += ["", *sections]
    if errors:
        lines += ["", "## Errors", "", *[f"- {error}" for error in errors]]
    (output / "latest.md").write_text("\n".join(lines) + "\n")
    payload = {
        "meta": meta,
        "runs": runs,
        "medians": med_by_server,
        "rows": evaluated,
        "errors": errors,
    }
    (output / "latest.json").write_text(json.dumps(payload, indent=1) + "\n")


def _targets(evaluated: list[dict[str, Any]]) -> list[str]:
    summary = ["", "Targets:", ""]
    for row in evaluated:
        if row["target"]:
            verdict = {True: "met", False: "MISSED", None: "n/a"}[row["met"]]
            if row.get("lg_bound"):
                verdict += " (load generator saturated: not judged)"
            summary.append(f"- {verdict}: {row['label']} ({row['key']}) {row['target']}")
    return summary if len(summary) > 3 else []


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
