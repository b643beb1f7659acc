"""Where a server's time goes on one echo path: py-spy samples of a real server under load.

    .venv/bin/python -m bench.profile_server --server uvicorn --path /ws/json/ \\
        [--impl ours|bare] [--seconds 8] [--top 25] [--output FILE.md]

Starts the benchmark's application (``bench/apps``, from this checkout, not a snapshot) on
one server process pinned to core 0, drives 50 closed-loop WebSocket connections at
``--path`` with the benchmark's load generator on core 1, samples the thread holding the
GIL in the server (``py-spy record --gil --format raw``) for ``--seconds`` after a
one-second warm-up, and writes a Markdown report: the share of samples by the package of
the sampled frame (ours, the server, asyncio, the rest), the top functions by own samples
and ours by inclusive ones. Needs py-spy (``.venv/bin/pip install py-spy``) and the right
to trace the server process.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness.procs import LOAD_CORE, SERVER_CORE, Processes
from bench.harness.scenarios import ECHO_VARIANTS, ROOT, SERVERS, WORKDIR
from testsupport.processes import wait_for_port
from testsupport.system import free_port

APPS = {"ours": ("bench.apps.ours", "bench.apps.settings_ours"), "bare": ("bench.apps.bare", "")}
# py-spy's raw frames: "function (file:line)"; line numbers dropped, to add up by function.
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
OURS = ("(consumers/", "(channels_layer/")
AREAS = (
    ("consumers/", "consumers"),
    ("channels_layer/", "channels_layer"),
    ("/django/", "Django"),
    ("/asyncio/", "asyncio"),
    ("/uvicorn/", "the server"),
    ("/hypercorn/", "the server"),
    ("/daphne/", "the server"),
    ("/twisted/", "the server"),
    ("/websockets/", "the server"),
    ("/wsproto/", "the server"),
    ("/h11/", "the server"),
    ("json/", "json"),
)


def function_name(frame: str) -> str:
    match = FRAME.match(frame)
    if not match:
        return frame
    path = match["file"]
    for marker in ("site-packages/", "python3.11/", str(ROOT) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{match['function']} ({path})"


def area(frame: str) -> str:
    return next((name for marker, name in AREAS if marker in frame), "other")


def report(raw: str, top: int) -> tuple[int, list[str]]:
    """Samples, and the Markdown tables of a py-spy raw (collapsed stacks) profile."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    areas: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [function_name(frame) for frame in stack.split(";")]
        total += count
        own[frames[-1]] += count
        areas[area(stack.split(";")[-1])] += count
        for name in set(frames):
            if name.rpartition(" ")[2].startswith(OURS):
                inclusive[name] += count
    lines = [
        "| where (the package of the sampled frame) | own samples | share |",
        "|---|--:|--:|",
    ]
    for name, count in areas.most_common():
        lines.append(f"| {name} | {count} | {count / total:.1%} |")
    for title, counter in (("own", own), ("inclusive, ours only", inclusive)):
        lines += ["", f"| function ({title} samples) | samples | share |", "|---|--:|--:|"]
        for name, count in counter.most_common(top):
            lines.append(f"| `{name}` | {count} | {count / total:.1%} |")
    return total, lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="uvicorn", choices=sorted(SERVERS))
    parser.add_argument("--path", default="/ws/json/", choices=[p for _, p, _ in ECHO_VARIANTS])
    parser.add_argument("--impl", default="ours", choices=sorted(APPS))
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    message = next(m for _, p, m in ECHO_VARIANTS if p == args.path)
    app, settings = APPS[args.impl]
    with tempfile.TemporaryDirectory(prefix="profile-") as temp:
        procs = Processes(Path(temp))
        try:
            port = free_port()
            env = {"PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
            if settings:
                env["DJANGO_SETTINGS_MODULE"] = settings
            server = procs.start(
                f"{args.server}-{args.impl}",
                [sys.executable, "-m", *SERVERS[args.server](port), f"{app}:application"],
                core=SERVER_CORE,
                env=env,
                cwd=WORKDIR,
            )
            wait_for_port(server, port)
            spec = {
                "mode": "echo",
                "path": args.path,
                "message": message,
                "connections": 50,
                "warmup": 1.0,
                "duration": args.seconds + 1.0,
                "ports": [port],
                "server_pids": [server.pid],
                "deadline": args.seconds + 60,
            }
            load = procs.start(
                "loadgen",
                [sys.executable, "-m", "bench.loadgen", json.dumps(spec)],
                core=LOAD_CORE,
                pipe=True,
                cwd=ROOT,
            )
            time.sleep(1.5)
            raw_path = Path(temp) / "raw.txt"
            subprocess.run(
                [
                    py_spy,
                    "record",
                    "--pid",
                    str(server.pid),
                    "--duration",
                    str(int(args.seconds)),
                    "--rate",
                    "250",
                    "--format",
                    "raw",
                    "--output",
                    str(raw_path),
                    "--nonblocking",
                    "--gil",  # the thread holding the GIL: where the CPU goes
                ],
                check=True,
                capture_output=True,
            )
            result = load.read_json(timeout=args.seconds + 70)
            raw = raw_path.read_text()
        finally:
            procs.stop_all()
    samples, tables = report(raw, args.top)
    command = " ".join(["python", "-m", "bench.profile_server", *(argv or sys.argv[1:])])
    text = "\n".join(
        [
            f"# py-spy profile: {args.impl} on {args.server}, {args.path}",
            "",
            f"`{command}`: {samples} samples at 250 Hz over {int(args.seconds)} s of 50 "
            f"closed-loop connections; {result['rps']:,.0f} round trips/s, server CPU "
            f"{result.get('srv_cpu')} % of "
            f"one core (while sampled: py-spy's reads slow it down a little).",
            "",
            *tables,
            "",
        ]
    )
    if args.output:
        args.output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
