"""Outage drills on real processes over loopback: Redis killed, a Daphne process killed.

Redis killed (SIGKILL) and restarted under a chatting room: two Daphne processes and a
``runworker`` of the reference chat share a redis-server of the test's own; 200 WebSocket
clients (100 per Daphne, 20 accounts) are in one room while six of them post a message
every 1.5 s. Redis is killed for ``OUTAGE`` seconds and started again on the same port;
one more message is posted as it dies. Then a probe message is posted every 100 ms from
each Daphne until every client still connected has received one. The drill runs once (a
module fixture); each ``test_redis_outage_*`` test checks one promise on its report:

- no process exits;
- every client still connected receives messages again within ``RECOVERY_BOUND`` (2 s)
  of Redis answering again; asserted for the clients that never post, printed for all: a
  client whose own post was waiting out the outage handles nothing else until that post
  returns (a consumer handles one message at a time);
- messages lost: those posted during the outage (a client sent the frame between the kill
  and the restart) that at least one client connected throughout never received; printed,
  not asserted (the layer is at-most-once);
- the outage is logged once per process (two lines: unreachable, reachable again), without
  tracebacks or other errors;
- clients stay connected; a client that posts while Redis is away gets an
  ``unavailable`` error event and its post is not kept.

A Daphne process killed (SIGKILL): its group memberships go with its Redis connections,
and its users leave the other processes' presence lists after the presence TTL.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import re
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import pytest

from channels_layer.redis import BACKOFF_FIRST, BACKOFF_MAX, RedisChannelLayer
from tests.redis_servers import RedisServer
from tests.reliability.cluster import (
    ChatClient,
    ChatSeed,
    Cluster,
    chat_database,
    close_all,
    cluster,
    merged_presence,
    open_chat_clients,
    seed_chat,
    tracebacks,
    warning_lines,
)

CLIENTS = 200
USERS = 20
POSTERS_PER_DAPHNE = 3
POST_EVERY = 1.5  # seconds between two posts of one poster: 4 messages/s in the room
PROBERS_PER_DAPHNE = 5  # probes rotate over them: 2 posts/s each, under the rate limit
PROBE_EVERY = 0.1
# Seconds Redis is down: longer than the layer's retry_timeout (5 s) plus its longest
# backoff, so a message posted as Redis dies always gives up before it returns.
OUTAGE = 8.0
RECOVERY_BOUND = 2.0
RECOVERY_TIMEOUT = 30.0  # give up probing after this long
SETTLE = 3.0  # seconds for messages in flight to arrive before counting losses
# Outage lines per process per outage: one report, "unreachable" and "reachable again".
LOG_LINES_BOUND = 2
PRESENCE_INTERVAL = 0.5  # seconds between presence heartbeats in the Daphne-kill drill

# The drill (in the first test's setup) and its teardown (in the last test's) count here.
pytestmark = pytest.mark.timeout(150)
# The layer's outage lines (channels_layer/redis.py, _Health).
OUTAGE_LINE = re.compile(r"Redis \S+ is (unreachable|reachable again)|reconnect", re.IGNORECASE)


@dataclass
class Post:
    text: str
    client: ChatClient
    sent_at: float


@dataclass
class OutageReport:
    clients: list[ChatClient]
    posts: list[Post]
    probes: list[Post]
    killed_at: float
    restarted_at: float
    restarted_wall: float  # the same moment on time.time(), to compare with log lines
    # Each process's output from the kill on, and all of it, by process name.
    after_kill: dict[str, str]
    outputs: dict[str, str]
    exited: dict[str, int]
    first_probe: dict[int, float] = field(default_factory=dict)
    # The clients the servers closed during the drill (the test closes all afterwards).
    closed_indexes: set[int] = field(default_factory=set)

    @property
    def connected(self) -> list[ChatClient]:
        """The clients connected from start to end."""
        return [client for client in self.clients if client.index not in self.closed_indexes]

    @property
    def closed(self) -> list[ChatClient]:
        return [client for client in self.clients if client.index in self.closed_indexes]

    @property
    def listeners(self) -> list[ChatClient]:
        """The clients connected throughout that never posted (no poster, no prober)."""
        posted = {p.client.index for p in (*self.posts, *self.probes)}
        return [client for client in self.connected if client.index not in posted]

    def recovery(self, clients: list[ChatClient]) -> float | None:
        """Seconds from Redis answering again until the last of ``clients`` received a
        probe; None if one never did within RECOVERY_TIMEOUT."""
        times = [self.first_probe.get(client.index) for client in clients]
        if not times or None in times:
            return None
        return max(t for t in times if t is not None) - self.restarted_at

    @property
    def during_outage(self) -> list[Post]:
        return [p for p in self.posts if self.killed_at <= p.sent_at < self.restarted_at]

    def lost(self, posts: list[Post]) -> list[Post]:
        """Posts that at least one client connected throughout never received."""
        return [p for p in posts if any(p.text not in c.received for c in self.connected)]

    def reached_nobody(self, posts: list[Post]) -> list[Post]:
        return [p for p in posts if not any(p.text in c.received for c in self.clients)]

    def peak_rate_after_restart(self) -> int:
        """The most chat messages a listener received in one second after the restart:
        the room's traffic that every consumer's channel must absorb while it is busy."""
        if not self.listeners:
            return 0
        received = self.listeners[0].received.values()
        times = sorted(t for t in received if t >= self.restarted_at)
        return max((bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times)), default=0)


async def chatter(posters: list[ChatClient], posts: list[Post], stop: asyncio.Event) -> None:
    """Each poster posts every POST_EVERY seconds, staggered; a closed poster stops."""

    async def one(number: int, poster: ChatClient) -> None:
        await asyncio.sleep(number * POST_EVERY / len(posters))
        sent = 0
        while not stop.is_set() and poster.open:
            text = f"chat-{poster.index}-{sent}"
            sent_at = time.monotonic()
            if await poster.post(text):
                posts.append(Post(text, poster, sent_at))
            sent += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POST_EVERY)

    await asyncio.gather(*(one(n, poster) for n, poster in enumerate(posters)))


async def wait_all_received(clients: list[ChatClient], texts: list[str], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not all(text in c.received for c in clients if c.open for text in texts):
            await asyncio.sleep(0.05)


async def run_drill(redis_server: RedisServer, site: Cluster, seed: ChatSeed) -> dict:
    clients = await open_chat_clients(site.daphnes, seed, CLIENTS, timeout=90)
    try:
        return await outage_and_recovery(redis_server, site, clients)
    except BaseException:
        await close_all(clients)
        raise


async def outage_and_recovery(
    redis_server: RedisServer, site: Cluster, clients: list[ChatClient]
) -> dict:
    by_node = {node.name: [c for c in clients if c.node is node] for node in site.daphnes}
    # Cross-process delivery works before anything happens.
    warmup = []
    for number, node_clients in enumerate(by_node.values()):
        warmup.append(f"warm-up-{number}")
        assert await node_clients[-1].post(warmup[-1])
    await wait_all_received(clients, warmup, 30)

    posters = [c for node_clients in by_node.values() for c in node_clients[:POSTERS_PER_DAPHNE]]
    probers = {
        key: node_clients[POSTERS_PER_DAPHNE : POSTERS_PER_DAPHNE + PROBERS_PER_DAPHNE]
        for key, node_clients in by_node.items()
    }
    posts: list[Post] = []
    stop = asyncio.Event()
    chatting = asyncio.ensure_future(chatter(posters, posts, stop))
    try:
        await asyncio.sleep(3)  # normal chat first
        marks = {name: len(process.lines) for name, process in site.named().items()}
        killed_at = time.monotonic()
        await asyncio.to_thread(redis_server.kill)
        # A post as Redis dies (besides the chatter's, which fall anywhere in the outage).
        first = next(iter(by_node.values()))[POSTERS_PER_DAPHNE + PROBERS_PER_DAPHNE]
        sent_at = time.monotonic()
        assert await first.post("outage-first")
        posts.append(Post("outage-first", first, sent_at))
        await asyncio.sleep(OUTAGE - (time.monotonic() - killed_at))
        await asyncio.to_thread(redis_server.start)
        restarted_at, restarted_wall = time.monotonic(), time.time()

        probes: list[Post] = []
        first_probe: dict[int, float] = {}
        with_probe: set[int] = set()
        deadline = restarted_at + RECOVERY_TIMEOUT
        turn = 0
        while time.monotonic() < deadline:
            for pool in probers.values():
                prober = next((c for c in pool[turn % len(pool) :] + pool if c.open), None)
                if prober is not None:
                    text = f"probe-{len(probes)}"
                    sent_at = time.monotonic()
                    if await prober.post(text):
                        probes.append(Post(text, prober, sent_at))
            turn += 1
            await asyncio.sleep(PROBE_EVERY)
            for client in clients:
                if client.index not in with_probe and any(
                    p.text in client.received for p in probes
                ):
                    with_probe.add(client.index)
            if all(c.index in with_probe for c in clients if c.open):
                break
        await asyncio.sleep(SETTLE)
    finally:
        stop.set()
        await asyncio.wait_for(chatting, 10)
    for client in clients:
        seen = [client.received[p.text] for p in probes if p.text in client.received]
        if seen:
            first_probe[client.index] = min(seen)
    after_kill = {
        name: "".join(process.lines[marks[name] :]) for name, process in site.named().items()
    }
    return {
        "clients": clients,
        "posts": posts,
        "probes": probes,
        "killed_at": killed_at,
        "restarted_at": restarted_at,
        "restarted_wall": restarted_wall,
        "after_kill": after_kill,
        "first_probe": first_probe,
        "closed_indexes": {client.index for client in clients if not client.open},
    }


@pytest.fixture(scope="module")
def outage():
    """Run the drill once; the report every test of this module checks."""
    redis_server = RedisServer().start()
    try:
        with chat_database() as database_url:
            seed = seed_chat(database_url, room="outage", users=USERS)
            with cluster(redis_server.url, database_url, daphnes=2, worker=True) as site:

                async def drill() -> dict:
                    result: dict = {}
                    try:
                        result = await run_drill(redis_server, site, seed)
                        # What the servers did, before the clients leave.
                        result["exited"] = site.exited()
                        result["outputs"] = site.outputs()
                        return result
                    finally:
                        await close_all(result.get("clients", []))

                result = asyncio.run(drill())
                yield OutageReport(**result)
    finally:
        redis_server.kill()


def test_redis_outage_no_process_exits(outage: OutageReport):
    closed = Counter(client.close_code for client in outage.closed)
    errors = Counter(e.get("code") for c in outage.clients for e in c.errors)
    print(
        f"Redis down {outage.restarted_at - outage.killed_at:.1f} s; "
        f"{len(outage.connected)}/{CLIENTS} clients stayed connected; "
        f"closed by code: {dict(closed)}; error events by code: {dict(errors)}"
    )
    assert outage.exited == {}, outage.outputs


def test_redis_outage_connected_clients_receive_messages_again(outage: OutageReport):
    everyone, listeners = outage.recovery(outage.connected), outage.recovery(outage.listeners)
    missing = [c.index for c in outage.connected if c.index not in outage.first_probe]
    per_node = {}
    for client in outage.connected:
        late = outage.first_probe.get(client.index, float("inf")) - outage.restarted_at
        per_node[client.node.name] = max(per_node.get(client.node.name, 0.0), late)
    back = {name: reachable_again(output, outage) for name, output in outage.after_kill.items()}
    probers = {p.client.index for p in outage.probes}
    slowest = sorted(
        outage.connected,
        key=lambda c: outage.first_probe.get(c.index, float("inf")),
        reverse=True,
    )[:5]
    print(
        f"recovery after Redis came back: the {len(outage.listeners)} clients that never post "
        f"received a probe within {seconds(listeners)}; all {len(outage.connected)} connected "
        f"clients, probers included, within {seconds(everyone)} ({len(outage.probes)} probes "
        f"posted; asserted for the listeners: {RECOVERY_BOUND} s). Last client of each Daphne: "
        f"{fmt(per_node)}; 'reachable again' logged after: {fmt(back)}; slowest clients: "
        + ", ".join(
            f"#{c.index} on {c.node.name}{' (prober)' if c.index in probers else ''} "
            f"{outage.first_probe.get(c.index, float('inf')) - outage.restarted_at:.2f} s"
            for c in slowest
        )
    )
    assert not missing, f"clients {missing} never received a probe in {RECOVERY_TIMEOUT} s"
    assert listeners is not None and listeners <= RECOVERY_BOUND, listeners


def seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


def fmt(values: dict[str, float | None]) -> str:
    return ", ".join(f"{name} {seconds(value)}" for name, value in values.items())


def reachable_again(output: str, outage: OutageReport) -> float | None:
    """Seconds from the restart to the process's 'reachable again' log line."""
    for line in output.splitlines():
        if "reachable again" in line:
            stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            return stamp - outage.restarted_wall
    return None


def test_redis_outage_messages_lost_are_counted(outage: OutageReport):
    during = outage.during_outage
    lost = outage.lost(during)
    nobody = outage.reached_nobody(during)
    before = [p for p in outage.posts if p.sent_at < outage.killed_at - 1]
    print(
        f"messages posted during the {OUTAGE:.0f} s outage: {len(during)}; lost (missed by "
        f"at least one of the {len(outage.connected)} clients connected throughout): "
        f"{len(lost)}, of which reached no client: {len(nobody)}; "
        f"lost among the {len(before)} posted before the outage: {len(outage.lost(before))}"
    )
    assert during, "nobody posted during the outage: the drill measured nothing"


def test_redis_outage_is_logged_without_a_flood(outage: OutageReport):
    counts = {
        name: sum(1 for line in output.splitlines() if OUTAGE_LINE.search(line))
        for name, output in outage.after_kill.items()
    }
    print(f"outage/reconnect log lines per process: {counts}")
    for name, count in counts.items():
        assert 1 <= count <= LOG_LINES_BOUND, f"{name}:\n{outage.after_kill[name]}"


def test_redis_outage_leaves_no_tracebacks_or_other_errors(outage: OutageReport):
    found = {name: tracebacks(output) for name, output in outage.outputs.items()}
    others = {
        name: [line for line in warning_lines(output) if not OUTAGE_LINE.search(line)]
        for name, output in outage.after_kill.items()
    }
    print(
        f"tracebacks per process: {found}; other warning/error lines: {others}; room "
        f"traffic after the restart: up to {outage.peak_rate_after_restart()} messages/s "
        "reached a listener (each followed by its moderation verdict)"
    )
    assert found == dict.fromkeys(found, 0), outage.outputs
    assert all(not lines for lines in others.values()), others


def test_redis_outage_clients_stay_connected(outage: OutageReport):
    closed = Counter((c.close_code, c.close_reason) for c in outage.closed)
    posters = sum(1 for c in outage.closed if any(p.client is c for p in outage.posts))
    print(f"clients closed: {len(outage.closed)} ({posters} of them posters), by code: {closed}")
    assert not outage.closed


# One outage, one report --------------------------------------------------------------


async def test_one_outage_is_reported_once_even_with_idle_pooled_connections(caplog):
    """What makes the drill above log one Redis restart twice in some processes: a layer
    that had several pooled connections open sees the outage (reported once) and Redis come
    back (reported), then fails on the first use of each connection left idle in the pool
    across the restart, and reports a new outage."""
    caplog.set_level(logging.WARNING, logger="channels_layer.redis")
    server = RedisServer().start()
    layer = RedisChannelLayer(hosts=[server.url], prefix=f"stale-{secrets.token_hex(4)}")

    async def busy() -> None:
        """Eight pooled connections in use at once: blocking receives hold one each."""
        async with asyncio.timeout(10):
            receiving = [asyncio.ensure_future(layer.receive(f"idle-{n}")) for n in range(8)]
            await asyncio.sleep(0.2)
            for n in range(8):
                await layer.send(f"idle-{n}", {"type": "wake"})
            await asyncio.gather(*receiving)

    try:
        await busy()
        server.kill()
        # A send during the outage: it retries (the outage is reported) and gets through
        # once Redis is back (reported too).
        sending = asyncio.ensure_future(layer.group_send("room", {"type": "x"}))
        await asyncio.sleep(0.5)
        server.start()
        await asyncio.wait_for(sending, 10)
        await busy()
    finally:
        await layer.close()
        server.kill()
    reports = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    print(f"outage reports for one Redis restart: {len(reports)}: {reports}")
    assert len(reports) == 1, reports


async def test_subscriptions_resume_within_1_s_of_redis_returning():
    """The worst moment for Redis to come back: just as the process's subscription reader
    has begun its longest backoff sleep. (White-box: a spy on the server's ``Health.wait``,
    where every retry sleeps, tells when the reader starts that sleep; nothing else is
    changed.)"""
    server = RedisServer().start()
    prefix = f"backoff-{secrets.token_hex(4)}"
    listener = RedisChannelLayer(hosts=[server.url], prefix=prefix)
    sender = None
    channel = await listener.new_channel()
    await listener.group_add("room", channel)
    long_sleeps: list[float] = []
    connections = listener._connections
    health = connections.health[0]  # one server, one shard
    wait = health.wait

    async def spy(error: BaseException) -> None:
        backoff = health.backoff if health.down_since is not None else BACKOFF_FIRST
        readers = connections.state().subscription_readers.values()
        if backoff >= BACKOFF_MAX and asyncio.current_task() in readers:
            long_sleeps.append(time.monotonic())
        await wait(error)

    health.wait = spy  # type: ignore[method-assign]
    try:
        server.kill()
        async with asyncio.timeout(20):
            while not long_sleeps:
                await asyncio.sleep(0.005)
        await asyncio.to_thread(server.start)
        restarted_at = time.monotonic()
        sender = RedisChannelLayer(hosts=[server.url], prefix=prefix)
        receiving = asyncio.ensure_future(listener.receive(channel))
        async with asyncio.timeout(10):
            while not receiving.done():
                await sender.group_send("room", {"type": "probe"})
                await asyncio.wait([receiving], timeout=0.05)
        resumed = time.monotonic() - restarted_at
    finally:
        for layer in (listener, sender):
            if layer is not None:
                await layer.close()
        server.kill()
    print(f"a group member heard broadcasts again {resumed:.2f} s after Redis returned")
    assert resumed <= 1.0


# A Daphne process killed ---------------------------------------------------------------


async def wait_until(condition, timeout: float, step: float = 0.02) -> float:
    """Poll ``condition`` (sync) until true; the monotonic time it became true."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(step)
    return time.monotonic()


def test_a_killed_daphnes_memberships_and_presence_go_by_themselves():
    """SIGKILL one of two Daphne processes: PUBSUB NUMSUB of the room's group topic drops
    to the survivor alone, a group_send (from the survivor and from a separate layer)
    reaches the live members and queues nothing anywhere, and the survivor's clients stop
    listing the dead process's users once its last heartbeat's TTL has passed."""
    redis_server = RedisServer().start()
    try:
        with chat_database() as database_url:
            seed = seed_chat(database_url, room="killed", users=USERS)
            env = {"CHAT_PRESENCE_INTERVAL": str(PRESENCE_INTERVAL)}
            with cluster(redis_server.url, database_url, worker=False, env=env) as site:
                asyncio.run(kill_drill(site, seed))
                survivor = site.daphnes[1]
                assert survivor.alive(), survivor.output
                assert tracebacks(survivor.output) == 0, survivor.output
    finally:
        redis_server.kill()


async def kill_drill(site: Cluster, seed: ChatSeed) -> None:
    victim, survivor = site.daphnes
    # Client i goes to Daphne i % 2 as user i % 20: each Daphne has its own ten users.
    clients = await open_chat_clients(site.daphnes, seed, 40)
    layer = RedisChannelLayer(hosts=[site.redis_url], prefix=site.prefix)
    try:
        on_victim = [c for c in clients if c.node is victim]
        on_survivor = [c for c in clients if c.node is survivor]
        victim_users = {c.user for c in on_victim}
        everyone = victim_users | {c.user for c in on_survivor}
        observer = on_survivor[0]
        asks = f"presence-peers.{seed.group}"  # consumers.presence: one tracker per process
        await wait_until(lambda: merged_presence(observer, time.monotonic()) == everyone, 15)
        await wait_until(lambda: site.subscribers(seed.group) == 2, 10)
        assert site.subscribers(asks) == 2

        await asyncio.to_thread(victim.kill)
        killed_at = time.monotonic()
        gone_at = await wait_until(lambda: site.subscribers(seed.group) == 1, 10)
        await wait_until(lambda: site.subscribers(asks) == 1, 10)
        await wait_until(lambda: all(not c.open for c in on_victim), 10)
        left_at = await wait_until(
            lambda: not merged_presence(observer, time.monotonic()) & victim_users,
            3 * PRESENCE_INTERVAL + 10,
        )
        ttl = 3 * PRESENCE_INTERVAL
        print(
            f"after the SIGKILL: group subscriptions gone in {gone_at - killed_at:.3f} s; "
            f"the dead process's users left the survivor's presence in "
            f"{left_at - killed_at:.2f} s (TTL {ttl:.1f} s, heartbeat {PRESENCE_INTERVAL} s); "
            f"victim clients closed with {sorted({c.close_code for c in on_victim})}"
        )
        assert left_at - killed_at <= ttl + PRESENCE_INTERVAL + 1.0
        assert merged_presence(observer, time.monotonic()) == everyone - victim_users

        # Broadcasts reach the live members, and nothing waits anywhere for the dead ones.
        assert await on_survivor[1].post("after the kill")
        await layer.group_send(
            seed.group, {"type": "chat.message", "id": 0, "text": "from a layer", "user": "x"}
        )
        await wait_until(
            lambda: all({"after the kill", "from a layer"} <= set(c.received) for c in on_survivor),
            10,
        )
        assert site.subscribers(seed.group) == 1
        await asyncio.sleep(0.5)
        queued = await asyncio.to_thread(queued_for_processes, site)
        assert queued == {}, f"messages waiting in process inboxes: {queued}"
    finally:
        await close_all(clients)
        await layer.close()


def queued_for_processes(site: Cluster) -> dict[str, int]:
    """Messages waiting in any process inbox or group's direct members, by key."""
    import redis

    waiting = {}
    with redis.Redis.from_url(site.redis_url, socket_timeout=5) as raw:
        for key in raw.scan_iter(match=f"{site.prefix}:inbox:*"):
            if length := raw.llen(key):
                waiting[key.decode()] = length
        for key in raw.scan_iter(match=f"{site.prefix}:group:*"):
            if members := raw.zcard(key):
                waiting[key.decode()] = members
    return waiting
