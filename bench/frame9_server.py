"""Issue 20 part 9 (frame9): closed-loop echoes against one server process, one variant
after another in the same process (as ``bench.run``'s echo scenario does: async, sync,
JSON), printing the server's CPU per round trip for each: to see whether a variant costs
more after another one ran in the same process.

    python -m bench.frame9_server SERVER IMPL VARIANTS [SECONDS]

SERVER ``uvicorn`` or ``hypercorn``; IMPL ``ours`` or ``bare``; VARIANTS a comma list of
``async``, ``sync``, ``json`` (``sync`` runs the sync echo; the others as in the harness).
Run from the tree whose code to measure; server on core 0, load generator on core 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from bench.echo_probe import SERVERS, cpu, free_port, start_echo_load, wait_for_port, worker

PY = sys.executable
VARIANTS = {
    "async": ("/ws/echo/", "x" * 32),
    "sync": ("/ws/sync/", "x" * 32),
    "json": ("/ws/json/", json.dumps({"text": "x" * 20, "n": 1})),
}


def main() -> None:
    server, impl, variants = sys.argv[1:4]
    secs = float(sys.argv[4]) if len(sys.argv) > 4 else 4.0
    tree = os.getcwd()
    port = free_port()
    env = dict(os.environ, PYTHONPATH=tree, BENCH_LAYER="memory")
    env.setdefault("DJANGO_SETTINGS_MODULE", "bench.apps.settings_ours")
    argv = [
        "taskset",
        "-c",
        "0",
        PY,
        "-m",
        *SERVERS[server](port),
        f"bench.apps.{impl}:application",
    ]
    srv = subprocess.Popen(argv, cwd=tree, env=env)
    try:
        wait_for_port(port)
        for variant in variants.split(","):
            path, message = VARIANTS[variant]
            raw_json = variant == "json"
            lg = start_echo_load(tree, port, srv.pid, path, secs, message, raw_json)
            time.sleep(1.5)
            w = worker(srv.pid)
            c0, t0 = cpu(w), time.monotonic()
            time.sleep(secs - 1.0)
            c1, t1 = cpu(w), time.monotonic()
            res = json.loads(lg.communicate()[0].decode().strip().splitlines()[-1])
            n = res["rps"] * (t1 - t0)
            print(
                f"{server} {impl} {variant} rps {res['rps']:.0f} srv% {res['srv_cpu']}"
                f" lg% {res['lg_cpu']} srv_us {(c1 - c0) / n * 1e6:.1f}",
                flush=True,
            )
            time.sleep(0.5)
    finally:
        srv.terminate()
        srv.wait()


if __name__ == "__main__":
    main()
