"""The Redis Cluster failover drill with real servers: two Daphne processes of the chat on
a Cluster of 3 masters and 3 replicas (the project's settings with ``REDIS_CLUSTER=1``:
its layer and its chat's rate limits on the Cluster), 200 WebSocket clients in one room,
one client per Daphne posting without pause; the master holding the room's group slot is
SIGKILLed. No client may be closed, every post sent once delivery resumed must reach
every client, and the time delivery took to resume is printed."""

from __future__ import annotations

import asyncio
import time

from tests.redis_servers import RedisClusterServers
from tests.reliability.cluster import (
    chat_database,
    close_all,
    cluster,
    first_arrival,
    open_chat_clients,
    post_timed,
    seed_chat,
    tracebacks,
    wait_until,
)

CLIENTS = 200
POST_EVERY = 0.1  # seconds, per poster
RESUME_WITHIN = 15  # node timeout 2 s, the election, the layer's backoff, a loaded machine
AFTER_RESUME = 3  # seconds of posts after delivery resumed, each to reach everyone


async def drill(redis_cluster: RedisClusterServers, site, seed) -> None:
    clients = await open_chat_clients(site.daphnes, seed, CLIENTS, timeout=60)
    try:
        posters = [next(c for c in clients if c.node is node) for node in site.daphnes]
        for number, poster in enumerate(posters):
            assert await poster.post(f"warm-up-{number}")
        await wait_until(
            lambda: all(f"warm-up-{n}" in c.received for c in clients for n in range(2)), 30
        )
        with redis_cluster.client() as raw:  # the chat's rate limits are on the Cluster too
            assert any(raw.scan_iter(f"{site.prefix}:limits:frames:*"))
        victim = redis_cluster.owner(f"{site.prefix}:broadcast:{{{seed.group}}}")
        sent: dict[str, float] = {}
        killed_at = resumed_at = 0.0

        number = 0
        while not resumed_at or time.monotonic() < resumed_at + AFTER_RESUME:
            if number == 10:
                killed_at = time.monotonic()
                await asyncio.to_thread(victim.kill)
            await asyncio.gather(
                *(post_timed(p, f"post-{i}-{number}", sent) for i, p in enumerate(posters))
            )
            number += 1
            await asyncio.sleep(POST_EVERY)
            if killed_at and not resumed_at:
                resumed_at = first_arrival(clients, sent, killed_at)
                assert time.monotonic() < killed_at + RESUME_WITHIN, "delivery did not resume"
        later = [text for text, at in sent.items() if at > resumed_at + 0.5]
        await wait_until(lambda: all(t in c.received for c in clients for t in later), 20)
        closed = [c.index for c in clients if not c.open]
        lost = [
            t
            for t, at in sent.items()
            if at > killed_at and not all(t in c.received for c in clients)
        ]
        print(
            f"{CLIENTS} clients, {number} rounds: delivery resumed {resumed_at - killed_at:.2f} s "
            f"after the kill; {len(closed)} clients closed; {len(lost)} of "
            f"{sum(at > killed_at for at in sent.values())} posts after the kill missed "
            "by a client"
        )
        assert closed == []
        assert later
        assert site.exited() == {}
        for name, output in site.outputs().items():
            assert tracebacks(output) == 0, f"{name}:\n{output[-3000:]}"
    finally:
        await close_all(clients)


def test_a_master_killed_under_two_daphnes_and_200_clients():
    redis_cluster = RedisClusterServers().start()
    try:
        with chat_database() as database_url:
            seed = seed_chat(database_url, room="cluster-drill", users=20)
            # The project's own settings on a Cluster: its layer and its chat limits.
            env = {"REDIS_CLUSTER": "1"}
            # Seeded by a replica, which stays up (the client finds the rest).
            seed_node = next(
                n for n in redis_cluster.nodes if n not in redis_cluster.live_masters()
            )
            with cluster(seed_node.url, database_url, worker=False, env=env) as site:
                asyncio.run(drill(redis_cluster, site, seed))
    finally:
        redis_cluster.stop()
