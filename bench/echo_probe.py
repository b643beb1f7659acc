"""What the echo probes (``why8_probe``, ``sync9_probe``, ``frame9_server``) share: waiting
for the server they started, and starting the closed-loop echo load generator on it, pinned
to core 1 as the harness pins it."""

from __future__ import annotations

import glob
import importlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any


def wait_for_port(port: int, tries: int = 100) -> None:
    """Return once something accepts on ``port`` (or after ``tries`` tenths of a second)."""
    for _ in range(tries):
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return
        except OSError:
            time.sleep(0.1)


def start_echo_load(
    tree: str,
    port: int,
    server_pid: int,
    path: str,
    seconds: float,
    message: str = "x" * 32,
    raw_json: bool = False,
) -> subprocess.Popen[bytes]:
    """``bench.loadgen`` in echo mode, 50 connections, 1 s of warm-up then ``seconds``; its
    JSON result on stdout."""
    spec = {"mode": "echo", "protocol": "ws", "raw_json": raw_json, "path": path}
    spec |= {"message": message, "connections": 50, "warmup": 1.0, "duration": seconds}
    spec |= {"ports": [port], "server_pids": [server_pid], "deadline": 60}
    pinned = ["taskset", "-c", "1", sys.executable, "-m", "bench.loadgen", json.dumps(spec)]
    return subprocess.Popen(
        pinned,  # taskset from PATH, as the harness runs it
        cwd=tree,
        env=dict(os.environ, PYTHONPATH=tree),
        stdout=subprocess.PIPE,
    )


def websocket_scope(path: str, client_port: int) -> dict[str, Any]:
    """The scope of an in-process WebSocket connection to ``path``."""
    return {
        "type": "websocket",
        "path": path,
        "headers": [],
        "query_string": b"",
        "root_path": "",
        "client": ("127.0.0.1", client_port),
        "server": ("127.0.0.1", 8000),
        "subprotocols": [],
        "scheme": "ws",
        "asgi": {"version": "3.0"},
    }


def application_for(args: list[str]) -> tuple[Any, str, list[str]]:
    """From ``[--root DIR] IMPL REST...``: the echo application of IMPL (``bare``, ``floor``,
    or ours with ``bench.apps.settings_IMPL``) imported from DIR (default: here), IMPL and
    REST."""
    root = os.getcwd()
    if args[0] == "--root":
        root, args = args[1], args[2:]
    sys.path.insert(0, root)
    if args[0] == "bare":
        from bench.apps.bare import application
    elif args[0] == "floor":
        from bench.apps.floor import application
    else:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", f"bench.apps.settings_{args[0]}")
        from bench.apps.ours import application
    return application, args[0], args[1:]


# How the probes start each server on ``port`` (the app's import path is appended).
UVICORN = ["uvicorn", "--host", "127.0.0.1", "--log-level", "warning", "--lifespan", "off"]
SERVERS: dict[str, Callable[[int], list[str]]] = {
    "hypercorn": lambda p: ["hypercorn", "-b", f"127.0.0.1:{p}", "--log-level", "warning"],
    "uvicorn": lambda p: [*UVICORN, "--port", str(p)],
    "uvicorn-asyncio": lambda p: [*UVICORN, "--port", str(p), "--loop", "asyncio"],
}


def worker(pid: int) -> int:
    """The process serving: the server's last child if it forked one, else itself."""
    with open(f"/proc/{pid}/task/{pid}/children") as children:
        kids = children.read().split()
    return int(kids[-1]) if kids else pid


def cpu(pid: int) -> float:
    """Seconds of CPU (user + system) process ``pid`` has used."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def summed_counts(pattern: str) -> dict[str, float]:
    """The counts in every JSON file matching ``pattern`` (one a process), added up."""
    found: dict[str, float] = {}
    for name in glob.glob(pattern):
        try:
            with open(name) as file:
                for key, value in json.load(file).items():
                    found[key] = found.get(key, 0) + value
        except ValueError:  # being written
            pass
    return found


def perf(pid: int, secs: float, out: str, syscalls: list[str]) -> subprocess.Popen[bytes]:
    """``perf stat`` counting ``syscalls`` of ``pid`` for ``secs`` into ``out``, on core 1."""
    events = ",".join(f"syscalls:sys_enter_{name}" for name in syscalls)
    argv = ["taskset", "-c", "1", "perf", "stat", "-x,", "-o", out, "-e", events]
    return subprocess.Popen([*argv, "-p", str(pid), "--", "sleep", str(secs)])


def parse_perf(out: str) -> dict[str, int]:
    """The system calls counted in ``perf``'s output file."""
    found = {}
    with open(out) as file:
        for line in file:
            parts = line.strip().split(",")
            if len(parts) > 2 and "sys_enter_" in parts[2]:
                count = int(parts[0]) if parts[0].isdigit() else 0
                found[parts[2].split("sys_enter_")[1]] = count
    return found


def free_port() -> int:
    """A TCP port nothing listens on now, for a server the probe starts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def toggled() -> tuple[Any, str, Any]:
    """``FRAME9_TOGGLE=module:Class.attr``: the class, the attribute's name and its value,
    for a probe to swap between runs; ``(None, "", None)`` when unset."""
    toggle = os.environ.get("FRAME9_TOGGLE")
    if not toggle:
        return None, "", None
    module, _, dotted = toggle.partition(":")
    owner_name, _, attribute = dotted.rpartition(".")
    owner = getattr(importlib.import_module(module), owner_name)
    return owner, attribute, owner.__dict__[attribute]
