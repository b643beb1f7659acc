# ruff: noqa: S108, E501  (a measurement probe: fixed /tmp/why8 files, taskset/perf on PATH)
"""Issue 20 part 8 (why8): one closed-loop echo run against one server, with what the harness
does not record: per-round-trip syscalls of the server and of the load generator (perf
tracepoints, counting), the server's garbage collections (``WHY8_GC=1`` with the
sitecustomize in ``bench/results/issue20/part8-why/``) and per-thread CPU.

    python -m bench.why8_probe SERVER IMPL PATH [SECONDS]   (server on core 0, loadgen on 1)
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time

from bench.echo_probe import (
    SERVERS,
    cpu,
    free_port,
    parse_perf,
    perf,
    start_echo_load,
    summed_counts,
    wait_for_port,
    worker,
)

PY = sys.executable
SYSCALLS = ["epoll_wait", "epoll_pwait", "recvfrom", "sendto", "read", "write", "writev"]


def app(impl: str) -> str:
    """``ours``/``bare`` from bench.apps, ``why8_*`` from bench."""
    return (
        f"bench.{impl}:application" if impl.startswith("why8") else f"bench.apps.{impl}:application"
    )


def main() -> None:
    server, impl, path = sys.argv[1:4]
    secs = float(sys.argv[4]) if len(sys.argv) > 4 else 4.0
    tree = os.getcwd()
    port = free_port()
    env = dict(os.environ, PYTHONPATH=f"/tmp/why8/site:{tree}", BENCH_LAYER="memory")
    env.setdefault("DJANGO_SETTINGS_MODULE", "bench.apps.settings_ours")
    for f in glob.glob("/tmp/why8/gc-*.json") + glob.glob("/tmp/why8/handles-*.json"):
        os.remove(f)
    argv = ["taskset", "-c", "0", PY, "-m", *SERVERS[server](port), app(impl)]
    srv = subprocess.Popen(argv, cwd=tree, env=env)
    try:
        wait_for_port(port)
        lg = start_echo_load(tree, port, srv.pid, path, secs)
        time.sleep(1.5)
        w = worker(srv.pid)
        window = secs - 1.0
        h0, g0, c0, l0, t0 = (
            summed_counts("/tmp/why8/handles-*.json"),
            summed_counts("/tmp/why8/gc-*.json"),
            cpu(w),
            cpu(lg.pid),
            time.monotonic(),
        )
        if os.environ.get("WHY8_NOPERF"):  # the same window without the tracepoints
            for f in ("/tmp/why8/perf-srv.txt", "/tmp/why8/perf-lg.txt"):
                open(f, "w").close()
            time.sleep(window)
        else:
            ps = perf(w, window, "/tmp/why8/perf-srv.txt", SYSCALLS)
            pl = perf(lg.pid, window, "/tmp/why8/perf-lg.txt", SYSCALLS)
            ps.wait()
            pl.wait()
        c1, l1, t1 = cpu(w), cpu(lg.pid), time.monotonic()
        time.sleep(0.6)
        g1, h1 = summed_counts("/tmp/why8/gc-*.json"), summed_counts("/tmp/why8/handles-*.json")
        res = json.loads(lg.communicate()[0].decode().strip().splitlines()[-1])
    finally:
        srv.terminate()
        srv.wait()
    n = res["rps"] * (t1 - t0)
    ss, sl = parse_perf("/tmp/why8/perf-srv.txt"), parse_perf("/tmp/why8/perf-lg.txt")
    per = lambda d: {k: round(v / n, 3) for k, v in d.items() if v}  # noqa: E731
    gcd = {k: round(g1.get(k, 0) - g0.get(k, 0), 4) for k in g1}
    print(
        f"{server} {impl} {path} rps {res['rps']:.0f} srv% {res['srv_cpu']} lg% {res['lg_cpu']}"
        f" srv_us {(c1 - c0) / n * 1e6:.1f} lg_us {(l1 - l0) / n * 1e6:.1f}"
        f" srv_sys/rt {per(ss)} lg_sys/rt {per(sl)}"
        f" gc/rt c0 {gcd.get('c0', 0) / n:.4f} c1 {gcd.get('c1', 0) / n:.5f}"
        f" c2 {gcd.get('c2', 0)} gc_us/rt {sum(gcd.get(f't{g}', 0) for g in range(3)) / n * 1e6:.2f}"
        f" t2 {gcd.get('t2', 0) * 1e3:.1f}ms"
    )
    if h1:  # WHY8_HANDLES=1: the asyncio loop's handles a round trip, by callback
        hd = {k: (v - h0.get(k, 0)) / n for k, v in h1.items()}
        print(
            "  handles/rt",
            round(sum(v for k, v in hd.items() if not k.startswith("us:")), 3),
            {k: round(v, 3) for k, v in sorted(hd.items(), key=lambda kv: -kv[1]) if v >= 0.005},
        )


if __name__ == "__main__":
    main()
