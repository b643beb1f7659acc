"""The chat's limits and access checks hold across processes: two Daphne processes of the
reference project over Redis, then over a Redis Cluster (and PostgreSQL), driven by real
WebSocket clients, and a third process (``manage.py shell``) changing room membership as
an admin would."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest
from websockets.exceptions import ConnectionClosed

from chat.consumers import CLOSE_REVOKED, CLOSE_TOO_MANY_SOCKETS
from tests.redis_servers import REDIS_URL, RedisClusterServers
from tests.reliability.cluster import chat_database, cluster, connect_chat, seed_chat
from testsupport.chat import manage_seed_chat
from testsupport.processes import ManagePy

BURST = 10
LIMITS = {
    # Nothing refills during the test: exactly BURST posts per user, however many sockets.
    "CHAT_MESSAGES_PER_SECOND": "0.001",
    "CHAT_MESSAGE_BURST": str(BURST),
    "CHAT_MAX_SOCKETS_PER_USER": "3",
    "CHAT_MAX_SOCKETS_PER_ADDRESS": "0",
}


def manage_shell(env: dict[str, str], script: str) -> str:
    shell = ManagePy("shell", "-c", script, env=env)
    assert shell.process.wait(60) == 0, shell.output
    return shell.output


@pytest.fixture(scope="module", params=["redis", "cluster"])
def site(request):
    """The project on the machine's Redis, then on a Redis Cluster of its own by its
    settings' switch (``REDIS_CLUSTER=1``): the layer and the limits on the Cluster."""
    with contextlib.ExitStack() as stack:
        redis_url, env = REDIS_URL, dict(LIMITS)
        if request.param == "cluster":
            redis_cluster = RedisClusterServers().start()
            stack.callback(redis_cluster.stop)
            redis_url, env["REDIS_CLUSTER"] = redis_cluster.url, "1"
        database_url = stack.enter_context(chat_database())
        seed = seed_chat(database_url, room="duo", users=4)
        database = {"DATABASE_URL": database_url}
        manage_seed_chat(database, ["secret"], seed.users[2:4], private=True, sessions=False)
        running = stack.enter_context(cluster(redis_url, database_url, worker=False, env=env))
        yield running, seed


async def events(websocket, seconds: float) -> list[dict]:
    """Everything received within ``seconds``."""
    found: list[dict] = []
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(seconds):
            while True:
                found.append(json.loads(await websocket.recv()))
    return found


async def test_one_users_sockets_on_two_processes_share_one_rate_limit(site):
    running, seed = site
    first, second = running.daphnes
    async with (
        connect_chat(first, seed.room, seed.cookie(1)) as observer,
        connect_chat(first, seed.room, seed.cookie(0)) as a,
        connect_chat(first, seed.room, seed.cookie(0)) as b,
        connect_chat(second, seed.room, seed.cookie(0)) as c,
    ):
        # Welcome, history, presence: read off all four sockets at once.
        await asyncio.gather(*(events(websocket, 0.5) for websocket in (observer, a, b, c)))
        for number in range(BURST):
            for websocket in (a, b, c):
                await websocket.send(json.dumps({"type": "message", "text": f"{number}"}))
        # The 3 * BURST posts are sent at once: any beyond BURST would arrive with the
        # first BURST, so a second of quiet after them shows there are none.
        posted: list[dict] = []
        async with asyncio.timeout(10):
            while len(posted) < BURST:
                event = json.loads(await observer.recv())
                if event["type"] == "message":
                    posted.append(event)
        posted += [e for e in await events(observer, 1) if e["type"] == "message"]
        # One bucket for the user, wherever the sockets are: BURST posts, not 3 * BURST.
        assert len(posted) == BURST, posted


async def test_sockets_per_user_are_capped_across_processes(site):
    running, seed = site
    first, second = running.daphnes
    user = seed.cookie(3)
    async with (
        connect_chat(first, seed.room, user) as one,
        connect_chat(second, seed.room, user) as two,
        connect_chat(first, seed.room, user) as three,
    ):
        for websocket in (one, two, three):
            assert json.loads(await websocket.recv())["type"] == "welcome"
        async with connect_chat(second, seed.room, user) as fourth:
            with pytest.raises(ConnectionClosed):
                await events(fourth, 3)
            assert fourth.close_code == CLOSE_TOO_MANY_SOCKETS
    # Closed sockets free their slots, on every process.
    await asyncio.sleep(0.5)
    async with connect_chat(second, seed.room, user) as again:
        assert json.loads(await again.recv())["type"] == "welcome"


async def test_a_member_removed_by_another_process_is_closed_within_a_second(site):
    running, seed = site
    async with connect_chat(running.daphnes[1], "secret", seed.cookie(2)) as member:
        assert json.loads(await member.recv())["type"] == "welcome"
        closed_at = asyncio.create_task(wall_clock_of_close(member))
        # Another process, on the same Redis as the servers (as any admin process must be),
        # prints the wall-clock time just before its change.
        output = await asyncio.to_thread(
            manage_shell,
            running.env,
            "import time; from django.contrib.auth.models import User; "
            "from chat.models import Room; print('CHANGING', time.time()); "
            f"Room.objects.get(name='secret').members.remove(User.objects.get(username="
            f"{seed.users[2]!r}))",
        )
        changing = float(output.split("CHANGING ", 1)[1].split()[0])
        delay = await asyncio.wait_for(closed_at, 5) - changing
        assert member.close_code == CLOSE_REVOKED
        assert delay < 1, delay
        print(f"closed {delay:.3f} s after the membership change began")


async def wall_clock_of_close(websocket) -> float:
    """When the server closed ``websocket`` (time.time(), comparable across processes)."""
    with pytest.raises(ConnectionClosed):
        while True:
            await websocket.recv()
    return time.time()
