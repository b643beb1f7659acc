"""A chat socket busy with its own post keeps the room's messages that arrive meanwhile.

What made the Redis outage drill (test_outages.py) lose broadcasts after Redis came back:
the posters and probers, busy with their own posts (a few round trips each, slow on a
loaded machine; several queued while Redis was away), handle one broadcast per post while
the room carries about 50 a second, so their channels filled past the layer's default
capacity of 100. Here the busy spell is made on purpose: the poster's INSERT waits on a
table lock the test holds while a burst goes to the room.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import psycopg
import pytest
from django.conf import settings

from channels_layer.redis import RedisChannelLayer
from tests.redis_servers import RedisServer
from tests.reliability.cluster import (
    chat_database,
    close_all,
    cluster,
    open_chat_clients,
    seed_chat,
    wait_until,
    warning_lines,
)

# More than the layer's default capacity (100), less than the project's for consumer
# channels (project/settings.py).
BURST = 300

pytestmark = pytest.mark.timeout(120)


def test_a_chat_socket_busy_posting_receives_every_broadcast_of_a_burst():
    capacity = settings.CHANNEL_LAYERS["default"]["CONFIG"]["channel_capacity"]["specific.*"]
    assert 100 < BURST < capacity
    redis_server = RedisServer().start()
    try:
        with chat_database() as database_url:
            seed = seed_chat(database_url, room="busy", users=2)
            with cluster(redis_server.url, database_url, daphnes=1, worker=False) as site:
                poster, listener = asyncio.run(burst_while_busy(site, seed, database_url))
                output = site.daphnes[0].output
    finally:
        redis_server.kill()
    expected = [*(f"burst-{n}" for n in range(BURST)), "busy"]
    missed = [text for text in expected if text not in poster]
    print(
        f"a burst of {BURST} broadcasts while a socket's post waited, then its post: the "
        f"busy socket received {len(expected) - len(missed)}/{len(expected)}, an idle one "
        f"{sum(text in listener for text in expected)}"
    )
    assert not missed, f"the busy socket missed {len(missed)}: {missed[:5]}..."
    assert warning_lines(output) == [], output


async def burst_while_busy(site, seed, database_url) -> tuple[dict, dict]:
    """Post from one socket while its save waits, send the burst to the room, let the
    save go; what each socket received."""
    poster, listener = await open_chat_clients(site.daphnes, seed, 2)
    layer = RedisChannelLayer(hosts=[site.redis_url], prefix=site.prefix)
    burst = [f"burst-{n}" for n in range(BURST)]
    try:
        async with messages_locked(database_url) as saves_waiting:
            assert await poster.post("busy")
            async with asyncio.timeout(15):
                while not await saves_waiting():
                    await asyncio.sleep(0.02)
            for n, text in enumerate(burst):
                await layer.group_send(
                    seed.group, {"type": "chat.message", "id": n, "text": text, "user": "x"}
                )
            await wait_until(lambda: all(text in listener.received for text in burst), 15)
        # The post is saved and sent now, and comes back after the burst queued before it
        # (if its socket's channel has room left for it).
        with contextlib.suppress(TimeoutError):
            await wait_until(lambda: "busy" in poster.received, 10)
        return dict(poster.received), dict(listener.received)
    finally:
        await close_all([poster, listener])
        await layer.close()


@contextlib.asynccontextmanager
async def messages_locked(database_url: str) -> AsyncIterator[Callable[[], Awaitable[bool]]]:
    """Hold a lock on the chat's message table that makes every INSERT wait; yields a
    check: whether an INSERT is waiting on it."""
    connection = await psycopg.AsyncConnection.connect(database_url)
    try:
        async with connection.transaction(), connection.cursor() as cursor:
            await cursor.execute("LOCK TABLE chat_message IN SHARE MODE")

            async def waiting() -> bool:
                await cursor.execute(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted"
                    " AND relation = 'chat_message'::regclass"
                )
                row = await cursor.fetchone()
                return bool(row and row[0])

            yield waiting
    finally:
        await connection.close()
