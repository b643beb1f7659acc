"""Redis's own time per EVALSHA of the inbox send script, old (a git revision's) and this
tree's, from INFO commandstats on a private redis-server (usec_per_call: the command's
execution, not the network).

usage: python -m bench.layer6_luacost PORT [REV] [N]
"""

from __future__ import annotations

import hashlib
import subprocess
import sys

import redis

from channels_layer.inbox_order import SEQUENCE_LUA
from channels_layer.redis_delivery import SEND_TO_PROCESS, inbox_ttl_ms


def old_script(rev: str) -> str:
    source = subprocess.run(
        ["git", "show", f"{rev}:channels_layer/redis_delivery.py"],  # noqa: S607
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return SEQUENCE_LUA + source.split("SEND_TO_PROCESS = (")[1].split('"""')[1]


def evalsha_usec(client: redis.Redis) -> tuple[int, int]:
    stats = client.info("commandstats").get("cmdstat_evalsha", {"calls": 0, "usec": 0})
    return stats["calls"], stats["usec"]


def main() -> None:
    port = int(sys.argv[1])
    rev = sys.argv[2] if len(sys.argv) > 2 else "HEAD"
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 20000
    client = redis.Redis(port=port)
    keys = ["l6cost:inbox", "l6cost:pending"]
    env = b"x" * 60
    for label, source, ttl in (
        (f"old ({rev})", old_script(rev), 61),
        ("new", SEND_TO_PROCESS, inbox_ttl_ms(60)),
    ):
        sha = client.script_load(source)
        assert sha == hashlib.sha1(source.encode()).hexdigest()  # noqa: S324
        for drained in (True, False):
            client.delete(*keys)
            calls0, usec0 = evalsha_usec(client)
            for _ in range(n):
                client.evalsha(sha, 2, *keys, "c", env, 100_000_000, ttl)
                if drained:
                    client.lpop(keys[0])
            calls, usec = evalsha_usec(client)
            what = "drained after each" if drained else "kept"
            print(f"{label:14s} 1 message, {what:19s} {(usec - usec0) / (calls - calls0):5.2f} us")
        args = [a for i in range(64) for a in (f"c{i}", env, 100_000_000, ttl)]
        client.delete(*keys)
        calls0, usec0 = evalsha_usec(client)
        for _ in range(n // 64):
            client.evalsha(sha, 2, *keys, *args)
            client.delete(keys[0])
        calls, usec = evalsha_usec(client)
        per = (usec - usec0) / (calls - calls0) / 64
        print(f"{label:14s} batch of 64: {per:5.2f} us per message")
    client.delete(*keys)


if __name__ == "__main__":
    main()
