"""Soak: hundreds of chat clients on two Daphne processes over Redis, for minutes.

    .venv/bin/python -m bench.soak --minutes 10 [--clients 500] [--rate 20] [--json PATH]

Sets everything up itself: a PostgreSQL database of its own (created, migrated, dropped
afterwards), users with sessions and a few public rooms, two Daphne processes of the
reference project and the chat moderation worker (``manage.py runworker chat-moderation``)
sharing the machine's Redis under a key prefix of their own (deleted afterwards). Servers
and the worker are pinned to core 0 and the client process to core 1 when ``taskset``
exists, as the benchmark harness does.

The client process opens ``--clients`` WebSockets split over the two Daphnes (room ``r`` has
members on both), then posts ``--rate`` messages per second in total, round-robin over the
clients (far under each connection's rate limit), each text carrying a unique sequence
number. Every client records each ``message`` and ``moderated`` event it receives. After
the posting time and a drain period, every (post, client of its room) pair without a
delivery is a lost message; duplicates, errors and close codes are counted too.

Memory: VmRSS of both Daphnes and the worker at the start (clients connected, nothing
posted), at the end of the warm-up (the first 20 % of the run, at least 20 s when the run
allows) and at the end of the posting time. The target is growth under 5 % from the end of
the warm-up to the end, per process, and no loss. The report is printed and written as JSON
(``--json``, default ``bench/results/soak.json``) and Markdown (the same path, ``.md``).

Every process started is stopped, the database dropped and the Redis keys deleted, also on
failure, Ctrl-C or SIGTERM. The exit status is 0 when every target is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import re
import secrets
import signal
import sys
import tempfile
import threading
import time
from array import array
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import loadgen
from bench.harness.procs import LOAD_CORE, SERVER_CORE, Processes, pinning_available
from bench.harness.scenarios import BENCH, ROOT, delete_keys
from testsupport.chat import manage_seed_chat
from testsupport.databases import POSTGRES_URL, create_database, drop_database
from testsupport.processes import Process, run_manage_py, wait_for_port
from testsupport.system import cpu_seconds, free_port, raise_open_files_limit, rss_kib

DEFAULT_REDIS = "redis://127.0.0.1:6379/10"
DEFAULT_JSON = BENCH / "results" / "soak.json"
RSS_GROWTH_TARGET = 5.0  # percent, from the end of the warm-up to the end, per process
SERVERS = ("daphne-1", "daphne-2")
WORKER = "worker"
PER_CONNECTION_LIMIT = 5.0  # CHAT_MESSAGES_PER_SECOND's default: stay well under it
START_TIMEOUT = 60.0  # Django imports on a busy core
SAMPLE_EVERY = 10.0  # seconds between RSS samples of the trend
LOG_PROBLEM = re.compile(r"\b(ERROR|CRITICAL)\b|Traceback \(most recent call last\)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="posting time (default 10)")
    parser.add_argument("--clients", type=int, default=500, help="WebSockets (default 500)")
    parser.add_argument(
        "--rate", type=float, default=20.0, help="messages per second in total (default 20)"
    )
    parser.add_argument("--rooms", type=int, default=10, help="rooms the clients share (10)")
    parser.add_argument("--users", type=int, default=50, help="accounts the clients share (50)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="result file (JSON)")
    parser.add_argument(
        "--warmup",
        type=float,
        help="seconds excluded from the RSS baseline (default: 20 %% of the run, >= 20 s "
        "when the run is 40 s or longer)",
    )
    parser.add_argument(
        "--drain", type=float, default=20.0, help="max seconds to wait for late deliveries"
    )
    parser.add_argument(
        "--presence-interval", type=float, default=5.0, help="CHAT_PRESENCE_INTERVAL (5 s)"
    )
    parser.add_argument("--connect-concurrency", type=int, default=50)
    parser.add_argument(
        "--worker-concurrency",
        type=int,
        default=1,
        help="runworker --concurrency (default 1, as deployed)",
    )
    parser.add_argument(
        "--postgres-url",
        default=POSTGRES_URL,
        help="an administrative connection; a database of the run's own is made there",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS),
        help=f"the channel layer's Redis; keys get a per-run prefix (default {DEFAULT_REDIS})",
    )
    parser.add_argument("--logs", type=Path, help="keep every process's output here")
    parser.add_argument(
        "--settings",
        default="project.settings",
        help="DJANGO_SETTINGS_MODULE of every process (default project.settings; for "
        "investigations, e.g. a module importing it and logging channels_layer at DEBUG)",
    )
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.clients < 1 or args.rate <= 0 or args.rooms < 1:
        parser.error("--minutes, --clients, --rate and --rooms must be positive")
    args.rooms = min(args.rooms, args.clients)
    args.users = max(1, args.users)
    duration = args.minutes * 60
    if args.warmup is None:
        args.warmup = max(0.2 * duration, min(20.0, duration / 2))
    if not 0 <= args.warmup < duration:
        parser.error("--warmup must be shorter than the run")
    per_connection = args.rate / args.clients
    if per_connection > PER_CONNECTION_LIMIT * 0.8:
        parser.error(
            f"{per_connection:.2f} messages/s per connection: keep --rate / --clients under "
            f"{PER_CONNECTION_LIMIT * 0.8:g} (the chat's per-connection limit is "
            f"{PER_CONNECTION_LIMIT:g}/s)"
        )
    return args


# Set-up: database, users, rooms ------------------------------------------------------------


def set_up_site(env: dict[str, str], rooms: list[str], users: list[str]) -> dict[str, Any]:
    """Migrate, then make the rooms and the users with a session each (``seed_chat``)."""
    run_manage_py("migrate", "--noinput", env=env, timeout=180)
    return vars(manage_seed_chat(env, rooms, users))


def count_keys(url: str, prefix: str) -> int:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=10)
    try:
        return sum(1 for _ in client.scan_iter(match=f"{prefix}:*", count=1000))
    finally:
        client.close()


def log_problems(proc: Process) -> dict[str, Any]:
    """Tracebacks and ERROR lines in a process's output (the first few, for the report)."""
    text = proc.output
    lines = [line for line in text.splitlines() if LOG_PROBLEM.search(line)]
    return {
        "tracebacks": text.count("Traceback (most recent call last)"),
        "error_lines": sum(1 for line in lines if not line.startswith("Traceback")),
        "first": lines[:5],
    }


# The run --------------------------------------------------------------------------------


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that clean up


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """Set up, soak, clean up; returns the report (also written to ``args.json``)."""
    began = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - began:7.1f}s] {message}", flush=True)

    run_id = f"soak-{os.getpid()}-{secrets.token_hex(3)}"
    db_name = run_id.replace("-", "_")
    rooms = [f"soak-{n}" for n in range(args.rooms)]
    users = [f"soak-user-{n:03d}" for n in range(args.users)]
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", "-m", "bench.soak", *argv]),
        "config": {
            "minutes": args.minutes,
            "clients": args.clients,
            "rate": args.rate,
            "rooms": args.rooms,
            "users": args.users,
            "warmup_s": round(args.warmup, 1),
            "drain_max_s": args.drain,
            "presence_interval_s": args.presence_interval,
            "servers": list(SERVERS),
            "worker": "manage.py runworker chat-moderation --concurrency "
            f"{args.worker_concurrency}",
            "redis_url": args.redis_url,
            "pinned": pinning_available(),
            "django_debug": False,
            "settings": args.settings,
        },
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "run_id": run_id,
        "database": db_name,
    }
    temp = tempfile.TemporaryDirectory(prefix="soak-")
    log_dir = args.logs or Path(temp.name)
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = Processes(log_dir)
    db_created = False
    named: dict[str, Process] = {}
    try:
        log(f"database {db_name}, Redis prefix {run_id}")
        database_url = create_database(args.postgres_url, db_name)
        db_created = True
        env = {
            "DJANGO_SETTINGS_MODULE": args.settings,
            "DATABASE_URL": database_url,
            "REDIS_URL": args.redis_url,
            "REDIS_PREFIX": run_id,
            "DJANGO_DEBUG": "0",  # production-like: DEBUG keeps a log of every SQL query
            # Production settings refuse a missing key; plain HTTP on loopback.
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "DJANGO_HTTPS": "0",
            # Hundreds of clients from one address on a few accounts: the chat's per-user
            # and per-address limits are lifted (the clients pace themselves: --rate).
            "CHAT_MAX_SOCKETS_PER_USER": "0",
            "CHAT_MAX_SOCKETS_PER_ADDRESS": "0",
            "CHAT_MESSAGES_PER_SECOND": "1000000",
            "CHAT_MESSAGE_BURST": "1000000",
            "CHAT_PRESENCE_INTERVAL": str(args.presence_interval),
            "PYTHONUNBUFFERED": "1",
        }
        setup = set_up_site(env, rooms, users)
        log(f"migrated; {len(setup['rooms'])} rooms, {len(setup['users'])} users with sessions")
        ports = []
        for name in SERVERS:
            port = free_port()
            argv_daphne = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
            named[name] = procs.start(
                name,
                [*argv_daphne, "project.asgi:application"],
                core=SERVER_CORE,
                env={**env, "SERVER_NAME": name},
                cwd=ROOT,
            )
            ports.append(port)
        named[WORKER] = procs.start(
            WORKER,
            [
                *(sys.executable, "manage.py", "runworker", "chat-moderation"),
                *("--concurrency", str(args.worker_concurrency)),
            ],
            core=SERVER_CORE,
            env={**env, "SERVER_NAME": WORKER},
            cwd=ROOT,
        )
        for name, port in zip(SERVERS, ports, strict=True):
            wait_for_port(named[name], port, START_TIMEOUT)
        named[WORKER].wait_for("Worker listening on", START_TIMEOUT)
        log(f"Daphnes on ports {ports[0]} and {ports[1]}, worker ready")
        spec = {
            "ports": ports,
            "servers": list(SERVERS),
            "rooms": setup["rooms"],
            "users": setup["users"],
            "cookies": setup["cookies"],
            "clients": args.clients,
            "rate": args.rate,
            "duration": args.minutes * 60,
            "warmup": args.warmup,
            "drain": args.drain,
            "concurrency": args.connect_concurrency,
            "redis_url": args.redis_url,
            "moderation_key": f"{run_id}:channel:chat-moderation",
            "pids": {name: proc.pid for name, proc in named.items()},
            "deadline": args.minutes * 60 + args.drain + 600,
        }
        client_proc = procs.start(
            "clients",
            [sys.executable, "-m", "bench.soak", "clients"],
            core=LOAD_CORE,
            cwd=ROOT,
            pipe=True,
        )
        named["clients"] = client_proc
        assert client_proc.process.stdin is not None
        client_proc.process.stdin.write(json.dumps(spec) + "\n")
        client_proc.process.stdin.flush()
        while True:
            line = client_proc.read_json(timeout=args.minutes * 60 + args.drain + 300)
            if "result" in line:
                result = line["result"]
                break
            log(line["progress"])
        report["rss"] = result.pop("rss")
        report.update(result)
    except BaseException as error:
        report["failure"] = f"{type(error).__name__}: {error}"
        raise
    finally:
        report["started_pids"] = list(procs.started)
        try:
            procs.stop_all()
        finally:
            for name, proc in named.items():
                if name != "clients":
                    report.setdefault("log_problems", {})[name] = log_problems(proc)
            if db_created:
                try:
                    drop_database(args.postgres_url, db_name)
                except Exception as error:
                    log(f"could not drop database {db_name}: {error}")
            try:
                delete_keys(args.redis_url, f"{run_id}:")
            except Exception as error:
                log(f"could not delete the Redis keys under {run_id}: {error}")
            report["elapsed_s"] = round(time.monotonic() - began, 1)
            report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
            if "failure" in report:
                with contextlib.suppress(Exception):
                    write_results(args.json, finish(report))
            with contextlib.suppress(Exception):
                temp.cleanup()
    return finish(report)


def finish(report: dict[str, Any]) -> dict[str, Any]:
    """Growth per process, the checks and the verdict."""
    checks: list[dict[str, Any]] = []
    for name, rss in report.get("rss", {}).items():
        if name == "clients" or rss.get("warmup_kib") is None or rss.get("end_kib") is None:
            continue
        growth = 100 * (rss["end_kib"] - rss["warmup_kib"]) / rss["warmup_kib"]
        rss["growth_pct"] = round(growth, 2)
        checks.append(
            {
                "check": f"RSS growth after warm-up, {name}",
                "value": f"{growth:+.2f} %",
                "target": f"< {RSS_GROWTH_TARGET:g} %",
                "met": growth < RSS_GROWTH_TARGET,
            }
        )
    if "messages" in report:
        lost = report["messages"]["missing"]
        checks.append({"check": "message loss", "value": lost, "target": "0", "met": lost == 0})
        connected = report["connections"]["connected"]
        checks.append(
            {
                "check": "clients connected",
                "value": f"{connected}/{report['config']['clients']}",
                "target": "all",
                "met": connected == report["config"]["clients"],
            }
        )
    if "failure" in report:
        checks.append({"check": "run completed", "value": report["failure"], "met": False})
    report["checks"] = checks
    report["passed"] = bool(checks) and all(check["met"] for check in checks)
    return report


# Report ---------------------------------------------------------------------------------


def _mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f}"


def format_report(report: dict[str, Any]) -> str:
    cfg = report["config"]
    lines = [
        f"Soak {report['run_id']}: {cfg['clients']} clients in {cfg['rooms']} rooms over "
        f"2 Daphnes + moderation worker (Redis), {cfg['rate']:g} msg/s for "
        f"{cfg['minutes']:g} min, warm-up {cfg['warmup_s']:g} s"
        f"{'' if cfg['pinned'] else ' (unpinned)'}",
        f"command: {report['command']}",
        f"machine: {report['machine']['cores']} cores, load average (1/5/15 min) at start "
        f"{report['machine']['load_average_at_start']}, at end "
        f"{report['machine'].get('load_average_at_end')}",
        "",
    ]
    rss = report.get("rss", {})
    if rss:
        header = (
            f"{'process':<10} {'RSS start':>10} {'warm-up':>10} {'end':>10} {'after drain':>12}"
            f" {'growth':>8} {'CPU %':>6}  target"
        )
        lines += [header, "-" * len(header)]
        for name, row in rss.items():
            growth = row.get("growth_pct")
            verdict = "" if growth is None else ("ok" if growth < RSS_GROWTH_TARGET else "FAIL")
            cpu = row.get("cpu_pct")
            lines.append(
                f"{name:<10} {_mib(row.get('start_kib')):>10} {_mib(row.get('warmup_kib')):>10}"
                f" {_mib(row.get('end_kib')):>10} {_mib(row.get('drained_kib')):>12}"
                f" {'-' if growth is None else f'{growth:+.2f}%':>8}"
                f" {'-' if cpu is None else f'{cpu:.0f}':>6}  "
                + (f"< {RSS_GROWTH_TARGET:g}% {verdict}" if growth is not None else "")
            )
        lines.append("(RSS in MiB; growth from the end of the warm-up to the end)")
        lines.append("")
    messages = report.get("messages")
    if messages:
        connections = report["connections"]
        lat = messages["latency"]
        lines += [
            f"connections: {connections['connected']}/{cfg['clients']} connected"
            f" ({connections['connect_failures']} failed), unexpected closes "
            f"{connections['unexpected_closes']}, close codes {connections['close_codes']}",
            f"posted {messages['posted']} messages ({messages['achieved_rate']:g}/s);"
            f" deliveries expected {messages['expected']}, received {messages['received']},"
            f" missing {messages['missing']}, duplicates {messages['duplicates']},"
            f" misrouted {messages['misrouted']}",
            f"  missing after the receiver's connection closed"
            f" {messages['missing_after_receiver_closed']}, while connected"
            f" {messages['missing_while_connected']} (by server"
            f" {messages['missing_by_server']});"
            f" posts no one got {messages['posts_lost_entirely']};"
            f" rooms that got nothing on a server: {messages['dead_room_servers'] or 'none'}",
            f"moderation verdicts: expected {report['moderated']['expected']}, missing "
            f"{report['moderated']['missing']} (posts without any verdict "
            f"{report['moderated']['posts_without_verdict']}), duplicates "
            f"{report['moderated']['duplicates']},"
            f" not visible {report['moderated']['not_visible']}; post -> verdict p50"
            f" {report['moderated']['latency']['p50_ms']} ms, p99"
            f" {report['moderated']['latency']['p99_ms']} ms; worker backlog max"
            f" {report['moderated']['max_backlog']}",
            f"latency post -> delivery (1 post in 10): p50 {lat['p50_ms']} ms, p99 "
            f"{lat['p99_ms']} ms, max {lat['max_ms']} ms",
            f"error events {report['error_events']}, presence events "
            f"{report['presence_events']}, drain {messages['drain_s']} s",
        ]
    for name, problems in report.get("log_problems", {}).items():
        if problems["tracebacks"] or problems["error_lines"]:
            lines.append(
                f"{name} log: {problems['tracebacks']} tracebacks, {problems['error_lines']}"
                f" ERROR lines; first: {problems['first'][:2]}"
            )
    if report.get("failure"):
        lines.append(f"FAILED TO COMPLETE: {report['failure']}")
    lines.append("")
    for check in report.get("checks", []):
        mark = "ok  " if check["met"] else "FAIL"
        target = f" (target {check['target']})" if "target" in check else ""
        lines.append(f"[{mark}] {check['check']}: {check['value']}{target}")
    lines.append(f"overall: {'PASS' if report.get('passed') else 'FAIL'}")
    return "\n".join(lines)


def format_markdown(report: dict[str, Any]) -> str:
    cfg = report["config"]
    lines = [
        "# Soak",
        "",
        f"`{report['command']}` on {report['date']}: {cfg['clients']} clients in "
        f"{cfg['rooms']} rooms over two Daphnes and the moderation worker with Redis, "
        f"{cfg['rate']:g} messages/s for {cfg['minutes']:g} min, warm-up {cfg['warmup_s']:g} s"
        f" ({'pinned' if cfg['pinned'] else 'unpinned'}, {report['machine']['cores']} cores,"
        f" load average {report['machine']['load_average_at_start']} at the start).",
        "",
        "| process | RSS start (MiB) | end of warm-up | end | growth | target |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, row in report.get("rss", {}).items():
        growth = row.get("growth_pct")
        lines.append(
            f"| {name} | {_mib(row.get('start_kib'))} | {_mib(row.get('warmup_kib'))} | "
            f"{_mib(row.get('end_kib'))} | "
            + ("-" if growth is None else f"{growth:+.2f} %")
            + " | "
            + ("" if growth is None else f"< {RSS_GROWTH_TARGET:g} %")
            + " |"
        )
    messages = report.get("messages")
    if messages:
        lines += [
            "",
            f"Posted {messages['posted']} messages; {messages['expected']} deliveries expected,"
            f" {messages['missing']} missing ({messages['missing_while_connected']} while the"
            f" receiver was connected; rooms that got nothing on a server:"
            f" {', '.join(messages['dead_room_servers']) or 'none'}), {messages['duplicates']}"
            f" duplicates; moderation verdicts missing {report['moderated']['missing']}"
            f" (worker backlog max {report['moderated']['max_backlog']}); latency p50"
            f" {messages['latency']['p50_ms']} ms, p99 {messages['latency']['p99_ms']} ms;"
            f" clients connected {report['connections']['connected']}/{cfg['clients']},"
            f" unexpected closes {report['connections']['unexpected_closes']}"
            f" {report['connections']['close_codes'] or ''}.",
        ]
    lines += ["", "| check | value | target | met |", "| --- | --- | --- | --- |"]
    for check in report.get("checks", []):
        lines.append(
            f"| {check['check']} | {check['value']} | {check.get('target', '')} | "
            f"{'yes' if check['met'] else 'no'} |"
        )
    lines += ["", f"Overall: **{'pass' if report.get('passed') else 'fail'}**", ""]
    return "\n".join(lines)


def write_results(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    path.with_suffix(".md").write_text(format_markdown(report))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["clients"]:
        return clients_main()
    args = parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    try:
        report = run(args, argv)
    except KeyboardInterrupt:
        print("interrupted: every process stopped, database dropped, Redis keys deleted")
        return 130
    write_results(args.json, report)
    print()
    print(format_report(report))
    print(f"\nwritten: {args.json} and {args.json.with_suffix('.md')}")
    return 0 if report["passed"] else 1


# The client process -----------------------------------------------------------------------


class ChatSocket(loadgen.WebSocket):
    """A loadgen WebSocket with a session cookie, the close code it got and what it saw."""

    def __init__(self, index: int, port: int, room: int, path: str, cookie: str, sink: Any):
        super().__init__(path, port, sink.on_message)
        self.index, self.room = index, room
        self.extra_headers = f"Cookie: {cookie}\r\n"
        self.server = 0
        self.joined = asyncio.get_running_loop().create_future()
        self.seen = bytearray()  # by post sequence number: message events received
        self.verdicts = bytearray()  # by post sequence number: moderated events received
        self.close_code: int | None = None
        self.lost_at: float | None = None

    def _frame(self, fin: int, opcode: int, payload: bytes) -> None:
        if opcode == 8 and self.close_code is None:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
        super()._frame(fin, opcode, payload)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost_at = time.monotonic()
        if not self.joined.done():
            self.joined.set_exception(ConnectionError(f"closed before joining ({exc})"))
        super().connection_lost(exc)


def _mark(seen: bytearray, seq: int) -> bool:
    """Count a receipt of ``seq``; False if it was a duplicate."""
    if seq >= len(seen):
        seen.extend(bytes(seq + 4096 - len(seen)))
    first = seen[seq] == 0
    if seen[seq] < 255:
        seen[seq] += 1
    return first


class Sink:
    """Everything the clients receive, counted."""

    def __init__(self, users: list[str]) -> None:
        self.users = users
        self.post_room = array("I")
        self.post_by = array("I")
        self.post_sent = array("d")
        self.latencies = array("d")
        self.verdict_latencies = array("d")
        self.duplicates = 0
        self.verdict_duplicates = 0
        self.not_visible = 0
        self.misrouted = 0
        self.wrong_user = 0
        self.unknown = 0
        self.presence = 0
        self.errors: Counter[str] = Counter()
        self.other: Counter[str] = Counter()

    def on_message(self, client: loadgen.WebSocket, payload: bytes) -> None:
        assert isinstance(client, ChatSocket)
        event = json.loads(payload)
        kind = event.get("type")
        if kind in ("message", "moderated"):
            seq = self._sequence(event)
            if seq is None:
                self.unknown += 1
                return
            if self.post_room[seq] != client.room:
                self.misrouted += 1
                return
            if kind == "message":
                if not _mark(client.seen, seq):
                    self.duplicates += 1
                if seq % 10 == 0:
                    self.latencies.append(time.monotonic() - self.post_sent[seq])
                if event.get("user") != self.users[self.post_by[seq] % len(self.users)]:
                    self.wrong_user += 1
            else:
                if not _mark(client.verdicts, seq):
                    self.verdict_duplicates += 1
                elif seq % 10 == 0:
                    self.verdict_latencies.append(time.monotonic() - self.post_sent[seq])
                if event.get("status") != "visible":
                    self.not_visible += 1
        elif kind == "presence":
            self.presence += 1
        elif kind == "error":
            self.errors[str(event.get("code"))] += 1
        elif kind == "history":
            if not client.joined.done():
                client.joined.set_result(None)
        elif kind not in ("welcome", "typing"):
            self.other[str(kind)] += 1

    def _sequence(self, event: dict[str, Any]) -> int | None:
        text = event.get("text")
        if not isinstance(text, str) or not text.startswith("soak "):
            return None
        try:
            seq = int(text.split()[1])
        except (IndexError, ValueError):
            return None
        return seq if 0 <= seq < len(self.post_room) else None


class Backlog:
    """Length of the moderation channel's queue in Redis (the worker's backlog)."""

    def __init__(self, url: str, key: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=2)
        self.key = key
        self.max = 0

    def length(self) -> int | None:
        try:
            kind = self.client.type(self.key)
            if kind == b"none":
                count = 0
            elif kind == b"zset":
                count = int(self.client.zcard(self.key))
            else:
                count = int(self.client.llen(self.key))
        except Exception:
            return None
        self.max = max(self.max, count)
        return count


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def rss_now(pids: dict[str, int]) -> dict[str, int | None]:
    sample: dict[str, int | None] = {}
    for name, pid in pids.items():
        try:
            sample[name] = rss_kib(pid)
        except (OSError, RuntimeError):
            sample[name] = None
    return sample


def _cpu(pid: int) -> float | None:
    try:
        return cpu_seconds(pid)
    except OSError:
        return None


async def soak_clients(spec: dict[str, Any]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    pids: dict[str, int] = {**spec["pids"], "clients": os.getpid()}
    sink = Sink(spec["users"])
    rooms, ports, cookies = spec["rooms"], spec["ports"], spec["cookies"]
    gate = asyncio.Semaphore(spec["concurrency"])
    connect_errors: Counter[str] = Counter()

    async def one(index: int) -> ChatSocket | None:
        server = index % len(ports)
        room = (index // len(ports)) % len(rooms)  # every room has members on every server
        client = ChatSocket(
            index, ports[server], room, f"/ws/chat/{rooms[room]}/", cookies[index % len(cookies)],
            sink,
        )  # fmt: skip
        client.server = server
        async with gate:
            try:
                await loop.create_connection(lambda: client, loadgen.HOST, ports[server])
                await asyncio.wait_for(client.opened, 30)
                await asyncio.wait_for(client.joined, 30)
            except Exception as error:
                connect_errors[f"{type(error).__name__}: {error}"[:120]] += 1
                if client.transport is not None:
                    client.transport.abort()
                return None
        return client

    t0 = time.monotonic()
    opened = await asyncio.gather(*(one(i) for i in range(spec["clients"])))
    clients = [c for c in opened if c is not None]
    emit(
        {
            "progress": f"{len(clients)}/{spec['clients']} clients joined in "
            f"{time.monotonic() - t0:.1f} s"
        }
    )
    await asyncio.sleep(2.0)  # presence and history settle before the first sample
    rss: dict[str, dict[str, Any]] = {name: {} for name in pids}
    trend: list[dict[str, Any]] = []

    backlog = Backlog(spec["redis_url"], spec["moderation_key"])

    def sample(label: str | None, elapsed: float) -> None:
        now = rss_now(pids)
        for name, kib in now.items():
            if label is not None:
                rss[name][label] = kib
        trend.append({"t": round(elapsed, 1), **now, "moderation_backlog": backlog.length()})

    sample("start_kib", 0.0)
    members = Counter(c.room for c in clients)
    rate, duration, warmup = spec["rate"], spec["duration"], spec["warmup"]
    order = list(clients)
    random.Random(1).shuffle(order)  # noqa: S311  a repeatable order, not a secret
    interval = 1.0 / rate
    start = time.monotonic()
    cpu_start: dict[str, float | None] = {}
    cpu_started_at = start
    warmed = False
    next_sample = SAMPLE_EVERY
    next_backlog = 1.0
    seq = 0
    behind_max = 0.0
    while True:
        now = time.monotonic()
        elapsed = now - start
        if not warmed and elapsed >= warmup:
            warmed = True
            sample("warmup_kib", elapsed)
            cpu_start = {name: _cpu(pid) for name, pid in pids.items()}
            cpu_started_at = time.monotonic()
            emit({"progress": f"warm-up over at {elapsed:.0f} s: RSS {rss_now(pids)} KiB"})
        if elapsed >= next_backlog:
            backlog.length()  # keeps the maximum
            next_backlog += 1.0
        if elapsed >= next_sample:
            sample(None, elapsed)
            next_sample += SAMPLE_EVERY
            if int(elapsed) % 60 < SAMPLE_EVERY:
                emit({"progress": f"{elapsed:.0f} s: {seq} posted"})
        if elapsed >= duration:
            break
        due = min(int(elapsed / interval) + 1, int(duration * rate))
        behind_max = max(behind_max, (due - seq - 1) * interval)
        while seq < due:
            client = order[seq % len(order)]
            if client.lost_at is None:
                sink.post_room.append(client.room)
                sink.post_by.append(client.index)
                sink.post_sent.append(time.monotonic())
                text = f"soak {seq} c{client.index} {'x' * 24}"
                client.send(json.dumps({"type": "message", "text": text}).encode())
                seq += 1
            else:
                order.remove(client)
                if not order:
                    break
        if not order:
            break
        await asyncio.sleep(max(0.0, start + seq * interval - time.monotonic()))
    posting_s = time.monotonic() - start
    sample("end_kib", posting_s)
    cpu_window = time.monotonic() - cpu_started_at if warmed else 0.0
    for name, pid in pids.items():
        end_cpu, begin_cpu = _cpu(pid), cpu_start.get(name)
        if end_cpu is not None and begin_cpu is not None and cpu_window > 0.5:
            rss[name]["cpu_pct"] = round(100 * (end_cpu - begin_cpu) / cpu_window, 1)
    emit({"progress": f"posting over: {seq} messages in {posting_s:.0f} s; draining"})

    expected = sum(members[room] for room in sink.post_room)

    def received() -> tuple[int, int]:
        got = verdicts = 0
        for c in clients:
            got += len(c.seen) - c.seen.count(0)
            verdicts += len(c.verdicts) - c.verdicts.count(0)
        return got, verdicts

    drain_start = time.monotonic()
    while time.monotonic() - drain_start < spec["drain"]:
        if received() == (expected, expected):
            break
        await asyncio.sleep(0.25)
    drain_s = time.monotonic() - drain_start
    got, verdicts = received()
    sample("drained_kib", posting_s + drain_s)

    # Who missed what.
    posts = len(sink.post_room)
    missing_by_server: Counter[str] = Counter()
    missing_by_room_server: Counter[str] = Counter()
    expected_by_room_server: Counter[str] = Counter()
    missing_same_server = missing_cross_server = 0
    missing_after_close = 0  # posted after the receiver's connection had closed
    verdict_seen = bytearray(posts)
    missing_per_post = [0] * posts
    examples: list[dict[str, Any]] = []
    verdicts_missing = 0
    room_posts: dict[int, list[int]] = {room: [] for room in range(len(rooms))}
    for s, room in enumerate(sink.post_room):
        room_posts[room].append(s)
    for c in clients:
        c.seen.extend(bytes(max(0, posts - len(c.seen))))
        c.verdicts.extend(bytes(max(0, posts - len(c.verdicts))))
        where = f"{rooms[c.room]}@{spec['servers'][c.server]}"
        expected_by_room_server[where] += len(room_posts[c.room])
        for s in room_posts[c.room]:
            if c.verdicts[s]:
                verdict_seen[s] = 1
            else:
                verdicts_missing += 1
            if c.seen[s]:
                continue
            missing_per_post[s] += 1
            if c.lost_at is not None and sink.post_sent[s] >= c.lost_at:
                missing_after_close += 1
                continue
            missing_by_server[spec["servers"][c.server]] += 1
            missing_by_room_server[where] += 1
            poster_server = sink.post_by[s] % len(ports)
            if poster_server == c.server:
                missing_same_server += 1
            else:
                missing_cross_server += 1
            if len(examples) < 10:
                examples.append(
                    {
                        "post": s,
                        "room": rooms[c.room],
                        "receiver": c.index,
                        "receiver_server": spec["servers"][c.server],
                        "poster": sink.post_by[s],
                        "sent_at_s": round(sink.post_sent[s] - start, 2),
                        "receiver_closed": c.lost_at is not None,
                    }
                )
    missing = sum(missing_per_post)
    missing_connected = missing - missing_after_close
    lost_entirely = sum(
        1 for s, n in enumerate(missing_per_post) if n and n == members[sink.post_room[s]]
    )

    closing = time.monotonic()
    unexpected = [c for c in clients if c.lost_at is not None and c.lost_at < closing]
    close_codes = Counter(str(c.close_code) for c in unexpected)
    await loadgen.close_all(list(clients), wait=5)
    lat = loadgen.percentiles(list(sink.latencies))
    return {
        "rss": rss,
        "rss_trend": trend,
        "connections": {
            "connected": len(clients),
            "connect_failures": spec["clients"] - len(clients),
            "connect_errors": dict(connect_errors),
            "per_server": dict(Counter(spec["servers"][c.server] for c in clients)),
            "per_room": {rooms[r]: n for r, n in sorted(members.items())},
            "unexpected_closes": len(unexpected),
            "close_codes": dict(close_codes),
        },
        "messages": {
            "posted": posts,
            "posting_s": round(posting_s, 1),
            "achieved_rate": round(posts / posting_s, 2) if posting_s else 0,
            "scheduler_max_lag_s": round(behind_max, 3),
            "expected": expected,
            "received": got,
            "missing": missing,
            "missing_after_receiver_closed": missing_after_close,
            "missing_while_connected": missing_connected,
            "missing_by_server": dict(missing_by_server),
            "missing_by_room_server": dict(sorted(missing_by_room_server.items())),
            # (room, server) pairs whose clients got none of the room's messages
            "dead_room_servers": sorted(
                where
                for where, n in missing_by_room_server.items()
                if n == expected_by_room_server[where]
            ),
            "missing_same_server": missing_same_server,
            "missing_cross_server": missing_cross_server,
            "posts_with_missing": sum(1 for n in missing_per_post if n),
            "posts_lost_entirely": lost_entirely,
            "missing_examples": examples,
            "duplicates": sink.duplicates,
            "misrouted": sink.misrouted,
            "wrong_user": sink.wrong_user,
            "unknown": sink.unknown,
            "drain_s": round(drain_s, 2),
            "latency": lat,
        },
        "moderated": {
            "expected": expected,
            "received": verdicts,
            "missing": verdicts_missing,
            "posts_without_verdict": posts - sum(verdict_seen),
            "duplicates": sink.verdict_duplicates,
            "not_visible": sink.not_visible,
            "latency": loadgen.percentiles(list(sink.verdict_latencies)),
            "max_backlog": backlog.max,
        },
        "error_events": dict(sink.errors),
        "other_events": dict(sink.other),
        "presence_events": sink.presence,
    }


def clients_main() -> int:
    """``soak.py clients``: the spec as one JSON line on stdin; progress and the result as
    JSON lines on stdout."""
    spec = json.loads(sys.stdin.readline())
    raise_open_files_limit()

    async def bounded() -> dict[str, Any]:
        return await asyncio.wait_for(soak_clients(spec), spec["deadline"])

    try:
        result = asyncio.run(bounded())
    except BaseException as error:
        emit({"error": f"{type(error).__name__}: {error}"})
        raise
    emit({"result": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
