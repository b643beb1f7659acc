"""What Lua's number formatting costs Redis inside a script like the inbox send script:
the same five calls (TIME, HMGET, RPUSH, HSET, PEXPIRE) with no formatting, with two
``string.format('%017.0f')`` (what the scripts did before part 8) and with two
``string.format('%017d')``; Redis's own usec per EVALSHA (INFO commandstats), one message
at a time, the inbox drained after each, on a private redis-server. Also checks that the
two formats give the same bytes for numbers like the scripts'.

usage: python -m bench.layer8_luaformat PORT [N] [ROUNDS]
"""

from __future__ import annotations

import sys

import redis

from bench.layer8_luaparts import usec
from channels_layer.redis_delivery import inbox_ttl_ms

HEAD = (
    "local t = redis.call('TIME') "
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2]) "
    "local s = redis.call('HMGET', KEYS[2], '#seq', '#exp', ARGV[1]) "
)
TAIL = "redis.call('PEXPIRE', KEYS[1], ARGV[4]) return {1}"
CASES = {
    "none": HEAD + "redis.call('RPUSH', KEYS[1], ARGV[2]) "
    "redis.call('HSET', KEYS[2], '#seq', '1', ARGV[1], '1') " + TAIL,
    "%017.0f x2": HEAD + "redis.call('RPUSH', KEYS[1], string.format('%017.0f', now) .. ARGV[2]) "
    "redis.call('HSET', KEYS[2], '#seq', string.format('%017.0f', now), ARGV[1], '1') " + TAIL,
    "%017d x2": HEAD + "redis.call('RPUSH', KEYS[1], string.format('%017d', now) .. ARGV[2]) "
    "redis.call('HSET', KEYS[2], '#seq', string.format('%017d', now), ARGV[1], '1') " + TAIL,
}
SAME = (
    "local t = redis.call('TIME') "
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2]) + tonumber(ARGV[1]) "
    "return {string.format('%017.0f', now), string.format('%017d', now)}"
)


def main() -> None:
    port = int(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    client = redis.Redis(port=port)
    for added in (0, 1, 999_999, 10**15, 7 * 10**15):
        floats, ints = client.eval(SAME, 0, added)
        assert floats == ints, (floats, ints)
    keys, envelope, ttl = ["l8fmt:inbox", "l8fmt:pending"], b"x" * 60, inbox_ttl_ms(60)
    shas = {label: client.script_load(source) for label, source in CASES.items()}
    for index in range(rounds):
        figures = []
        for label, sha in shas.items():
            client.delete(*keys)
            calls0, usec0 = usec(client, "evalsha")
            for _ in range(n):
                client.evalsha(sha, 2, *keys, "c", envelope, 100_000_000, ttl)
                client.lpop(keys[0])
            calls, total = usec(client, "evalsha")
            figures.append(f"{label} {(total - usec0) / (calls - calls0):.2f}")
        client.delete(*keys)
        print(f"round {index + 1}: " + ", ".join(figures), flush=True)


if __name__ == "__main__":
    main()
