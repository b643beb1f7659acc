"""Redis's own time (INFO commandstats) to write an inbox sequence number in Lua, per
number: '%017.0f' (before part 8), '%017d' (part 8; wrong where a C long has 32 bits) and
inbox_order's ``numbered`` (two 9-digit '%d'), each formatting ``PER`` numbers in one
script call so the script's fixed cost is divided away; an empty loop for scale.

usage: python -m bench.revlayer8_luaformat PORT [CALLS] [ROUNDS]
"""

from __future__ import annotations

import sys

import redis

from bench.layer8_luaparts import usec
from channels_layer.inbox_order import QUEUE_LUA

PER = 1000
LOOP = (
    "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000000 + tonumber(t[2]) "
    "local s for i = 1, {per} do s = {expr} end return s"
)
CASES = {
    "loop": LOOP.format(per=PER, expr="now + i"),
    "%017.0f": LOOP.format(per=PER, expr="string.format('%017.0f', now + i)"),
    "%017d": LOOP.format(per=PER, expr="string.format('%017d', now + i)"),
    "numbered": QUEUE_LUA + LOOP.format(per=PER, expr="numbered(now + i)"),
}


def main() -> None:
    port = int(sys.argv[1])
    calls = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    client = redis.Redis(port=port)
    shas = {label: client.script_load(source) for label, source in CASES.items()}
    for index in range(rounds):
        figures = []
        for label, sha in shas.items():
            calls0, usec0 = usec(client, "evalsha")
            for _ in range(calls):
                client.evalsha(sha, 0)
            done, total = usec(client, "evalsha")
            figures.append(f"{label} {1000 * (total - usec0) / ((done - calls0) * PER):.0f}")
        print(f"round {index + 1}, ns per number: " + ", ".join(figures), flush=True)


if __name__ == "__main__":
    main()
