"""The Redis Cluster restart and partition drills with real servers: two Daphne processes
of the chat on a Cluster of 3 masters and 3 replicas, 100 WebSocket clients in one room,
one client per Daphne posting without pause. First the master holding the room's group
slot is restarted (SIGTERM, started again on its port with its append-only file, quicker
than the 5 s node timeout: no failover), then every node is paused for 2.5 s (SIGSTOP,
SIGCONT: a network partition between the Daphnes and the cluster), then every node is
restarted at once.

As with a single Redis with persistence restarted (see tests/channels_layer/
test_redis_cluster_restart.py): no client closed, every post reaches every client (a
post made during the event waits for the cluster, within the layer's ``retry_timeout``),
delivery back within a few seconds, and in each Daphne's output at most one
"unreachable" and one "reachable again" line per event, and no other warning, error or
traceback (redis-py's own reports of the outage are DEBUG lines, see redis_health)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable

import pytest

from tests.redis_servers import RedisClusterServers
from tests.reliability.cluster import (
    Cluster,
    chat_database,
    close_all,
    cluster,
    first_arrival,
    open_chat_clients,
    post_timed,
    seed_chat,
    tracebacks,
    wait_until,
    warning_lines,
)

CLIENTS = 100
POST_EVERY = 0.1  # seconds, per poster
RESUME_WITHIN = 10  # seconds from the cluster's return (2 s of them Redis's own, see above)
AFTER_RESUME = 2  # seconds of posts after delivery resumed
PAUSE = 2.5  # seconds every node is paused
OUTAGE_LINE = re.compile(r"is (unreachable|reachable again)")


async def phase(site: Cluster, clients, posters, name: str, event: Callable[[], None]) -> None:
    """Posts without pause, ``event()`` (in a thread) after 10 rounds, posts on until
    ``AFTER_RESUME`` seconds after delivery resumed; then check the promises."""
    outputs_before = {n: len(output) for n, output in site.outputs().items()}
    sent: dict[str, float] = {}
    ended_at = resumed_at = 0.0

    happening = None
    number = 0
    while not resumed_at or time.monotonic() < resumed_at + AFTER_RESUME:
        if number == 10:
            happening = asyncio.ensure_future(asyncio.to_thread(event))
        await asyncio.gather(
            *(post_timed(p, f"{name}-{i}-{number}", sent) for i, p in enumerate(posters))
        )
        number += 1
        await asyncio.sleep(POST_EVERY)
        if happening is not None and happening.done() and not ended_at:
            happening.result()
            ended_at = time.monotonic()
        if ended_at and not resumed_at:
            resumed_at = first_arrival(clients, sent, ended_at)
            assert time.monotonic() < ended_at + RESUME_WITHIN, "delivery did not resume"
    with contextlib.suppress(TimeoutError):  # what is missing then is counted below
        await wait_until(lambda: all(t in c.received for c in clients for t in sent), 20)
    closed = [c.index for c in clients if not c.open]
    missed = [t for t in sent if not all(t in c.received for c in clients)]
    lines = {
        n: output[outputs_before.get(n, 0) :].splitlines() for n, output in site.outputs().items()
    }
    outage = {n: [line for line in mine if OUTAGE_LINE.search(line)] for n, mine in lines.items()}
    others = {
        n: [
            line
            for line in warning_lines("\n".join(mine))
            # No worker reads the moderation queue here: it fills, and says so.
            if not OUTAGE_LINE.search(line) and "'chat-moderation' is at its capacity" not in line
        ]
        for n, mine in lines.items()
    }
    print(
        f"{name}: {number} rounds; delivery resumed {resumed_at - ended_at:.2f} s after the "
        f"cluster returned; {len(closed)} clients closed; {len(missed)} of {len(sent)} posts "
        f"missed by a client; outage lines per process: "
        f"{ {n: len(mine) for n, mine in outage.items()} }; other warnings and errors: "
        f"{ {n: (len(mine), mine[:2]) for n, mine in others.items() if mine} }"
    )
    assert closed == []
    assert missed == []
    assert site.exited() == {}
    assert others == {n: [] for n in others}, others
    for n, mine in outage.items():
        assert len([line for line in mine if "is unreachable" in line]) <= 1, mine
        assert len([line for line in mine if "reachable again" in line]) <= 1, mine
        assert tracebacks("\n".join(lines[n])) == 0, "\n".join(lines[n])[-3000:]


async def drill(redis_cluster: RedisClusterServers, site: Cluster, seed) -> None:
    clients = await open_chat_clients(site.daphnes, seed, CLIENTS, timeout=60)
    try:
        posters = [next(c for c in clients if c.node is node) for node in site.daphnes]
        for number, poster in enumerate(posters):
            assert await poster.post(f"warm-up-{number}")
        await wait_until(
            lambda: all(f"warm-up-{n}" in c.received for c in clients for n in range(2)), 30
        )
        masters = {node.port for node in redis_cluster.live_masters()}
        victim = redis_cluster.owner(f"{site.prefix}:broadcast:{{{seed.group}}}")

        def restart() -> None:
            victim.stop()
            victim.start()

        def pause() -> None:
            for node in redis_cluster.nodes:
                node.pause()
            time.sleep(PAUSE)
            for node in redis_cluster.nodes:
                node.resume()

        def restart_all() -> None:
            for node in redis_cluster.nodes:
                node.stop()
            for node in redis_cluster.nodes:
                node.start()

        await phase(site, clients, posters, "restart", restart)
        await asyncio.to_thread(redis_cluster.wait_until_ok)
        await phase(site, clients, posters, "pause", pause)
        await asyncio.to_thread(redis_cluster.wait_until_ok)
        await phase(site, clients, posters, "restart-all", restart_all)
        await asyncio.to_thread(redis_cluster.wait_until_ok)
        assert {node.port for node in redis_cluster.live_masters()} == masters, "a failover"
    finally:
        await close_all(clients)


@pytest.mark.timeout(180)  # three events, 100 clients: 23 s here, 43 s with both cores busy
def test_cluster_restarted_and_paused_under_two_daphnes_and_100_clients():
    redis_cluster = RedisClusterServers(node_timeout=5000, persistent=True).start()
    try:
        with chat_database() as database_url:
            seed = seed_chat(database_url, room="cluster-restart-drill", users=20)
            env = {"REDIS_CLUSTER": "1"}  # the project's own settings on a Cluster
            # Seeded by a replica, which is not restarted (the client finds the rest).
            seed_node = next(
                n for n in redis_cluster.nodes if n not in redis_cluster.live_masters()
            )
            with cluster(seed_node.url, database_url, worker=False, env=env) as site:
                asyncio.run(drill(redis_cluster, site, seed))
    finally:
        redis_cluster.stop()
