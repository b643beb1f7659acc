"""Redis's own time (INFO commandstats, usec per call) for bits of the inbox send script
on a private redis-server: an empty script, each command the script runs, alone and in a
script, so the script's fixed cost and its per-call cost can be told apart.

usage: python -m bench.layer8_luaparts PORT [N] [ROUNDS]
"""

from __future__ import annotations

import sys

import redis

CASES = {
    "EVALSHA return 0": "return 0",
    "EVALSHA TIME": "return redis.call('TIME')[1]",
    "EVALSHA HSET": "return redis.call('HSET', KEYS[1], 'a', '1')",
    "EVALSHA TIME+HMGET+RPUSH+HSET": (
        "local t = redis.call('TIME') "
        "local s = redis.call('HMGET', KEYS[1], '#seq', '#exp', 'c') "
        "redis.call('RPUSH', KEYS[2], 'x') "
        "return redis.call('HSET', KEYS[1], '#seq', '1', 'c', '1')"
    ),
}


def usec(client: redis.Redis, command: str) -> tuple[int, int]:
    stats = client.info("commandstats").get(f"cmdstat_{command}", {"calls": 0, "usec": 0})
    return stats["calls"], stats["usec"]


def timed(client: redis.Redis, command: str, n: int, *args: object) -> float:
    calls0, usec0 = usec(client, command)
    for _ in range(n):
        client.execute_command(command, *args)
    calls, total = usec(client, command)
    return (total - usec0) / (calls - calls0)


def main() -> None:
    port = int(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    client = redis.Redis(port=port)
    keys = ["l8parts:h", "l8parts:l"]
    shas = {label: client.script_load(source) for label, source in CASES.items()}
    for index in range(rounds):
        figures = {label: timed(client, "evalsha", n, sha, 2, *keys) for label, sha in shas.items()}
        figures["TIME"] = timed(client, "time", n)
        figures["HSET"] = timed(client, "hset", n, keys[0], "a", "1")
        figures["RPUSH"] = timed(client, "rpush", n, keys[1], "x")
        client.delete(*keys)
        print(f"round {index + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
