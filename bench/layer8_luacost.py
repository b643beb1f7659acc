"""Redis's own time per EVALSHA of the inbox send script: another tree's (a ``git archive``
export, say) against this tree's, alternating, from ``INFO commandstats`` on a private
redis-server (usec_per_call: the command's execution, not the network), with a plain
RPUSH for scale. Each figure is given twice: Redis's count (wall time, so it counts a
descheduled Redis too) and the redis-server process's CPU time (user + system, from /proc,
the network's share included) per message.

usage: python -m bench.layer8_luacost PORT OTHER_TREE [N] [ROUNDS]
"""

from __future__ import annotations

import os
import subprocess
import sys

import redis

from bench.layer8_luaparts import usec
from channels_layer.redis_delivery import SEND_TO_PROCESS, inbox_ttl_ms

PRINT = "from channels_layer.redis_delivery import SEND_TO_PROCESS; print(SEND_TO_PROCESS)"
KEYS = ["l8cost:inbox", "l8cost:pending"]
ENV = b"x" * 60


def script_of(tree: str) -> str:
    env = {**os.environ, "PYTHONPATH": tree}
    return subprocess.run(
        [sys.executable, "-c", PRINT], env=env, cwd=tree, capture_output=True, text=True, check=True
    ).stdout[:-1]


def cpu_us(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1e6 / os.sysconf("SC_CLK_TCK")


def per_call(client: redis.Redis, command: str, run: object, per: int = 1) -> str:
    """``counted/cpu`` us per call of ``command`` while ``run()`` runs, over ``per``."""
    pid = client.info("server")["process_id"]
    calls0, usec0 = usec(client, command)
    cpu0 = cpu_us(pid)
    run()  # type: ignore[operator]
    cpu = cpu_us(pid) - cpu0
    calls, total = usec(client, command)
    count = (calls - calls0) * per
    return f"{(total - usec0) / count:5.2f}/{cpu / count:5.1f}"


def measure(client: redis.Redis, sha: str, n: int) -> list[str]:
    ttl = inbox_ttl_ms(60)
    client.delete(*KEYS)

    def one(drain: bool) -> None:
        for _ in range(n):
            client.evalsha(sha, 2, *KEYS, "c", ENV, 100_000_000, ttl)
            if drain:
                client.lpop(KEYS[0])

    def batch(channels: int) -> None:
        args = [a for i in range(64) for a in (f"c{i % channels}", ENV, 100_000_000, ttl)]
        for _ in range(n // 64):
            client.evalsha(sha, 2, *KEYS, *args)
            client.delete(KEYS[0])

    figures = [per_call(client, "evalsha", lambda: one(True))]
    client.delete(*KEYS)
    figures.append(per_call(client, "evalsha", lambda: one(False)))
    for channels in (64, 4):
        client.delete(*KEYS)
        figures.append(per_call(client, "evalsha", lambda c=channels: batch(c), 64))
    client.delete(*KEYS)
    return figures


def main() -> None:
    port, other = int(sys.argv[1]), sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 20000
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    client = redis.Redis(port=port)
    shas = {
        "other": client.script_load(script_of(other)),
        "this": client.script_load(SEND_TO_PROCESS),
    }
    print(
        "us per message: 1 msg drained after each | 1 msg kept | batch 64 over 64 channels"
        " | batch 64 over 4 channels"
    )
    for index in range(rounds):
        for label, sha in shas.items():
            figures = measure(client, sha, n)
            print(f"round {index + 1} {label:5s} " + " | ".join(figures))
        rpush = per_call(client, "rpush", lambda: [client.rpush(KEYS[0], ENV) for _ in range(n)])
        client.delete(*KEYS)
        print(f"round {index + 1} RPUSH {rpush}")


if __name__ == "__main__":
    main()
