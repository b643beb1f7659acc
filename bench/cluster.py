"""Ours on a Redis Cluster beside a single Redis (issue 19).

    .venv/bin/python -m bench.cluster [--rounds N] [--replicas 0|1] [--tiny] [--output DIR]

Starts its own redis-servers on free ports (``testsupport.redis_servers``), every round: a
single redis-server, a Cluster of 1 master and a Cluster of 3 masters (each master with
``--replicas`` replicas), all started together, then measured one after another. On each
it runs the harness's layer scenario (point-to-point
from a sender process to a receiving process, and one group over two receiving processes),
a spread part (one sender to six receiving processes, whose inboxes hash to different
shards: the only part that can use more than one master) and the Redis half of the
broadcast scenario (two Daphnes, clients in one group). Ours only: Channels' Redis layer
cannot use a Cluster (channels_redis#420). Writes ``cluster.md`` and ``cluster.json`` to
``bench/results`` (``--output``); see bench/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness.procs import LOAD_CORE, SERVER_CORE, Processes, pinning_available
from bench.harness.scenarios import (
    LATENCY,
    PROFILES,
    WORKDIR,
    Context,
    Impl,
    Profile,
    _copy,
    _CpuMeter,
    _env,
    broadcast,
    delete_keys,
    layer,
    make_impls,
    snapshot_source,
    wait_for_arrivals,
)
from bench.loadgen import percentiles
from bench.run import _cpu_model, _git_revision
from testsupport.processes import Process
from testsupport.redis_servers import RedisClusterServers, RedisServer

RESULTS = Path(__file__).resolve().parent / "results"
TOPOLOGIES = ("single", "cluster1", "cluster3")
TITLES = {
    "single": "single Redis",
    "cluster1": "Cluster, 1 master",
    "cluster3": "Cluster, 3 masters",
}
# Receiving processes of the spread part, by profile: each inbox lands on a random master,
# and 6 cover all 3 about 3 times in 4 (the table says how many masters carried one).
SPREAD_RECEIVERS = {"cluster": 6, "cluster-tiny": 2}

# The harness's quick sizes, one group and one broadcast size (the figures that matter
# here are the ratios between topologies, measured in the same round).
PROFILE = dataclasses.replace(
    PROFILES["quick"],
    name="cluster",
    layer_duration=2.0,
    group_sizes=(1000,),
    group_sends=5,
    broadcast_sizes=(1000,),
    broadcast_messages=10,
)
TINY = dataclasses.replace(
    PROFILES["tiny"], name="cluster-tiny", group_sizes=(20,), broadcast_sizes=(20,)
)


@dataclasses.dataclass
class Topology:
    """The redis-servers of one topology: the URL the layer is given, the pid of every
    server by role (for the CPU rows), and how to stop them (kill, delete their files)."""

    name: str
    url: str
    cpu_groups: dict[str, list[int]]
    stop: Callable[[], None]

    @property
    def cluster(self) -> bool:
        return self.name != "single"


def start_topology(name: str, replicas: int) -> Topology:
    if name == "single":
        server = RedisServer().start()
        assert server.process is not None
        return Topology(name, server.url, {"redis_cpu": [server.process.pid]}, server.kill)
    servers = RedisClusterServers(masters=int(name.removeprefix("cluster")), replicas=replicas)
    servers.start()
    masters = [node.process.pid for node in servers.live_masters() if node.process]
    everyone = [node.process.pid for node in servers.nodes if node.process]
    groups = {"redis_cpu": everyone}
    groups.update({f"master{index}_cpu": [pid] for index, pid in enumerate(masters)})
    if replicas:
        groups["replicas_cpu"] = [pid for pid in everyone if pid not in masters]
    return Topology(name, servers.url, groups, servers.stop)


@contextmanager
def every_topology(replicas: int, pids: list[int]) -> Iterator[dict[str, Topology]]:
    """Every topology, started at once: a Cluster's masters take no writes for 2 s after
    they start (Redis's own delay), so the Clusters wait in parallel, once per round. All
    are stopped on leaving, also when one failed to start; their pids go to ``pids``."""
    with ThreadPoolExecutor(len(TOPOLOGIES)) as pool:
        futures = {name: pool.submit(start_topology, name, replicas) for name in TOPOLOGIES}
    ready = {name: future.result() for name, future in futures.items() if not future.exception()}
    try:
        for name, future in futures.items():
            if future.exception():
                raise RuntimeError(f"{TITLES[name]} did not start") from future.exception()
        for topology in ready.values():
            pids.extend(topology.cpu_groups["redis_cpu"])
        yield ready
    finally:
        for topology in ready.values():
            topology.stop()


def cpu_per_message(metrics: dict[str, Any], tag: str, rate_key: str) -> None:
    """Where a saturated message's time goes: CPU microseconds per message received, of
    ours (receivers and sender) and of Redis (every redis-server)."""
    rate = metrics.get(f"{tag}.{rate_key}")
    receivers, sender = metrics.get(f"{tag}.srv_cpu"), metrics.get(f"{tag}.lg_cpu")
    if rate and receivers is not None and sender is not None:
        metrics[f"{tag}.ours_us"] = round((receivers + sender) * 1e4 / rate, 1)
    if rate and metrics.get(f"{tag}.redis_cpu") is not None:
        metrics[f"{tag}.redis_us"] = round(metrics[f"{tag}.redis_cpu"] * 1e4 / rate, 1)


def run_parts(ctx: Context, impl: Impl, run: dict[str, Any], errors: list[str]) -> None:
    """Every part on one topology, into ``run``; a failure is recorded and ends the
    topology's parts (its processes are stopped), not the run."""
    try:
        for part, function in PARTS.items():
            run["metrics"].update(function(ctx, impl))
            ctx.log(f"  {part} done")
        cpu_per_message(run["metrics"], "p2p_sat", "rps")
        cpu_per_message(run["metrics"], "spread", "rps")
    except Exception as error:
        run["error"] = f"{type(error).__name__}: {error}"
        errors.append(f"round {run['round']} {run['topology']}: {run['error']}")
        ctx.log(f"  failed: {run['error']}")
    finally:
        ctx.procs.stop_all()


def spread(ctx: Context, impl: Impl) -> dict[str, Any]:
    """One sender at saturation to the channels of several receiving processes,
    round-robin: each process's inbox lives on the shard its id hashes to, so on 3 masters
    the load can spread (how it did shows in the per-master CPU)."""
    profile = ctx.profile
    prefix = ctx.fresh_prefix(impl.name)
    argv = [str(impl.python), "-m", "bench.layer_worker", impl.name, ctx.redis_url, prefix]
    env = _env(impl)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    if ctx.redis_cluster:
        env["BENCH_REDIS_CLUSTER"] = "1"
    roles = [("send", LOAD_CORE)] + [
        (f"recv-{i}", SERVER_CORE) for i in range(SPREAD_RECEIVERS[profile.name])
    ]
    workers: list[Process] = []
    try:
        for role, core in roles:
            name = f"layer-{impl.name}-{role}"
            workers.append(ctx.procs.start(name, argv, core=core, env=env, cwd=WORKDIR, pipe=True))
        for worker in workers:
            worker.read_json(timeout=30)  # {"ready": ...}
        sender, receivers = workers[0], workers[1:]
        share = max(1, profile.layer_channels // len(receivers))
        lists = [r.request({"cmd": "channels", "count": share})["channels"] for r in receivers]
        channels = [name for names in zip(*lists, strict=True) for name in names]
        cpu = {
            "srv_cpu": [r.pid for r in receivers],
            "lg_cpu": [sender.pid],
            **ctx.redis_cpu_groups,
        }
        with _CpuMeter(cpu) as meter:
            sent = sender.request(
                {
                    "cmd": "p2p_saturate",
                    "channels": channels,
                    "concurrency": profile.layer_concurrency,
                    "duration": profile.layer_duration,
                },
                timeout=profile.layer_duration * 10 + 60,
            )
        expected = sent["sent"] - sent["full"]
        wait_for_arrivals(receivers, expected, 10)
        since, until = sent["start"] + profile.layer_warmup, sent["end"]
        stats = [r.request({"cmd": "stats", "since": since, "until": until}) for r in receivers]
        latencies = [latency for one in stats for latency in one["latencies"]]
        metrics: dict[str, Any] = {
            "spread.rps": round(sum(one["in_window"] for one in stats) / (until - since), 1),
            "spread.lost": expected - sum(one["received"] for one in stats),
        }
        metrics.update(_copy(percentiles(latencies), "spread", LATENCY))
        metrics.update({f"spread.{key}": value for key, value in meter.result.items()})
        busy = [key for key in meter.result if key.startswith("master")]
        metrics["spread.masters_used"] = sum(1 for key in busy if (meter.result[key] or 0) >= 2)
        return metrics
    finally:
        for worker in workers:
            ctx.procs.stop(worker)
        delete_keys(ctx.redis_url, prefix, ctx.redis_cluster)


def broadcast_over_redis(ctx: Context, impl: Impl) -> dict[str, Any]:
    """The harness's broadcast scenario, Redis half only, with the Redis CPU of the whole
    part (Daphnes starting, clients joining, the frames, clients leaving): the frames alone
    are too short a window, and the joins are a real part of a broadcast's cost."""
    with _CpuMeter(ctx.redis_cpu_groups) as meter:
        metrics = broadcast(ctx, impl, layers=("redis",))
    for key, value in list(metrics.items()):
        if key.endswith(".window_s") and value:
            tag = key.removesuffix(".window_s")
            size = int(tag.removeprefix("redis"))
            delivered = size * ctx.profile.broadcast_messages - metrics[f"{tag}.lost"]
            metrics[f"{tag}.deliveries_per_s"] = round(delivered / value, 1)
    metrics.update({f"bcast_part.{key}": value for key, value in meter.result.items()})
    return metrics


PARTS: dict[str, Callable[[Context, Impl], dict[str, Any]]] = {
    "layer": layer,
    "spread": spread,
    "broadcast": broadcast_over_redis,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument(
        "--replicas", type=int, default=1, choices=(0, 1), help="replicas per master"
    )
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, 1 round, no replicas")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where cluster.md/json go")
    parser.add_argument("--logs", type=Path, help="keep every process's output here")
    args = parser.parse_args(argv)
    if args.tiny:
        args.rounds, args.replicas = 1, 0
    return args


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop servers


def redis_version() -> str:
    out = subprocess.run(
        ["redis-server", "--version"],  # noqa: S607  the Debian package on PATH
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    began = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - began:7.1f}s] {message}", flush=True)

    profile = TINY if args.tiny else PROFILE
    args.output.mkdir(parents=True, exist_ok=True)
    run_id = f"bench-cluster-{os.getpid()}"
    runs: list[dict[str, Any]] = []
    errors: list[str] = []
    redis_pids: list[int] = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as temp_dir:
        git_revision = _git_revision()
        source = snapshot_source(Path(temp_dir) / "src")
        impl = make_impls(Path(sys.executable), None, source)["ours"]
        log_dir = args.logs or Path(temp_dir) / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        procs = Processes(log_dir)
        try:
            for round_index in range(1, args.rounds + 1):
                try:
                    with every_topology(args.replicas, redis_pids) as topologies:
                        for name, topology in topologies.items():
                            log(f"round {round_index}/{args.rounds}: {TITLES[name]}")
                            run = {"round": round_index, "topology": name, "metrics": {}}
                            runs.append(run)
                            ctx = Context(
                                procs=procs,
                                impls={"ours": impl},
                                profile=profile,
                                redis_url=topology.url,
                                prefix=run_id,
                                log=log,
                                redis_cluster=topology.cluster,
                                redis_cpu_groups=topology.cpu_groups,
                            )
                            run_parts(ctx, impl, run, errors)
                except Exception as error:
                    errors.append(f"round {round_index}: {error}: {error.__cause__!r}")
                    log(f"  failed: {errors[-1]}")
        finally:
            procs.stop_all()
    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", "-m", "bench.cluster", *sys.argv[1:]]),
        "profile": profile.name,
        "rounds": args.rounds,
        "replicas": args.replicas,
        "pinned": pinning_available(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "redis": redis_version(),
        "load_before": [round(value, 2) for value in load_before],
        "load_after": [round(value, 2) for value in os.getloadavg()],
        "elapsed_s": round(time.monotonic() - began, 1),
        "git": git_revision,
        "started_pids": procs.started,
        "redis_pids": redis_pids,
    }
    write_results(args.output, meta, runs, errors, profile)
    log(f"done: {args.output / 'cluster.md'}")
    return 1 if errors else 0


def medians(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each topology's median of every metric over the rounds that produced it."""
    out: dict[str, dict[str, float]] = {}
    for name in TOPOLOGIES:
        values: dict[str, list[float]] = {}
        for run in runs:
            if run["topology"] == name:
                for key, value in run["metrics"].items():
                    if isinstance(value, int | float):
                        values.setdefault(key, []).append(value)
        out[name] = {key: round(statistics.median(found), 3) for key, found in values.items()}
    return out


def _rows(profile: Profile) -> list[tuple[str, list[str], str]]:
    """(label, metric keys, unit): one key, or several shown "a / b / c" (CPU rows)."""
    group, clients = profile.group_sizes[0], profile.broadcast_sizes[0]
    cpu = ["srv_cpu", "lg_cpu", "redis_cpu"]
    masters = [*(f"master{index}_cpu" for index in range(3)), "replicas_cpu"]
    return [
        (
            f"point-to-point, {profile.layer_rate:g} msg/s offered: achieved",
            ["p2p_rate.achieved"],
            "msg/s",
        ),
        ("point-to-point, offered rate: p50 / p99", ["p2p_rate.p50_ms", "p2p_rate.p99_ms"], "ms"),
        ("point-to-point, offered rate: lost", ["p2p_rate.lost"], ""),
        ("point-to-point at saturation, 1 receiving process: received", ["p2p_sat.rps"], "msg/s"),
        ("saturation, 1 receiver: p50 / p99", ["p2p_sat.p50_ms", "p2p_sat.p99_ms"], "ms"),
        (
            "saturation, 1 receiver, CPU: receiver / sender / Redis",
            [f"p2p_sat.{k}" for k in cpu],
            "%",
        ),
        (
            "saturation, 1 receiver, CPU per message: ours / Redis",
            ["p2p_sat.ours_us", "p2p_sat.redis_us"],
            "µs",
        ),
        (
            "saturation, 1 receiver, CPU: each master / replicas",
            [f"p2p_sat.{k}" for k in masters],
            "%",
        ),
        (
            f"spread: 1 sender to {SPREAD_RECEIVERS[profile.name]} receiving processes: received",
            ["spread.rps"],
            "msg/s",
        ),
        ("spread: p50 / p99", ["spread.p50_ms", "spread.p99_ms"], "ms"),
        ("spread: lost", ["spread.lost"], ""),
        ("spread, CPU: receivers / sender / Redis", [f"spread.{k}" for k in cpu], "%"),
        ("spread, CPU per message: ours / Redis", ["spread.ours_us", "spread.redis_us"], "µs"),
        ("spread: masters carrying an inbox (CPU >= 2 %)", ["spread.masters_used"], ""),
        ("spread, CPU: each master / replicas", [f"spread.{k}" for k in masters], "%"),
        (f"group of {group:,} (layer): group_send call", [f"group{group}.send_ms"], "ms"),
        (
            f"group of {group:,}: fan-out p50 / p99",
            [f"group{group}.p50_ms", f"group{group}.p99_ms"],
            "ms",
        ),
        (f"group of {group:,}: lost", [f"group{group}.lost"], ""),
        (
            f"broadcast, {clients:,} clients on 2 Daphnes: p50 / p99",
            [f"redis{clients}.p50_ms", f"redis{clients}.p99_ms"],
            "ms",
        ),
        (
            f"broadcast, {clients:,} clients: deliveries (one frame at a time)",
            [f"redis{clients}.deliveries_per_s"],
            "/s",
        ),
        (f"broadcast, {clients:,} clients: lost", [f"redis{clients}.lost"], ""),
        (
            "broadcast, CPU: Daphnes (frames) / Redis (whole part)",
            [f"redis{clients}.srv_cpu", "bcast_part.redis_cpu"],
            "%",
        ),
    ]


def _cell(figures: dict[str, float], keys: list[str]) -> str:
    found = [figures.get(key) for key in keys]
    if all(value is None for value in found):
        return "-"
    return " / ".join("-" if value is None else f"{value:g}" for value in found)


def table(
    meta: dict[str, Any], med: dict[str, dict[str, float]], errors: list[str], profile: Profile
) -> str:
    """The Markdown: one row per figure, one column per topology, then 3 masters / 1 master
    for the single-figure rows."""
    lines = [
        "# Ours on Redis Cluster beside a single Redis",
        "",
        f"{meta['date']}, commit {meta['git']}, `{meta['command']}`: profile {meta['profile']}, "
        f"medians of {meta['rounds']} round(s); {meta['replicas']} replica(s) per master; "
        f"{meta['elapsed_s']} s in all. {meta['cores']} cores ({meta['cpu']}), Python "
        f"{meta['python']}, {meta['redis']}; load average {meta['load_before'][0]} before, "
        f"{meta['load_after'][0]} after. "
        + (
            "Receivers and Daphnes pinned to core 0, senders and load generator to core 1; "
            "redis-servers not pinned."
            if meta["pinned"]
            else "Unpinned."
        ),
        "",
        "CPU: % of one core over the measurement window (broadcast's Redis: over the whole "
        "part, joins included); Redis is every redis-server of the topology, replicas included. "
        "Every process shares the machine's cores: where ours' receivers or sender are near "
        "100 % and Redis far below, ours bounds the rate, and more masters cannot raise it. "
        "A process's inbox is on the master its random id hashes to, so the spread over "
        "masters changes from round to round (cluster.json has every round).",
        "",
        "| figure | unit | "
        + " | ".join(TITLES[name] for name in TOPOLOGIES)
        + " | 3 / 1 masters |",
        "| --- | --- | " + " | ".join("---:" for _ in TOPOLOGIES) + " | ---: |",
    ]
    for label, keys, unit in _rows(profile):
        cells = [_cell(med.get(name, {}), keys) for name in TOPOLOGIES]
        ratio = "-"
        one, three = med.get("cluster1", {}).get(keys[0]), med.get("cluster3", {}).get(keys[0])
        if len(keys) == 1 and unit in ("msg/s", "/s") and one and three:
            ratio = f"{three / one:.2f}x"
        lines.append(f"| {label} | {unit} | " + " | ".join(cells) + f" | {ratio} |")
    if errors:
        lines += ["", "Errors:", "", *(f"- {error}" for error in errors)]
    return "\n".join(lines)


def write_results(
    output: Path,
    meta: dict[str, Any],
    runs: list[dict[str, Any]],
    errors: list[str],
    profile: Profile,
) -> None:
    med = medians(runs)
    (output / "cluster.json").write_text(
        json.dumps({"meta": meta, "runs": runs, "medians": med, "errors": errors}, indent=1) + "\n"
    )
    (output / "cluster.md").write_text(table(meta, med, errors, profile) + "\n")


if __name__ == "__main__":
    sys.exit(main())
