"""Drill: 1,000 clients of one chat room leave one Daphne process at once.

One Daphne process of the reference chat with the Redis layer (a redis-server of the
test's own); 1,000 WebSocket clients (20 accounts) join one room, 50 handshakes at a time.
Then all leave at the same moment: half close cleanly (closing handshake), half drop their
TCP connection (RST), as a network failure would. Afterwards:

- no tracebacks in the server's output;
- no stale group members: PUBSUB NUMSUB of the room's group topic (and of its presence
  topic) drops to 0, nothing is left in Redis for the process, and a ``group_send`` into the
  room from a separate layer instance reaches nobody, without an error;
- the process's presence counter is empty: a newcomer sees only itself;
- printed: the time until membership reached 0, and the server's RSS before, with 1,000
  clients, and after.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import redis

from channels_layer.redis import RedisChannelLayer
from tests.redis_servers import RedisServer
from tests.reliability.cluster import (
    ChatSeed,
    Cluster,
    chat_database,
    close_all,
    cluster,
    merged_presence,
    open_chat_clients,
    seed_chat,
    tracebacks,
    wait_until,
    warning_lines,
)
from testsupport.system import raise_open_files_limit

CLIENTS = 1000
USERS = 20
CONCURRENCY = 50
EMPTY_WITHIN = 10.0  # seconds for the membership to reach 0 after the last client left
MiB = 1024 * 1024


@pytest.mark.timeout(120)
def test_a_thousand_clients_leaving_at_once_leave_no_members_and_no_tracebacks():
    soft, _ = raise_open_files_limit(CLIENTS + 1000)
    assert soft >= CLIENTS + 200, f"RLIMIT_NOFILE {soft} is too low for {CLIENTS} sockets"
    redis_server = RedisServer().start()
    try:
        with chat_database() as database_url:
            seed = seed_chat(database_url, room="crowd", users=USERS)
            # No heartbeat during the drill: presence traffic only from joins and leaves.
            env = {"CHAT_PRESENCE_INTERVAL": "60"}
            with cluster(redis_server.url, database_url, daphnes=1, worker=False, env=env) as site:
                asyncio.run(crowd_drill(site, seed))
                [server] = site.daphnes
                assert server.alive(), server.output
                found = tracebacks(server.output)
                errors = warning_lines(server.output)
                print(f"server output: {found} tracebacks, {len(errors)} warning/error lines")
                assert found == 0, server.output
                assert not errors, errors
    finally:
        redis_server.kill()


async def crowd_drill(site: Cluster, seed: ChatSeed) -> None:
    [server] = site.daphnes
    asks = f"presence-peers.{seed.group}"  # consumers.presence: one tracker per process
    rss_idle = server.rss()
    started = time.monotonic()
    clients = await open_chat_clients(
        site.daphnes, seed, CLIENTS, concurrency=CONCURRENCY, timeout=60
    )
    layer = RedisChannelLayer(hosts=[site.redis_url], prefix=site.prefix)
    newcomer = []
    try:
        opened = time.monotonic() - started
        await wait_until(lambda: site.subscribers(seed.group) == 1, 10)
        assert site.subscribers(asks) == 1
        rss_full = server.rss()

        # Everyone leaves at once: even clients close cleanly, odd ones drop the connection.
        leaving_at = time.monotonic()
        await asyncio.wait_for(
            asyncio.gather(
                *(c.close() if c.index % 2 == 0 else c.abort() for c in clients),
            ),
            30,
        )
        left_at = time.monotonic()
        empty_at = await wait_until(
            lambda: site.subscribers(seed.group) == 0 and site.subscribers(asks) == 0,
            EMPTY_WITHIN + (left_at - leaving_at),
        )
        codes = sorted({c.close_code for c in clients if c.index % 2 == 0})

        # A broadcast into the room now reaches nobody, without an error, and leaves
        # nothing behind in Redis.
        await layer.group_send(
            seed.group, {"type": "chat.message", "id": 0, "text": "anyone?", "user": "x"}
        )
        await asyncio.sleep(0.5)
        assert await asyncio.to_thread(leftovers, site) == {}
        await asyncio.sleep(1.0)  # let the process settle before measuring
        rss_after = server.rss()

        # Every disconnect() ran: the process's presence counts nobody but a newcomer.
        newcomer = await open_chat_clients(site.daphnes, seed, 1)
        await wait_until(lambda: bool(newcomer[0].presence), 10)
        seen = merged_presence(newcomer[0], time.monotonic())
        print(
            f"{CLIENTS} clients joined in {opened:.1f} s ({CONCURRENCY} at a time) and left "
            f"at once in {left_at - leaving_at:.2f} s (clean closes got {codes}); group "
            f"membership reached 0 {empty_at - left_at:.2f} s after the last one left "
            f"({empty_at - leaving_at:.2f} s after they started leaving); server RSS: "
            f"{rss_idle / MiB:.0f} MiB idle, {rss_full / MiB:.0f} MiB with {CLIENTS} clients, "
            f"{rss_after / MiB:.0f} MiB after they left"
        )
        assert seen == {newcomer[0].user}, seen
    finally:
        await close_all([*clients, *newcomer])
        await layer.close()


def leftovers(site: Cluster) -> dict[str, int]:
    """What Redis still holds for the room's members: subscriptions, direct members,
    messages queued in process inboxes."""
    found = {}
    with redis.Redis.from_url(site.redis_url, socket_timeout=5) as raw:
        for channel, count in raw.pubsub_numsub(*raw.pubsub_channels(f"{site.prefix}:*")):
            if count:
                found[channel.decode()] = count
        for key in raw.scan_iter(match=f"{site.prefix}:inbox:*"):
            if length := raw.llen(key):
                found[key.decode()] = length
        for key in raw.scan_iter(match=f"{site.prefix}:group:*"):
            if members := raw.zcard(key):
                found[key.decode()] = members
    return found
