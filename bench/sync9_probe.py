# ruff: noqa: S108, SIM115, E501, B905  (a measurement probe: fixed /tmp/sync9 files, taskset/perf on PATH)
"""Issue 20 part 9 (sync9): where the sync echo's hop goes inside a real server.

One closed-loop echo run (50 connections, server on core 0, ``bench.loadgen`` on core 1) of
TREE's app; over the measurement window it reads, per round trip:

- CPU of the loop's thread and of the pool threads (``/proc/<pid>/task/*/schedstat``, ns),
  and the time they were runnable but waiting for the core;
- voluntary and involuntary context switches of each (``/proc/<pid>/task/*/status``);
- with ``SYNC9_PERF=1``, the server's syscalls (perf tracepoints: futex, sched_yield,
  epoll, reads and writes);
- with ``SYNC9_RECORD=1``, ``perf record -g`` of the server into /tmp/sync9/perf.data
  (``SYNC9_RECORD=switch``: of its context switches);
- with ``SYNC9_COUNT=1``, the pool's own events (``SITE``, a sitecustomize the server
  imports: batches handed back, items a batch, spins and what they found, yields,
  wake-ups, checks). Counting costs CPU: read CPU from runs without it.

    python -m bench.sync9_probe TREE SERVER PATH [SECONDS] [IMPL]

TREE is the source tree whose app runs (the worktree, or a ``git archive`` export of main);
SERVER uvicorn, uvicorn-asyncio or hypercorn; PATH /ws/sync/ or /ws/echo/.
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
    free_port,
    parse_perf,
    perf,
    start_echo_load,
    summed_counts,
    wait_for_port,
    worker,
)

PY = sys.executable
COUNTS = "/tmp/sync9/counts-*.json"  # each process's pool events (SITE writes them)
SYSCALLS = ["futex", "sched_yield", "epoll_wait", "epoll_pwait", "read", "write", "writev"]
SYSCALLS += ["recvfrom", "sendto"]


SITE = r"""
import json, os, sys, threading, time
if os.environ.get("SYNC9_COUNT"):
    n = {}
    def bump(key, by=1):
        n[key] = n.get(key, 0) + by
    def patch():
        while "consumers.pool_queue" not in sys.modules or "consumers.threads" not in sys.modules:
            time.sleep(0.05)
        time.sleep(0.05)
        pq, th = sys.modules["consumers.pool_queue"], sys.modules["consumers.threads"]
        run_batch = th._run_batch
        def _run_batch(loop):
            bump("batch")
            bump("items", len(th._pending.get(loop, ())))
            return run_batch(loop)
        th._run_batch = _run_batch
        spin = pq._spin
        def _spin(calls):
            bump("spin")
            came = spin(calls)
            bump("spin_found" if came else "spin_empty")
            return came
        pq._spin = _spin
        yield_core = pq._yield_core
        def _yield_core():
            bump("yield")
            yield_core()
        pq._yield_core = _yield_core
        act = pq.PoolQueue._act
        def _act(self, wake):
            bump("wake")
            return act(self, wake)
        pq.PoolQueue._act = _act
        check = th.SyncPool._check
        def _check(self, arg):
            bump("check")
            return check(self, arg)
        th.SyncPool._check = _check
        put = pq.PoolQueue.put
        def _put(self, call):
            bump("put")
            return put(self, call)
        pq.PoolQueue.put = _put
    def dump():
        while True:
            time.sleep(0.25)
            with open(f"/tmp/sync9/counts-{os.getpid()}.json", "w") as f:
                json.dump(dict(n), f)
    threading.Thread(target=patch, daemon=True).start()
    threading.Thread(target=dump, daemon=True).start()
"""


def tasks(pid: int) -> dict[str, tuple[int, int, int, int, int]]:
    """Per thread: (ns on the CPU, ns runnable and waiting, voluntary, involuntary, system
    time in clock ticks)."""
    out = {}
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            run, wait, _ = open(f"/proc/{pid}/task/{t}/schedstat").read().split()
            status = open(f"/proc/{pid}/task/{t}/status").read()
        except OSError:
            continue
        vol = int(status.split("\nvoluntary_ctxt_switches:")[1].split()[0])
        inv = int(status.split("nonvoluntary_ctxt_switches:")[1].split()[0])
        stime = int(open(f"/proc/{pid}/task/{t}/stat").read().rsplit(")", 1)[1].split()[12])
        out[t] = (int(run), int(wait), vol, inv, stime)
    return out


def main() -> None:
    tree, server, path = sys.argv[1:4]
    secs = float(sys.argv[4]) if len(sys.argv) > 4 else 4.0
    impl = sys.argv[5] if len(sys.argv) > 5 else "ours"
    os.makedirs("/tmp/sync9", exist_ok=True)
    for f in glob.glob(COUNTS):
        os.remove(f)
    port = free_port()
    site = "/tmp/sync9/site"
    os.makedirs(site, exist_ok=True)
    with open(os.path.join(site, "sitecustomize.py"), "w") as out:
        out.write(SITE)
    env = dict(os.environ, PYTHONPATH=f"{site}:{tree}", BENCH_LAYER="memory")
    env.setdefault("DJANGO_SETTINGS_MODULE", "bench.apps.settings_ours")
    argv = ["taskset", "-c", "0", PY, "-m", *SERVERS[server](port)]
    srv = subprocess.Popen([*argv, f"bench.apps.{impl}:application"], cwd=tree, env=env)
    try:
        wait_for_port(port)
        lg = start_echo_load(tree, port, srv.pid, path, secs)
        time.sleep(1.5)
        w = worker(srv.pid)
        window = secs - 1.0
        c0, a, t0 = summed_counts(COUNTS), tasks(w), time.monotonic()
        if os.environ.get("SYNC9_PERF"):
            p = perf(w, window, "/tmp/sync9/perf-srv.txt", SYSCALLS)
            p.wait()
        elif os.environ.get("SYNC9_RECORD"):  # perf record of the server, per thread
            argv = ["taskset", "-c", "1", "perf", "record", "-q", "-g"]
            if os.environ["SYNC9_RECORD"] == "switch":  # where each context switch comes from
                argv += ["-e", "sched:sched_switch"]
            else:
                argv += ["-F", "2000"]
            argv += ["-o", "/tmp/sync9/perf.data", "-p", str(w), "--", "sleep", str(window)]
            subprocess.run(argv, check=False)
        else:
            time.sleep(window)
        b, t1 = tasks(w), time.monotonic()
        time.sleep(0.6)
        c1 = summed_counts(COUNTS)
        res = json.loads(lg.communicate()[0].decode().strip().splitlines()[-1])
    finally:
        srv.terminate()
        srv.wait()
    n = res["rps"] * (t1 - t0)
    zero = (0, 0, 0, 0, 0)
    diff = {t: [x - y for x, y in zip(b[t], a.get(t, zero))] for t in b}
    loop = diff.pop(str(w))
    pool = [sum(d[i] for d in diff.values()) for i in range(5)]
    tick = 1e6 / os.sysconf("SC_CLK_TCK")  # us
    busy = sum(1 for d in diff.values() if d[0])
    line = (
        f"{server} {impl} {path} rps {res['rps']:.0f} srv% {res['srv_cpu']} lg% {res['lg_cpu']}"
        f" loop_us {loop[0] / n / 1e3:.2f} pool_us {pool[0] / n / 1e3:.2f}"
        f" (threads {busy}) loop_wait_us {loop[1] / n / 1e3:.2f} pool_wait_us {pool[1] / n / 1e3:.2f}"
        f" loop_cs {loop[2] / n:.3f}+{loop[3] / n:.3f} pool_cs {pool[2] / n:.3f}+{pool[3] / n:.3f}"
        f" loop_sys_us {loop[4] * tick / n:.2f} pool_sys_us {pool[4] * tick / n:.2f}"
    )
    if os.environ.get("SYNC9_PERF"):
        sc = parse_perf("/tmp/sync9/perf-srv.txt")
        line += " sys/rt " + json.dumps({k: round(v / n, 3) for k, v in sc.items() if v})
    if c1:
        cd = {k: round((v - c0.get(k, 0)) / n, 4) for k, v in c1.items()}
        line += " counts/rt " + json.dumps(cd)
    print(line, flush=True)


if __name__ == "__main__":
    main()
