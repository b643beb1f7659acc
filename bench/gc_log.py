"""The garbage collections of the broadcast scenario's servers, ours against bare.

    flock /tmp/bench.lock .venv/bin/python -m bench.gc_log [--server uvicorn]
        [--layer memory|redis] [--sizes 1000] [--messages 20] [--rounds 3]
        [--impls base,ours,bare] [--base REV] [--output DIR]

For each round and each implementation in turn (A, B, C, A, B, C, ...), the server(s) of
``bench.harness.scenarios.broadcast`` are started for one layer, with
``bench/gc_probe/sitecustomize.py`` logging each collection, and ``--messages`` broadcasts
to ``--size`` clients measured (``bench.gc_loadgen``: ``bench.loadgen`` that also gives when
each broadcast was sent). ``base`` is ours as committed at ``--base`` (``git archive``),
``ours`` the work tree. Per run: the p50/p99, the collections of each generation over the
server's life, from the load generator's start (its connection storm on) and during the
measured broadcasts (from a frame's send to the next one's), their durations, the full
collections inside a measured broadcast, and the collections of each phase (storm, warm-up
broadcasts, measured ones, close). ``python -m bench.gc_summary FILE [SIZE]`` sums it up.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import scenarios
from bench.harness.scenarios import Context, Impl
from bench.probe_servers import probe_context

PROBE = Path(__file__).resolve().parent / "gc_probe"


def _with_probe(log_dir: Path) -> Any:
    plain = scenarios._env

    def env(impl: Impl, extra: dict[str, str] | None = None) -> dict[str, str]:
        found = plain(impl, extra)
        found["PYTHONPATH"] = f"{PROBE}:{found['PYTHONPATH']}"
        found["BENCH_GC_LOG"] = str(log_dir)
        return found

    return env


def _read_log(path: Path) -> dict[str, Any]:
    head, *lines = path.read_text().splitlines()
    log: dict[str, Any] = json.loads(head)
    log["collections"] = [json.loads(line) for line in lines]
    log["frozen"] = log["collections"][-1][4] if log["collections"] else 0
    return log


def _summary(
    logs: list[dict[str, Any]], windows: list[tuple[float, float]], started: float
) -> dict[str, Any]:
    life = [0, 0, 0]
    run = [0, 0, 0]
    run_ms = [0.0, 0.0, 0.0]
    inside = [0, 0, 0]
    inside_ms = [0.0, 0.0, 0.0]
    full_ms: list[float] = []
    full_inside_ms: list[float] = []
    for log in logs:
        for generation, start, duration, _collected, _frozen in log["collections"]:
            life[generation] += 1
            if start >= started:  # from the load generator's start: its clients' storm on
                run[generation] += 1
                run_ms[generation] += duration * 1e3
            hit = any(begin <= start < end for begin, end in windows)
            if hit:
                inside[generation] += 1
                inside_ms[generation] += duration * 1e3
            if generation == 2:
                full_ms.append(round(duration * 1e3, 1))
                if hit:
                    full_inside_ms.append(round(duration * 1e3, 1))
    return {
        "collections_life": life,
        "collections_run": run,
        "run_ms": [round(ms, 1) for ms in run_ms],
        "collections_measured": inside,
        "measured_ms": [round(ms, 1) for ms in inside_ms],
        "full_ms": full_ms,
        "full_in_measured_ms": full_inside_ms,
        "frozen": [log["frozen"] for log in logs],
    }


def _phases(
    logs: list[dict[str, Any]],
    sends: list[list[float]],
    started: float,
    windows: list[tuple[float, float]],
) -> dict[str, Any]:
    """Collections (count per generation, ms) in each phase of the load generator's run:
    the connection storm (to the first, warm-up, broadcast), the warm-up broadcasts, the
    measured ones (their windows, as above, with the gaps between them) and the close."""
    first = min((at for _, at in sends), default=started)
    measured = [begin for begin, _ in windows]
    bounds = {
        "storm": (started, first),
        "warmup": (first, measured[0] if measured else first),
        "measured": (measured[0] if measured else first, windows[-1][1] if windows else first),
    }
    found: dict[str, Any] = {name: [[0, 0, 0], 0.0] for name in (*bounds, "close")}
    for log in logs:
        for generation, start, duration, _collected, _frozen in log["collections"]:
            if start < started:
                continue
            phase = next((name for name, (a, b) in bounds.items() if a <= start < b), "close")
            found[phase][0][generation] += 1
            found[phase][1] += duration * 1e3
    return {f"phase_{name}": [counts, round(ms, 1)] for name, (counts, ms) in found.items()}


def _windows(sends: list[list[float]], last_ms: float) -> list[tuple[float, float]]:
    measured = sorted(at for sequence, at in sends if sequence >= 0)
    ends = [*measured[1:], measured[-1] + last_ms / 1e3] if measured else []
    return list(zip(measured, ends, strict=True))


def run_one(
    ctx: Context, impl: Impl, layer: str, sizes: list[int], messages: int, log_dir: Path
) -> list[dict[str, Any]]:
    """One server (or two, over Redis) for ``impl``, a measurement for each of ``sizes`` in
    turn, as ``bench.harness.scenarios.broadcast`` runs them."""
    log_dir.mkdir(parents=True)
    scenarios._env = _with_probe(log_dir)
    processes = 1 if layer == "memory" else 2
    servers = scenarios.start_servers(ctx, impl, count=processes, layer=layer)
    results = []
    try:
        for size in sizes:
            spec = {
                "mode": "broadcast",
                "protocol": impl.protocol,
                "path": "/ws/broadcast/",
                "connections": size,
                "messages": messages,
            }
            results.append(scenarios.loadgen(ctx, spec, servers, module="bench.gc_loadgen"))
            time.sleep(0.3)  # as the scenario does: the departed clients leave the group
    finally:
        scenarios.stop(ctx, [proc for proc, _ in servers])
    logs = [_read_log(path) for path in sorted(log_dir.glob("*.jsonl"))]
    # Hypercorn serves from a spawned child: its parent's log and that of multiprocessing's
    # resource tracker (another ``-c`` child) are left out.
    workers = [log for log in logs if "--multiprocessing-fork" in log["argv"]]
    logs = workers or [log for log in logs if log["argv"][0] != "-c"]
    if len(logs) != processes:
        raise RuntimeError(f"{len(logs)} GC logs for {processes} server processes")
    runs = []
    for size, result in zip(sizes, results, strict=True):
        sends = result.pop("sends")
        windows = _windows(sends, result.get("max_ms") or 0.0)
        started = result.pop("started")
        figures = {key: result.get(key) for key in ("p50_ms", "p99_ms", "max_ms", "lost")}
        summary = _summary(logs, windows, started)
        runs.append({"size": size, **figures, **summary, **_phases(logs, sends, started, windows)})
    return runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="uvicorn", choices=tuple(scenarios.SERVERS))
    parser.add_argument("--layer", default="memory", choices=("memory", "redis"))
    parser.add_argument("--sizes", default="1000", help="comma list, measured in turn")
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--impls", default="base,ours,bare")
    parser.add_argument("--base", default="main", help="the commit `base` runs (git archive)")
    parser.add_argument("--output", type=Path, help="write every run's figures here (JSON)")
    args = parser.parse_args(argv)
    names = [name for name in args.impls.split(",") if name]
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="gc-log-") as temp:
        temp_dir = Path(temp)
        base = args.base if "base" in names else None
        ctx = probe_context(temp_dir, args.server, "gclog", base)
        impls, procs = ctx.impls, ctx.procs
        try:
            for round_ in range(1, args.rounds + 1):
                for name in names:
                    log_dir = temp_dir / f"gc-{round_}-{name}"
                    sizes = [int(size) for size in args.sizes.split(",")]
                    for run in run_one(ctx, impls[name], args.layer, sizes, args.messages, log_dir):
                        run.update(round=round_, impl=name, server=args.server, layer=args.layer)
                        runs.append(run)
                        print(json.dumps(run), flush=True)
                    time.sleep(0.3)
        finally:
            procs.stop_all()
            if args.layer == "redis":
                scenarios.delete_keys(ctx.redis_url, ctx.prefix)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
