"""Medians over rounds, ratios, targets, and the Markdown table."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

IMPLS = ("ours", "channels", "socketio", "bare")
PEERS = ("channels", "socketio")  # the columns ours is divided by, besides bare
# Variants a run may add (``--impls``): shown after these, with ours divided by them too.
EXTRA_IMPLS = ("bare-adapted", "ours-nometrics", "floor")
TITLES = {
    "ours": "ours",
    "channels": "Channels",
    "socketio": "Socket.IO",
    "bare": "bare",
    "bare-adapted": "bare adapted",
    "ours-nometrics": "ours, no metrics",
    "floor": "API floor",
}
LG_SATURATED = 90.0  # % of a core: above this the load generator may be the bottleneck
# Where the load generator is not ours' code (the layer's sender is), so a saturated one
# leaves a throughput target unjudged.
LOAD_BOUND_SCENARIOS = ("echo", "http")


@dataclass(frozen=True)
class Target:
    """``kind``: ``bare``/``channels`` (ours / that column), ``abs`` (ours alone), or
    ``self:<key>`` (ours / ours' own figure for another metric)."""

    kind: str
    op: str  # ">=", "<=", "<", "=="
    value: float

    def describe(self) -> str:
        if self.kind == "abs":
            return f"{self.op} {self.value:g}"
        if self.kind.startswith("self:"):
            return f"{self.op} {self.value:g}x ours {self.kind[5:]}"
        return f"{self.op} {self.value:g}x {self.kind}"


@dataclass(frozen=True)
class Row:
    scenario: str
    key: str
    label: str
    unit: str
    target: Target | None = None
    cpu: str | None = None  # key prefix of srv_cpu/lg_cpu to show as a CPU row after this one


def _group_rows(size: int) -> list[Row]:
    tag, label = f"group{size}", f"group of {size:,}"
    big = size == 10000
    send = Target("self:group10.send_ms", "<=", 2.0) if big else None
    p99 = Target("bare", "<=", 1.5) if big else None  # issue 20: across processes, 10,000
    return [
        Row("layer", f"{tag}.send_ms", f"{label}: group_send call", "ms", send),
        Row("layer", f"{tag}.p50_ms", f"{label}: fan-out latency p50", "ms"),
        Row("layer", f"{tag}.p99_ms", f"{label}: fan-out latency p99", "ms", p99),
        Row("layer", f"{tag}.max_ms", f"{label}: fan-out latency max", "ms"),
        Row("layer", f"{tag}.lost", f"{label}: lost deliveries", "", Target("abs", "==", 0), tag),
    ]


def _broadcast_rows(tag: str, size: int, where: str) -> list[Row]:
    p99 = Target("bare", "<=", 1.2) if size == 1000 else None  # issue 20, both layers
    lost = Target("abs", "==", 0)
    label = f"{size:,} clients, {where}"
    return [
        Row("broadcast", f"{tag}{size}.p50_ms", f"{label}: p50", "ms"),
        Row("broadcast", f"{tag}{size}.p99_ms", f"{label}: p99", "ms", p99),
        Row("broadcast", f"{tag}{size}.max_ms", f"{label}: max", "ms"),
        Row("broadcast", f"{tag}{size}.lost", f"{label}: lost", "", lost, f"{tag}{size}"),
    ]


def rows(broadcast_sizes: tuple[int, ...], group_sizes: tuple[int, ...]) -> list[Row]:
    """Every row of the tables; the targets are issue 20's goals, so "met" means met there."""
    out = [
        Row("layer", "p2p_rate.achieved", "point-to-point, 2,000 msg/s offered: achieved", "msg/s"),
        Row("layer", "p2p_rate.p50_ms", "point-to-point, 2,000 msg/s offered: p50", "ms"),
        Row(
            "layer",
            "p2p_rate.p99_ms",
            "point-to-point, 2,000 msg/s offered: p99",
            "ms",
            Target("abs", "<", 5),
        ),
        Row(
            "layer",
            "p2p_rate.lost",
            "point-to-point, 2,000 msg/s offered: lost",
            "",
            None,
            "p2p_rate",
        ),
        Row(
            "layer",
            "p2p_sat.rps",
            "point-to-point at saturation: received",
            "msg/s",
            Target("abs", ">=", 100_000),
        ),
        Row("layer", "p2p_sat.p50_ms", "point-to-point at saturation: p50", "ms"),
        Row("layer", "p2p_sat.p99_ms", "point-to-point at saturation: p99", "ms", None, "p2p_sat"),
        Row(
            "layer",
            "p2p_rate_high.achieved",
            "point-to-point, 10,000 msg/s offered: achieved",
            "msg/s",
        ),
        Row(
            "layer",
            "p2p_rate_high.p99_ms",
            "point-to-point, 10,000 msg/s offered: p99",
            "ms",
            Target("abs", "<", 5),
            "p2p_rate_high",
        ),
        Row(
            "layer",
            "p2p_serial.rps",
            "one sender awaiting each send, to another process",
            "msg/s",
            Target("abs", ">=", 8500),
        ),
        Row(
            "layer",
            "p2p_local_serial.rps",
            "one sender awaiting each send, to its own process",
            "msg/s",
            Target("abs", ">=", 8500),
        ),
    ]
    for size in group_sizes:
        out += _group_rows(size)
    for variant, label, target in (
        ("async", "async consumer", Target("bare", ">=", 0.95)),
        ("sync", "sync consumer", Target("bare", ">=", 0.8)),
        ("json", "async JSON consumer", Target("bare", ">=", 0.9)),
    ):
        out += [
            Row("echo", f"{variant}.rps", f"{label}: round trips", "/s", target),
            Row("echo", f"{variant}.srv_us", f"{label}: server CPU per round trip", "us"),
            Row("echo", f"{variant}.p50_ms", f"{label}: p50", "ms"),
            Row("echo", f"{variant}.p99_ms", f"{label}: p99", "ms", None, variant),
        ]
    for size in broadcast_sizes:
        out += _broadcast_rows("mem", size, "1 server, in-memory layer")
    for size in broadcast_sizes:
        out += _broadcast_rows("redis", size, "2 servers, Redis layer")
    out += [
        Row("isolation", "others.rps", "49 echoing while 1 blocks 1 s: round trips", "/s"),
        Row("isolation", "others.p50_ms", "49 echoing while 1 blocks 1 s: p50", "ms"),
        Row(
            "isolation",
            "others.p99_ms",
            "49 echoing while 1 blocks 1 s: p99",
            "ms",
            Target("abs", "<", 50),
            "others",
        ),
        Row(
            "http",
            "http.rps",
            "GET a Django view (bare = Django alone)",
            "req/s",
            Target("bare", ">=", 0.97),
        ),
        Row("http", "http.p50_ms", "GET a Django view: p50", "ms"),
        Row("http", "http.p99_ms", "GET a Django view: p99", "ms", None, "http"),
        Row(
            "memory",
            "idle.kib_per_conn",
            "RSS per idle connection in a group",
            "KiB",
            Target("bare", "<=", 1.1),
        ),
        *_scale_rows("scale", storm_s=10),
        *_scale_rows("scale2", storm_s=20),
    ]
    return out


def _scale_rows(scenario: str, storm_s: int) -> list[Row]:
    """The issue's scale goals: memory per idle connection <= 1.1x bare, a broadcast to all
    with p99 <= 1.3x bare, a storm with no error."""
    t = scenario
    return [
        Row(t, f"{t}.connected", "connections open after the storm", ""),
        Row(
            t,
            f"{t}.storm_errors",
            f"storm: connections failed or not open in {storm_s} s",
            "",
            Target("abs", "==", 0),
        ),
        Row(t, f"{t}.storm_s", "storm: time until the last one was open", "s"),
        Row(t, f"{t}.kib_per_conn", "RSS per idle connection", "KiB", Target("bare", "<=", 1.1)),
        Row(t, f"{t}.p50_ms", "broadcast to all: p50", "ms"),
        Row(t, f"{t}.p99_ms", "broadcast to all: p99", "ms", Target("bare", "<=", 1.3)),
        Row(t, f"{t}.max_ms", "broadcast to all: max", "ms"),
        Row(t, f"{t}.lost", "broadcast to all: lost", "", Target("abs", "==", 0)),
    ]


SCENARIO_TITLES = {
    "layer": "3. Channel layer alone, 2 receiving processes + 1 sender over Redis",
    "echo": "1. WebSocket echo, 50 connections, closed loop",
    "broadcast": "2. Broadcast, one frame in, group_send, every client gets it",
    "isolation": "6. Sync-consumer isolation",
    "http": "5. Plain HTTP through ProtocolTypeRouter",
    "memory": "4. Idle memory, 1,000 connections",
    "scale": "8. Scale: N WebSockets opened at once on one server process, then a broadcast",
    "scale2": "9. Scale: 2N WebSockets over two server processes behind nginx (Redis layer), "
    "then a broadcast",
}


def medians(runs: list[dict[str, Any]], server: str | None = None) -> dict[str, dict[str, float]]:
    """``{impl: {metric: median over rounds}}`` (errors and missing values ignored), of the
    runs on ``server`` and those that had none (the layer); all runs when it is None."""
    values: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        if server is not None and run.get("server") not in (server, None):
            continue
        for key, value in (run.get("metrics") or {}).items():
            if isinstance(value, int | float) and not math.isnan(value):
                values.setdefault(run["impl"], {}).setdefault(key, []).append(value)
    return {
        impl: {key: statistics.median(found) for key, found in keys.items()}
        for impl, keys in values.items()
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def _compare(value: float, op: str, bound: float) -> bool:
    return {
        ">=": value >= bound,
        "<=": value <= bound,
        "<": value < bound,
        "==": value == bound,
    }[op]


def evaluate(row: Row, med: dict[str, dict[str, float]]) -> dict[str, Any]:
    ours = med.get("ours", {}).get(row.key)
    result: dict[str, Any] = {
        "key": f"{row.scenario}.{row.key}",
        "label": row.label,
        "unit": row.unit,
        **{impl: med.get(impl, {}).get(row.key) for impl in (*IMPLS, *EXTRA_IMPLS)},
        **{
            f"ours_vs_{other}": _ratio(ours, med.get(other, {}).get(row.key))
            for other in (*PEERS, "bare", *EXTRA_IMPLS)
        },
        "target": row.target.describe() if row.target else None,
        "met": None,
    }
    if row.target is not None and ours is not None:
        target = row.target
        if target.kind == "abs":
            result["met"] = _compare(ours, target.op, target.value)
        elif target.kind.startswith("self:"):
            ratio = _ratio(ours, med.get("ours", {}).get(target.kind[5:]))
            result["target_ratio"] = ratio
            result["met"] = None if ratio is None else _compare(ratio, target.op, target.value)
        else:
            ratio = result[f"ours_vs_{target.kind}"]
            result["met"] = None if ratio is None else _compare(ratio, target.op, target.value)
            ours_bound, other_bound = (
                _load_bound(row, med, impl) for impl in ("ours", target.kind)
            )
            # A rate its load generator held back is a floor: ours' floor can only make a
            # ">=" ratio look worse, the other's only better. What is left in doubt is n/a.
            if (ours_bound and result["met"] is False) or (other_bound and result["met"]):
                result["met"] = None
                result["lg_bound"] = True
    return result


def _load_bound(row: Row, med: dict[str, dict[str, float]], impl: str) -> bool:
    """Whether a closed-loop throughput row of ``impl`` was held back by its load
    generator: a server that is not the bottleneck idles between frames, and its own cost
    per frame barely shows in the rate (bench/results/issue20/part8-why.md)."""
    if row.scenario not in LOAD_BOUND_SCENARIOS or not row.unit.endswith("/s"):
        return False
    prefix = row.key.split(".", 1)[0]  # its CPU figures': "async.rps" -> "async.lg_cpu"
    load = med.get(impl, {}).get(f"{prefix}.lg_cpu")
    return load is not None and load >= LG_SATURATED


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _cpu_cell(med: dict[str, dict[str, float]], impl: str, prefix: str) -> tuple[str, bool]:
    found = med.get(impl, {})
    server, load = found.get(f"{prefix}.srv_cpu"), found.get(f"{prefix}.lg_cpu")
    if server is None and load is None:
        return "-", False
    redis = found.get(f"{prefix}.redis_cpu")
    text = f"{_fmt(server)} / {_fmt(load)}" + (f" / {_fmt(redis)}" if redis is not None else "")
    saturated = load is not None and load >= LG_SATURATED
    return text + (" (LG saturated)" if saturated else ""), saturated


def markdown(
    all_rows: list[Row],
    med: dict[str, dict[str, float]],
    ran: set[str],
    errors: list[str],
    header: list[str],
    shown: set[str] | None = None,
    impls: tuple[str, ...] = IMPLS,
) -> tuple[str, list[dict[str, Any]]]:
    """The table of each scenario in ``shown`` (all when None) with a column per one of
    ``impls``; scenarios not in ``ran`` are marked "not yet"."""
    lines = [*header, ""]
    evaluated: list[dict[str, Any]] = []
    others = [impl for impl in impls if impl != "ours"]
    columns = (
        "| metric | unit | "
        + " | ".join(TITLES[impl] for impl in impls)
        + " | "
        + " | ".join(f"ours/{TITLES[other]}" for other in others)
        + " | target | met |"
    )
    align = "|---|---|" + "--:|" * (len(impls) + len(others)) + "---|---|"
    current = None
    for row in all_rows:
        if shown is not None and row.scenario not in shown:
            continue
        if row.scenario != current:
            current = row.scenario
            lines += ["", f"### {SCENARIO_TITLES[current]}", ""]
            if current not in ran:
                lines.append("not yet (not run in this invocation)")
                continue
            lines += [columns, align]
        if current not in ran:
            continue
        result = evaluate(row, med)
        evaluated.append(result)
        met = {True: "met", False: "**missed**", None: "-" if row.target is None else "n/a"}[
            result["met"]
        ] + (" (LG-bound)" if result.get("lg_bound") else "")
        values = " | ".join(_fmt(result[impl]) for impl in impls)
        ratios = " | ".join(_fmt_ratio(result[f"ours_vs_{other}"]) for other in others)
        lines.append(
            f"| {row.label} | {row.unit} | {values} | {ratios} | {result['target'] or ''} | {met} |"
        )
        if row.cpu:
            cells = [_cpu_cell(med, impl, row.cpu) for impl in impls]
            note = "LG saturated" if any(saturated for _, saturated in cells) else ""
            what = (
                "CPU % receivers / sender / redis"
                if row.scenario == "layer"
                else "CPU % server / load generator"
            )
            blanks = " |" * len(others)
            lines.append(
                f"| *{what}* | % core | {' | '.join(cell for cell, _ in cells)} |{blanks} "
                f"| {note} |"
            )
    if errors:
        lines += ["", "### Errors", "", *[f"- {error}" for error in errors]]
    return "\n".join(lines) + "\n", evaluated


REDIS_BENCHMARK_LABELS = (
    ("c50", "50 clients, one command at a time"),
    ("c1", "1 client, one command at a time"),
    ("p16", "50 clients, pipelined 16 deep"),
)


def redis_benchmark_table(med: dict[str, dict[str, float]]) -> list[str]:
    """redis-benchmark's LPUSH figures (the ``redis`` runs of the layer scenario), beside
    ours' point-to-point rate at saturation."""
    found = med.get("redis", {})
    if not found:
        return []
    lines = [
        "",
        "Redis itself, the same Redis in the same rounds (`redis-benchmark -t lpush`, on the "
        "load core), beside the layer's point-to-point rate at saturation (one LPUSH-like "
        "send per message):",
        "",
        "| redis-benchmark LPUSH | req/s | p50 ms | p99 ms |",
        "|---|--:|--:|--:|",
    ]
    for tag, label in REDIS_BENCHMARK_LABELS:
        cells = [_fmt(found.get(f"redis.{tag}.{key}")) for key in ("rps", "p50_ms", "p99_ms")]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    shares = []
    for impl in ("ours", "channels", "bare"):
        share = _ratio(med.get(impl, {}).get("p2p_sat.rps"), found.get("redis.c50.rps"))
        if share is not None:
            shares.append(f"{TITLES[impl]} {_fmt_ratio(share)}")
    if shares:
        lines += [
            "",
            "Point-to-point at saturation as a share of redis-benchmark's 50 unpipelined "
            "clients: " + ", ".join(shares) + ".",
        ]
    return lines


# The ratio table: (label, metric key, the column ours is divided by).
RATIOS = (
    ("async echo round trips, ours/bare", "echo.async.rps", "bare"),
    ("JSON echo round trips, ours/bare", "echo.json.rps", "bare"),
    ("sync echo round trips, ours/bare", "echo.sync.rps", "bare"),
    ("broadcast {size}, in-memory, p99 ours/bare", "broadcast.mem{size}.p99_ms", "bare"),
    ("broadcast {size}, Redis, p99 ours/bare", "broadcast.redis{size}.p99_ms", "bare"),
    ("HTTP req/s, ours/Django alone", "http.http.rps", "bare"),
    ("idle memory per connection, ours/bare", "memory.idle.kib_per_conn", "bare"),
    ("scale: memory per idle connection, ours/bare", "scale.scale.kib_per_conn", "bare"),
    ("scale: broadcast to all, p99 ours/bare", "scale.scale.p99_ms", "bare"),
    (
        "scale, 2 processes + nginx: memory per idle connection, ours/bare",
        "scale2.scale2.kib_per_conn",
        "bare",
    ),
    ("scale, 2 processes + nginx: broadcast to all, p99 ours/bare", "scale2.scale2.p99_ms", "bare"),
    ("async echo round trips, ours/Channels", "echo.async.rps", "channels"),
    ("JSON echo round trips, ours/Channels", "echo.json.rps", "channels"),
    ("sync echo round trips, ours/Channels", "echo.sync.rps", "channels"),
    ("broadcast {size}, in-memory, p99 ours/Channels", "broadcast.mem{size}.p99_ms", "channels"),
    ("broadcast {size}, Redis, p99 ours/Channels", "broadcast.redis{size}.p99_ms", "channels"),
    ("HTTP req/s, ours/Channels", "http.http.rps", "channels"),
    ("idle memory per connection, ours/Channels", "memory.idle.kib_per_conn", "channels"),
    ("scale: memory per idle connection, ours/Channels", "scale.scale.kib_per_conn", "channels"),
    ("scale: broadcast to all, p99 ours/Channels", "scale.scale.p99_ms", "channels"),
    (
        "scale, 2 processes + nginx: memory per idle connection, ours/Channels",
        "scale2.scale2.kib_per_conn",
        "channels",
    ),
    (
        "scale, 2 processes + nginx: broadcast to all, p99 ours/Channels",
        "scale2.scale2.p99_ms",
        "channels",
    ),
    ("async echo round trips, ours/Socket.IO", "echo.async.rps", "socketio"),
    ("JSON echo round trips, ours/Socket.IO", "echo.json.rps", "socketio"),
    ("broadcast {size}, in-memory, p99 ours/Socket.IO", "broadcast.mem{size}.p99_ms", "socketio"),
    ("broadcast {size}, Redis, p99 ours/Socket.IO", "broadcast.redis{size}.p99_ms", "socketio"),
    ("idle memory per connection, ours/Socket.IO", "memory.idle.kib_per_conn", "socketio"),
    ("scale: memory per idle connection, ours/Socket.IO", "scale.scale.kib_per_conn", "socketio"),
    ("scale: broadcast to all, p99 ours/Socket.IO", "scale.scale.p99_ms", "socketio"),
    (
        "scale, 2 processes + nginx: memory per idle connection, ours/Socket.IO",
        "scale2.scale2.kib_per_conn",
        "socketio",
    ),
    (
        "scale, 2 processes + nginx: broadcast to all, p99 ours/Socket.IO",
        "scale2.scale2.p99_ms",
        "socketio",
    ),
    ("async echo round trips, ours/API floor", "echo.async.rps", "floor"),
    ("JSON echo round trips, ours/API floor", "echo.json.rps", "floor"),
    ("sync echo round trips, ours/API floor", "echo.sync.rps", "floor"),
    ("broadcast {size}, in-memory, p99 ours/API floor", "broadcast.mem{size}.p99_ms", "floor"),
)
# What the API itself costs (``--impls floor``): the floor divided by bare.
FLOOR_RATIOS = (
    ("async echo round trips, API floor/bare", "echo.async.rps"),
    ("JSON echo round trips, API floor/bare", "echo.json.rps"),
    ("sync echo round trips, API floor/bare", "echo.sync.rps"),
    ("broadcast {size}, in-memory, p99 API floor/bare", "broadcast.mem{size}.p99_ms"),
)


def ratio_table(evaluated: dict[str, list[dict[str, Any]]], broadcast_size: int) -> list[str]:
    """One row per ratio, one column per server (``evaluated``: server -> its rows); rows
    with no figure on any server are left out."""
    servers = list(evaluated)
    by_key = {server: {row["key"]: row for row in rows} for server, rows in evaluated.items()}
    lines = [
        "| ratio (throughput: higher is better for ours; p99, memory: lower) | "
        + " | ".join(servers)
        + " |",
        "|---|" + "--:|" * len(servers),
    ]
    for label, key, other in RATIOS:
        key = key.format(size=broadcast_size)
        found = [by_key[server].get(key, {}) for server in servers]
        cells = [row.get(f"ours_vs_{other}") for row in found]
        if any(cell is not None for cell in cells):
            label = label.format(size=f"{broadcast_size:,}")
            bound = [other == "bare" and row.get("lg_bound") for row in found]
            shown = (
                _fmt_ratio(cell) + (" (LG-bound)" if lg else "")
                for cell, lg in zip(cells, bound, strict=True)
            )
            lines.append(f"| {label} | " + " | ".join(shown) + " |")
    for label, key in FLOOR_RATIOS:
        key = key.format(size=broadcast_size)
        found = [by_key[server].get(key, {}) for server in servers]
        cells = [
            row["floor"] / row["bare"] if row.get("floor") and row.get("bare") else None
            for row in found
        ]
        if any(cell is not None for cell in cells):
            label = label.format(size=f"{broadcast_size:,}")
            lines.append(f"| {label} | " + " | ".join(map(_fmt_ratio, cells)) + " |")
    return lines
