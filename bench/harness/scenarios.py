"""The scenarios: each starts its servers or layer workers for one implementation, drives
the load, stops everything it started and returns flat ``{metric: value}``.

Implementations: ``ours`` (this project, in the project's venv), ``channels`` (Django
Channels 4.3 and channels-redis 4.3, in bench/.venv-channels), ``socketio``
(python-socketio 5, in bench/.venv-socketio; the WebSocket scenarios only) and ``bare``
(the ceiling, hand-written, in the project's venv; in the HTTP scenario that column is
Django's own ASGI handler instead). Servers run on core 0, load generators and layer
senders on core 1.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import nginx_proxy
from bench.harness.procs import LOAD_CORE, SERVER_CORE, Processes
from bench.loadgen import percentiles
from testsupport.processes import Process, wait_for_port
from testsupport.system import cpu_seconds, free_port

BENCH = Path(__file__).resolve().parents[1]
ROOT = BENCH.parent
HOST = "127.0.0.1"
MIN_CPU_WINDOW = 0.5  # seconds
# Where servers and layer workers run: not ROOT, whose consumers/ would come first on their
# sys.path and shadow the snapshot ``ours`` runs from (``bench`` is found on PYTHONPATH).
WORKDIR = BENCH


@dataclass
class Profile:
    """How long and how big: ``full``, ``quick`` (about 2 minutes) or ``tiny`` (tests)."""

    name: str
    warmup: float
    duration: float
    echo_connections: int = 50
    broadcast_sizes: tuple[int, ...] = (200, 1000)
    broadcast_messages: int = 20
    layer_duration: float = 3.0
    layer_warmup: float = 0.5
    layer_channels: int = 50
    layer_rate: float = 2000
    layer_high_rate: float = 10_000  # the p99 goal is at this offered rate; 0: skip
    layer_concurrency: int = 64
    group_sizes: tuple[int, ...] = (10, 1000, 10000)
    group_sends: int = 5
    idle_connections: int = 1000
    http_connections: int = 32
    isolation_duration: float = 4.0
    settle: float = 1.0
    redis_requests: int = 100_000
    scale_connections: int = 10_000
    scale_messages: int = 5


PROFILES = {
    "full": Profile("full", warmup=1.0, duration=3.0),
    "quick": Profile(
        "quick",
        warmup=0.5,
        duration=1.5,
        broadcast_messages=8,
        layer_duration=1.5,
        group_sends=3,
        isolation_duration=2.5,
        settle=0.6,
        redis_requests=50_000,
        scale_connections=3000,
        scale_messages=3,
    ),
    "tiny": Profile(
        "tiny",
        warmup=0.2,
        duration=0.5,
        echo_connections=5,
        broadcast_sizes=(10, 20),
        broadcast_messages=2,
        layer_duration=0.4,
        layer_warmup=0.1,
        layer_channels=5,
        layer_rate=200,
        layer_high_rate=0,
        layer_concurrency=4,
        group_sizes=(10, 40),
        group_sends=2,
        idle_connections=20,
        http_connections=4,
        isolation_duration=1.3,
        settle=0.3,
        redis_requests=2000,
        scale_connections=300,
        scale_messages=2,
    ),
}


@dataclass
class Impl:
    name: str
    python: Path
    pythonpath: list[Path]
    settings: str | None
    app: str
    # ``socketio``: the app speaks Socket.IO over its WebSockets (bench/loadgen.py's SocketIO).
    protocol: str = "websocket"
    # The scenarios it takes part in (None: all) and the echo variants it has.
    scenarios: frozenset[str] | None = None
    echo_variants: tuple[str, ...] = ("async", "sync", "json")
    # The broadcast scenario's layers: one process in memory, two over Redis.
    broadcast_layers: tuple[str, ...] = ("memory", "redis")

    def runs(self, scenario: str) -> bool:
        return self.scenarios is None or scenario in self.scenarios


@dataclass
class Context:
    procs: Processes
    impls: dict[str, Impl]
    profile: Profile
    redis_url: str
    prefix: str  # unique to this run; every Redis key the run makes starts with it
    log: Callable[[str], None] = print
    redis_pid: int | None = None
    server: str = "daphne"
    redis_cluster: bool = False  # redis_url is a Redis Cluster node (bench.cluster)
    redis_cpu_groups: dict[str, list[int]] = field(default_factory=dict)  # more layer CPU rows
    counter: list[int] = field(default_factory=lambda: [0])

    def fresh_prefix(self, impl: str) -> str:
        self.counter[0] += 1
        return f"{self.prefix}-{impl}-{self.counter[0]}"


def make_impls(
    project_python: Path, peers: dict[str, Path] | None, ours_source: Path = ROOT
) -> dict[str, Impl]:
    """``peers``: the python of each peer venv built (``channels``, ``socketio``);
    ``ours_source``: the directory holding ``consumers`` and ``channels_layer`` (run.py
    passes a copy taken at start, so edits made during a run do not mix versions)."""
    peers = peers or {}
    apps = "bench.apps"
    impls = {
        "ours": Impl(
            "ours", project_python, [ours_source, ROOT], f"{apps}.settings_ours", f"{apps}.ours"
        ),
        "bare": Impl("bare", project_python, [ROOT], None, f"{apps}.bare"),
        "ours-nometrics": Impl(
            "ours-nometrics",
            project_python,
            [ours_source, ROOT],
            f"{apps}.settings_ours_nometrics",
            f"{apps}.ours",
        ),
        "bare-adapted": Impl(
            "bare-adapted",
            project_python,
            [ours_source, ROOT],
            f"{apps}.settings_ours",
            f"{apps}.bare_adapted",
        ),
        # The Channels API at its least work (bench/floor): no Redis layer, no HTTP of its own.
        "floor": Impl(
            "floor",
            project_python,
            [ROOT],
            None,
            f"{apps}.floor",
            scenarios=frozenset({"echo", "broadcast"}),
            broadcast_layers=("memory",),
        ),
        "django": Impl(
            "django", project_python, [ROOT], f"{apps}.settings_django", f"{apps}.django_only"
        ),
    }
    if "channels" in peers:
        impls["channels"] = Impl(
            "channels",
            peers["channels"],
            [ROOT],
            f"{apps}.settings_channels",
            f"{apps}.channels_app",
        )
    if "socketio" in peers:
        impls["socketio"] = Impl(
            "socketio",
            peers["socketio"],
            [ROOT],
            None,
            f"{apps}.socketio_app",
            protocol="socketio",
            # No sync handlers on an ASGI server, no plain HTTP view, no channel layer.
            scenarios=frozenset({"echo", "broadcast", "memory", "scale", "scale2"}),
            echo_variants=("async", "json"),
        )
    return impls


def snapshot_source(target: Path) -> Path:
    """Copy the project's packages as they are now (uncommitted changes included)."""
    for package in ("consumers", "channels_layer"):
        shutil.copytree(
            ROOT / package, target / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    return target


def _env(impl: Impl, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        "PYTHONPATH": ":".join(str(p) for p in impl.pythonpath),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    if impl.settings:
        env["DJANGO_SETTINGS_MODULE"] = impl.settings
    env.update(extra or {})
    return env


# Servers and load generator --------------------------------------------------------------


# Each server's command line with its own defaults (logging errors only, no lifespan
# where the app has none to run), before the ``module:application`` argument.
SERVERS: dict[str, Callable[[int], list[str]]] = {
    "daphne": lambda port: ["daphne", "-v", "0", "-b", HOST, "-p", str(port)],
    "uvicorn": lambda port: [
        "uvicorn",
        "--host",
        HOST,
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--lifespan",
        "off",
    ],
    "hypercorn": lambda port: ["hypercorn", "-b", f"{HOST}:{port}", "--log-level", "warning"],
    "granian": lambda port: [
        "granian",
        "--interface",
        "asgi",
        "--host",
        HOST,
        "--port",
        str(port),
        "--log-level",
        "warning",
    ],
}


def start_servers(
    ctx: Context, impl: Impl, count: int = 1, layer: str = "memory"
) -> list[tuple[Process, int]]:
    """``count`` server processes (``ctx.server``) for ``impl`` (all on the server core),
    once listening."""
    extra = {"BENCH_LAYER": layer}
    if layer == "redis":
        extra.update(BENCH_REDIS_URL=ctx.redis_url, BENCH_PREFIX=ctx.fresh_prefix(impl.name))
        if ctx.redis_cluster:
            extra["BENCH_REDIS_CLUSTER"] = "1"
    servers = []
    for index in range(count):
        port = free_port()
        argv = [str(impl.python), "-m", *SERVERS[ctx.server](port)]
        proc = ctx.procs.start(
            f"{ctx.server}-{impl.name}-{index}",
            [*argv, f"{impl.app}:application"],
            core=SERVER_CORE,
            env=_env(impl, extra),
            # Granian imports "bench.apps.x" as a path under its working directory, putting
            # that path's first directory outside a package (here ROOT, whose consumers/
            # would shadow the snapshot) first on sys.path: give it one with no package.
            cwd=ctx.procs.log_dir if ctx.server == "granian" else WORKDIR,
        )
        servers.append((proc, port))
    for proc, port in servers:
        wait_for_port(proc, port)
    return servers


def stop(ctx: Context, procs: list[Process]) -> None:
    for proc in procs:
        ctx.procs.stop(proc)


def loadgen(
    ctx: Context,
    spec: dict[str, Any],
    servers: list[tuple[Process, int]],
    ports: list[int] | None = None,
    module: str = "bench.loadgen",
) -> dict[str, Any]:
    """Run one load-generator measurement (pinned to the load core) and return its result;
    its clients connect to ``ports`` (a proxy's), by default the servers' own. ``module``:
    the load generator (``bench.scale_fleet`` spreads the clients over processes)."""
    spec = {
        **spec,
        "ports": ports or [port for _, port in servers],
        "server_pids": [proc.pid for proc, _ in servers],
    }
    spec.setdefault("deadline", 180)
    proc = ctx.procs.start(
        f"loadgen-{spec['mode']}",
        [sys.executable, "-m", module, json.dumps(spec)],
        core=LOAD_CORE,
        pipe=True,
    )
    try:
        result = proc.read_json(timeout=spec["deadline"] + 15)
    finally:
        ctx.procs.stop(proc)
    for proc_, _ in servers:
        if not proc_.alive():
            raise RuntimeError(f"{proc_.name} died during the measurement:\n{proc_.tail()}")
    return result


def _copy(result: dict[str, Any], prefix: str, keys: tuple[str, ...]) -> dict[str, Any]:
    return {f"{prefix}.{key}": result.get(key) for key in keys}


LATENCY = ("p50_ms", "p99_ms", "max_ms")
CPU = ("srv_cpu", "lg_cpu")


# 1. WebSocket echo -----------------------------------------------------------------------

ECHO_VARIANTS = (
    ("async", "/ws/echo/", "x" * 32),
    ("sync", "/ws/sync/", "x" * 32),
    ("json", "/ws/json/", json.dumps({"text": "x" * 20, "n": 1})),
)


def echo(ctx: Context, impl: Impl) -> dict[str, Any]:
    profile = ctx.profile
    servers = start_servers(ctx, impl)
    metrics: dict[str, Any] = {}
    try:
        for variant, path, message in ECHO_VARIANTS:
            if variant not in impl.echo_variants:
                continue
            result = loadgen(
                ctx,
                {
                    "mode": "echo",
                    "protocol": impl.protocol,
                    "raw_json": variant == "json",  # Socket.IO: emitted as an object
                    "path": path,
                    "message": message,
                    "connections": profile.echo_connections,
                    "warmup": profile.warmup,
                    "duration": profile.duration,
                },
                servers,
            )
            metrics.update(_copy(result, variant, ("rps", "p50_ms", "p99_ms", *CPU)))
            if result.get("srv_cpu") and result.get("rps"):
                # Steadier than the rate on a shared machine: it counts only the server's work.
                metrics[f"{variant}.srv_us"] = round(result["srv_cpu"] * 1e4 / result["rps"], 1)
    finally:
        stop(ctx, [proc for proc, _ in servers])
    return metrics


# 2. Broadcast ----------------------------------------------------------------------------


def broadcast(ctx: Context, impl: Impl, layers: tuple[str, ...] | None = None) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    for layer in impl.broadcast_layers if layers is None else layers:
        processes = 1 if layer == "memory" else 2
        servers = start_servers(ctx, impl, count=processes, layer=layer)
        try:
            for size in ctx.profile.broadcast_sizes:
                result = loadgen(
                    ctx,
                    {
                        "mode": "broadcast",
                        "protocol": impl.protocol,
                        "path": "/ws/broadcast/",
                        "connections": size,
                        "messages": ctx.profile.broadcast_messages,
                    },
                    servers,
                )
                tag = f"{'mem' if layer == 'memory' else 'redis'}{size}"
                metrics.update(_copy(result, tag, (*LATENCY, "lost", *CPU, "window_s")))
                time.sleep(0.3)  # let the departed clients leave the group
        finally:
            stop(ctx, [proc for proc, _ in servers])
    return metrics


# 3. The channel layer alone, over Redis -----------------------------------------------------


class _CpuMeter:
    """CPU of the layer processes (and Redis, when its pid is known) over a window."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups

    def __enter__(self) -> _CpuMeter:
        self.start = time.monotonic(), self._read()
        return self

    def _read(self) -> dict[str, float]:
        out = {}
        for name, pids in self.groups.items():
            try:
                out[name] = sum(cpu_seconds(pid) for pid in pids)
            except OSError:
                out[name] = float("nan")
        return out

    def __exit__(self, *exc: object) -> None:
        wall = time.monotonic() - self.start[0]
        end = self._read()
        # /proc counts in clock ticks (10 ms): a shorter window would be mostly rounding.
        self.result = {
            name: round(100 * (end[name] - self.start[1][name]) / wall, 1)
            if wall >= MIN_CPU_WINDOW
            else None
            for name in self.groups
        }


def layer(ctx: Context, impl: Impl) -> dict[str, Any]:
    """Point-to-point between a receiving process and the sender, then each group size
    with two fresh receiving processes (so no backlog or idle receiver of an earlier part
    weighs on a later one, and nothing has to be cancelled in between)."""
    prefix = ctx.fresh_prefix(impl.name)
    argv = [str(impl.python), "-m", "bench.layer_worker", impl.name, ctx.redis_url, prefix]
    env = _env(impl)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    if ctx.redis_cluster:
        env["BENCH_REDIS_CLUSTER"] = "1"
    redis = {"redis_cpu": [ctx.redis_pid]} if ctx.redis_pid else {}
    redis.update(ctx.redis_cpu_groups)
    everyone: list[Process] = []

    def start(*roles: tuple[str, int]) -> list[Process]:
        workers = [
            ctx.procs.start(
                f"layer-{impl.name}-{role}", argv, core=core, env=env, cwd=WORKDIR, pipe=True
            )
            for role, core in roles
        ]
        everyone.extend(workers)
        for worker in workers:
            worker.read_json(timeout=30)  # {"ready": ...}
        return workers

    try:
        began = time.monotonic()
        sender, receiver = start(("send", LOAD_CORE), ("recv", SERVER_CORE))
        cpu = {"srv_cpu": [receiver.pid], "lg_cpu": [sender.pid], **redis}
        metrics = _point_to_point(ctx, receiver, sender, cpu)
        stop(ctx, [receiver])
        ctx.log(f"  point-to-point: {time.monotonic() - began:.1f} s")
        for size in ctx.profile.group_sizes:
            began = time.monotonic()
            receivers = start(("recv-a", SERVER_CORE), ("recv-b", SERVER_CORE))
            cpu = {"srv_cpu": [r.pid for r in receivers], "lg_cpu": [sender.pid], **redis}
            metrics.update(_group(ctx, size, receivers, sender, cpu))
            stop(ctx, receivers)
            ctx.log(f"  group of {size}: {time.monotonic() - began:.1f} s")
    finally:
        stop(ctx, everyone)
        delete_keys(ctx.redis_url, prefix, ctx.redis_cluster)
    return metrics


def _point_to_point(
    ctx: Context, receiver: Process, sender: Process, cpu_groups: dict[str, list[int]]
) -> dict[str, Any]:
    profile = ctx.profile
    metrics: dict[str, Any] = {}
    channels = receiver.request({"cmd": "channels", "count": profile.layer_channels})["channels"]
    timeout = profile.layer_duration * 10 + 60
    # Fixed offered rates (open loop): the profile's, then the 10,000/s.
    metrics.update(_offered(ctx, receiver, sender, channels, cpu_groups, profile.layer_rate))
    if profile.layer_high_rate:
        rate = profile.layer_high_rate
        metrics.update(_offered(ctx, receiver, sender, channels, cpu_groups, rate, "_high"))
    # Saturation (closed loop, many concurrent senders).
    with _CpuMeter(cpu_groups) as meter:
        sent = sender.request(
            {
                "cmd": "p2p_saturate",
                "channels": channels,
                "concurrency": profile.layer_concurrency,
                "duration": profile.layer_duration,
            },
            timeout=timeout,
        )
        time.sleep(0.2)
    since, until = sent["start"] + profile.layer_warmup, sent["end"]
    stats = receiver.request({"cmd": "stats", "since": since, "until": until})
    window = max(1e-9, until - since)
    metrics["p2p_sat.rps"] = round(stats["in_window"] / window, 1)
    metrics["p2p_sat.send_rps"] = round(sent["sent"] / (sent["end"] - sent["start"]), 1)
    metrics.update(_copy(percentiles(stats["latencies"]), "p2p_sat", LATENCY))
    metrics.update({f"p2p_sat.{k}": v for k, v in meter.result.items()})
    # One sender awaiting each send in turn: to the other process, then to its own channels.
    metrics.update(_one_by_one(ctx, receiver, sender, channels, "p2p_serial"))
    local = sender.request({"cmd": "channels", "count": profile.layer_channels})["channels"]
    metrics.update(_one_by_one(ctx, sender, sender, local, "p2p_local_serial"))
    sender.request({"cmd": "reset"})
    return metrics


def _offered(
    ctx: Context,
    receiver: Process,
    sender: Process,
    channels: list[str],
    cpu_groups: dict[str, list[int]],
    rate: float,
    suffix: str = "",
) -> dict[str, Any]:
    """Messages started at a fixed ``rate`` (open loop): ``p2p_rate{suffix}.*``."""
    profile = ctx.profile
    tag = f"p2p_rate{suffix}"
    with _CpuMeter(cpu_groups) as meter:
        sent = sender.request(
            {
                "cmd": "p2p_rate",
                "channels": channels,
                "rate": rate,
                "duration": profile.layer_duration,
            },
            timeout=profile.layer_duration * 10 + 60,
        )
    expected = sent["sent"] - sent["full"] - sent["errors"]
    wait_for_arrivals([receiver], expected, 5)
    since = sent["start"] + profile.layer_warmup
    stats = receiver.request({"cmd": "stats", "since": since})
    window = max(1e-9, sent["end"] - since)
    metrics: dict[str, Any] = {
        f"{tag}.offered": rate,
        f"{tag}.achieved": round(stats["in_window"] / window, 1),
        f"{tag}.lost": sent["sent"] - sent["full"] - stats["received"],
        f"{tag}.full": sent["full"],
        f"{tag}.send_errors": sent["errors"],
        f"{tag}.late_ticks": sent["late_ticks"],
    }
    metrics.update(_copy(percentiles(stats["latencies"]), tag, LATENCY))
    metrics.update({f"{tag}.{k}": v for k, v in meter.result.items()})
    return metrics


def wait_for_arrivals(receivers: list[Process], expected: int, timeout: float) -> None:
    """Return once the layer workers ``receivers`` have received ``expected`` messages in
    all, or after ``timeout`` seconds (what is still missing then counts as lost)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(r.request({"cmd": "count"})["received"] for r in receivers) >= expected:
            return
        time.sleep(0.05)


def _one_by_one(
    ctx: Context, receiver: Process, sender: Process, channels: list[str], tag: str
) -> dict[str, Any]:
    """A single sender awaiting each ``send``: messages per second sent and delivered."""
    profile = ctx.profile
    # What an earlier part left queued must not count here: wait until it stops arriving.
    last, deadline = -1, time.monotonic() + 10
    while time.monotonic() < deadline:
        count = receiver.request({"cmd": "count"})["received"]
        if count == last:
            break
        last = count
        time.sleep(0.3)
    receiver.request({"cmd": "stats"})  # and forget it
    sent = sender.request(
        {"cmd": "p2p_one_by_one", "channels": channels, "duration": profile.layer_duration},
        timeout=profile.layer_duration * 10 + 60,
    )
    wait_for_arrivals([receiver], sent["sent"] - sent["full"], 5)
    stats = receiver.request({"cmd": "stats", "since": sent["start"], "until": sent["end"]})
    window = max(1e-9, sent["end"] - sent["start"])
    return {
        f"{tag}.send_rps": round(sent["sent"] / window, 1),
        f"{tag}.rps": round(stats["in_window"] / window, 1),
        f"{tag}.lost": sent["sent"] - sent["full"] - stats["received"],
        **_copy(percentiles(stats["latencies"]), tag, LATENCY),
    }


def _group(
    ctx: Context, size: int, receivers: list[Process], sender: Process, cpu: dict[str, list[int]]
) -> dict[str, Any]:
    profile = ctx.profile
    group = f"g{size}"
    shares = list(zip(receivers, (size // 2, size - size // 2), strict=True))
    for receiver, share in shares:
        receiver.request({"cmd": "group", "group": group, "count": share}, timeout=300)
    send_times = []
    with _CpuMeter(cpu) as meter:
        for key in range(profile.group_sends):
            reply = sender.request({"cmd": "group_send", "group": group, "key": key}, 120)
            send_times.append(reply["send_s"])
            for receiver, share in shares:
                receiver.request(
                    {"cmd": "wait", "key": key, "expected": share, "timeout": 20}, timeout=60
                )
    latencies: list[float] = []
    received = 0
    for receiver, _ in shares:
        stats = receiver.request({"cmd": "stats"}, timeout=60)
        latencies += stats["latencies"]
        received += stats["received"]
    tag = f"group{size}"
    metrics = {
        f"{tag}.send_ms": round(1000 * statistics.median(send_times), 3),
        f"{tag}.lost": size * profile.group_sends - received,
    }
    metrics.update(_copy(percentiles(latencies), tag, LATENCY))
    metrics.update({f"{tag}.{k}": v for k, v in meter.result.items()})
    return metrics


def delete_keys(url: str, prefix: str, cluster: bool = False) -> int:
    """Remove the keys starting with ``prefix`` (never FLUSHDB: the database may be shared);
    how many there were. ``cluster``: scan every master of the Redis Cluster at ``url``."""
    import redis

    kind = redis.RedisCluster if cluster else redis.Redis
    client = kind.from_url(url, socket_timeout=10)
    try:
        batch = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(batch), 500):
            client.unlink(*batch[start : start + 500])
        return len(batch)
    finally:
        client.close()


# Redis itself, beside the layer rows -------------------------------------------------------

# redis-benchmark's LPUSH: 50 clients one command at a time, 1 client, 50 clients 16 deep.
REDIS_BENCHMARK_VARIANTS = (("c50", 50, 1), ("c1", 1, 1), ("p16", 50, 16))
REDIS_BENCHMARK_KEY = "mylist"  # the key redis-benchmark's LPUSH writes (no prefix option)


def redis_benchmark(ctx: Context) -> dict[str, Any]:
    """Redis's own LPUSH rate and latency on the layer's Redis (``redis-benchmark``, Debian's,
    pinned to the load core): what one Redis gives at most to a layer over it."""
    from urllib.parse import urlsplit

    import redis

    tool = shutil.which("redis-benchmark")
    if tool is None:
        raise RuntimeError("redis-benchmark not found (it comes with redis-server / redis-tools)")
    url = urlsplit(ctx.redis_url)
    database = int(url.path.strip("/") or 0)
    client = redis.Redis.from_url(ctx.redis_url, socket_timeout=10)
    metrics: dict[str, Any] = {}
    try:
        if client.exists(REDIS_BENCHMARK_KEY):
            raise RuntimeError(
                f"database {database} already has a key {REDIS_BENCHMARK_KEY!r}: "
                "not running redis-benchmark there"
            )
        for tag, clients, pipeline in REDIS_BENCHMARK_VARIANTS:
            requests = ctx.profile.redis_requests // (10 if clients == 1 else 1)
            argv = [tool, "-h", url.hostname or HOST, "-p", str(url.port or 6379)]
            argv += ["--dbnum", str(database), "-t", "lpush", "-n", str(requests)]
            argv += ["-c", str(clients), "-P", str(pipeline), "--csv"]
            proc = ctx.procs.start(f"redis-benchmark-{tag}", argv, core=LOAD_CORE)
            if proc.finish(120) != 0:
                raise RuntimeError(f"redis-benchmark failed:\n{proc.tail()}")
            metrics.update(_redis_benchmark_csv(proc.output, f"redis.{tag}"))
            client.delete(REDIS_BENCHMARK_KEY)
    finally:
        client.delete(REDIS_BENCHMARK_KEY)
        client.close()
    return metrics


def _redis_benchmark_csv(output: str, prefix: str) -> dict[str, float]:
    """The LPUSH line of ``redis-benchmark --csv``: requests/s, p50 and p99 in ms."""
    for line in output.splitlines():
        cells = [cell.strip('"') for cell in line.split(",")]
        if cells and cells[0] == "LPUSH":
            header = ["test", "rps", "avg_ms", "min_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms"]
            found = dict(zip(header, cells, strict=False))
            return {f"{prefix}.{key}": float(found[key]) for key in ("rps", "p50_ms", "p99_ms")}
    raise RuntimeError(f"no LPUSH line in redis-benchmark's output:\n{output[-500:]}")


# 4. Idle memory --------------------------------------------------------------------------


def memory(ctx: Context, impl: Impl) -> dict[str, Any]:
    servers = start_servers(ctx, impl)
    try:
        result = loadgen(
            ctx,
            {
                "mode": "idle_memory",
                "protocol": impl.protocol,
                "path": "/ws/broadcast/",
                "connections": ctx.profile.idle_connections,
                "settle": ctx.profile.settle,
            },
            servers,
        )
    finally:
        stop(ctx, [proc for proc, _ in servers])
    return {
        "idle.kib_per_conn": result["kib_per_conn"],
        "idle.rss_before_kib": result["rss_before_kib"],
    }


# 8. Scale: many idle connections on one process ------------------------------------------


def scale(ctx: Context, impl: Impl) -> dict[str, Any]:
    """``scale_connections`` WebSockets opened at once on one server process (within 10 s,
    errors counted), RSS per idle connection, then a broadcast to all of them."""
    profile = ctx.profile
    servers = start_servers(ctx, impl)
    try:
        result = loadgen(
            ctx,
            {
                "mode": "scale",
                "protocol": impl.protocol,
                "path": "/ws/broadcast/",
                "connections": profile.scale_connections,
                "messages": profile.scale_messages,
                "storm_s": 10.0,
                "timeout": 15,  # per broadcast: then its missing deliveries count as lost
                "settle": profile.settle,
                "deadline": 300,
            },
            servers,
        )
    finally:
        stop(ctx, [proc for proc, _ in servers])
    return _scale_metrics(result, "scale")


def scale2(ctx: Context, impl: Impl) -> dict[str, Any]:
    """Twice ``scale_connections`` WebSockets over two server processes behind nginx (as
    deployed: ``least_conn``), the Redis layer between them: the storm (twice the time),
    RSS per idle connection over both processes, then a broadcast to all of them."""
    profile = ctx.profile
    servers = start_servers(ctx, impl, count=2, layer="redis")
    started = [proc for proc, _ in servers]
    try:
        proxy, port = nginx_proxy.start(ctx.procs, [port for _, port in servers])
        started.append(proxy)
        result = loadgen(
            ctx,
            {
                "mode": "scale",
                "protocol": impl.protocol,
                "path": "/ws/broadcast/",
                "connections": 2 * profile.scale_connections,
                "messages": profile.scale_messages,
                "storm_s": 20.0,
                "timeout": 15,
                "settle": profile.settle,
                "deadline": 400,
                "shards": 2,
            },
            servers,
            ports=[port],
            module="bench.scale_fleet",
        )
    finally:
        stop(ctx, started)
    return _scale_metrics(result, "scale2")


def _scale_metrics(result: dict[str, Any], tag: str) -> dict[str, Any]:
    metrics = _copy(result, tag, ("connected", "storm_errors", "storm_s", "kib_per_conn"))
    latencies = ("p50_ms", "p99_ms", "max_ms", "lost", "srv_ms_per_broadcast", "lg_cpu_pct")
    metrics.update(_copy(result, tag, latencies))
    if result.get("storm_error_sample"):
        metrics[f"{tag}.storm_error_sample"] = result["storm_error_sample"]
    return metrics


# 5. Plain HTTP ---------------------------------------------------------------------------


def http(ctx: Context, impl: Impl) -> dict[str, Any]:
    if impl.name == "bare":  # the reference here is Django's own ASGI handler
        impl = ctx.impls["django"]
    servers = start_servers(ctx, impl)
    try:
        result = loadgen(
            ctx,
            {
                "mode": "http",
                "path": "/http/",
                "connections": ctx.profile.http_connections,
                "warmup": ctx.profile.warmup,
                "duration": ctx.profile.duration,
            },
            servers,
        )
    finally:
        stop(ctx, [proc for proc, _ in servers])
    if set(result["statuses"]) - {"200"}:
        raise RuntimeError(f"unexpected HTTP statuses {result['statuses']}")
    return _copy(result, "http", ("rps", "p50_ms", "p99_ms", *CPU))


# 6. Sync-consumer isolation --------------------------------------------------------------


def isolation(ctx: Context, impl: Impl) -> dict[str, Any]:
    servers = start_servers(ctx, impl)
    try:
        result = loadgen(
            ctx,
            {
                "mode": "echo",
                "path": "/ws/sync/",
                "message": "x" * 32,
                "connections": max(1, ctx.profile.echo_connections - 1),
                "blocker_path": "/ws/sync/",
                "blocker_message": "sleep",
                "warmup": ctx.profile.warmup,
                "duration": ctx.profile.isolation_duration,
            },
            servers,
        )
    finally:
        stop(ctx, [proc for proc, _ in servers])
    metrics = _copy(result, "others", ("rps", *LATENCY, *CPU))
    metrics["others.blocked_trips"] = result.get("blocker_round_trips")
    return metrics


from bench.recovery import recovery  # noqa: E402  (it uses this module's helpers)

# Scenarios that start no ASGI server: run once a round whatever ``--server`` says.
SERVERLESS = frozenset({"layer"})

SCENARIOS: dict[str, Callable[[Context, Impl], dict[str, Any]]] = {
    "layer": layer,
    "echo": echo,
    "broadcast": broadcast,
    "isolation": isolation,
    "http": http,
    "memory": memory,
    "recovery": recovery,
    "scale": scale,
    "scale2": scale2,
}
