"""Where a broadcast's server time goes: py-spy samples of the broadcast scenario's servers.

    flock /tmp/bench.lock .venv/bin/python -m bench.bcast_profile [--server hypercorn]
        [--layer redis] [--impl ours|bare] [--size 1000] [--messages 100] [--top 30]

Starts the server(s) of ``bench.harness.scenarios.broadcast`` for one layer (as
``bench.gc_log`` does), attaches ``py-spy record --gil --nonblocking --format raw`` to each
serving process (not pausing it: a paused process's deeper stacks would take longer to read
and weigh more) for the whole run: ``--messages`` broadcasts to ``--size`` clients (make it
large so that the broadcasts outweigh the connection storm). Prints
``bench.profile_server``'s tables (own and inclusive samples) and the samples per broadcast
member. Needs py-spy in the venv.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import scenarios
from bench.probe_servers import probe_context
from bench.profile_server import report


def _workers(pid: int) -> list[int]:
    """The process itself, or its children running the app (Hypercorn's spawned worker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = int(stat.rpartition(")")[2].split()[1])
        if parent == pid and b"--multiprocessing-fork" in cmd:
            found.append(int(entry.name))
    return found or [pid]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="hypercorn", choices=tuple(scenarios.SERVERS))
    parser.add_argument("--layer", default="redis", choices=("memory", "redis"))
    parser.add_argument("--impl", default="ours", choices=("ours", "bare"))
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--raw", type=Path, help="keep the raw profile here")
    args = parser.parse_args(argv)
    py_spy = str(Path(sys.executable).with_name("py-spy"))
    with tempfile.TemporaryDirectory(prefix="bcast-profile-") as temp:
        temp_dir = Path(temp)
        ctx = probe_context(temp_dir, args.server, "bcastprof")
        impls, procs = ctx.impls, ctx.procs
        count = 1 if args.layer == "memory" else 2
        spies = []
        try:
            servers = scenarios.start_servers(ctx, impls[args.impl], count=count, layer=args.layer)
            time.sleep(1.0)
            pids = [pid for proc, _ in servers for pid in _workers(proc.pid)]
            for index, pid in enumerate(pids):
                out = temp_dir / f"spy-{index}.txt"
                command = [py_spy, "record", "--gil", "--nonblocking", "--format", "raw"]
                command += ["-r", str(args.rate)]
                command += ["-p", str(pid), "-o", str(out)]
                spies.append((subprocess.Popen(command, stdout=subprocess.DEVNULL), out))
            time.sleep(1.0)
            spec = {
                "mode": "broadcast",
                "protocol": impls[args.impl].protocol,
                "path": "/ws/broadcast/",
                "connections": args.size,
                "messages": args.messages,
            }
            result = scenarios.loadgen(ctx, spec, servers)
            print({key: result.get(key) for key in ("p50_ms", "p99_ms", "max_ms", "lost")})
        finally:
            for spy, _ in spies:
                spy.send_signal(signal.SIGINT)
                spy.wait(timeout=30)
            procs.stop_all()
            if args.layer == "redis":
                scenarios.delete_keys(ctx.redis_url, ctx.prefix)
        raw = "".join(out.read_text() for _, out in spies if out.exists())
        if args.raw:
            args.raw.write_text(raw)
        total, lines = report(raw, args.top)
        members = args.size * args.messages
        per_member = total / args.rate / members * 1e6
        print(f"{total} samples at {args.rate}/s, {per_member:.2f} us a member")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
