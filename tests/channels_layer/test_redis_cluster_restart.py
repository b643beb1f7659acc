"""Restart and partition drills: while one process sends direct messages to another's
channel, broadcasts to a group it is in and messages to a named worker channel it reads
(one at a time), and the receiving process sends to a channel of its own (a new send
every 20 ms, as many consumers do), the cluster's nodes go away and come back without a
failover; every road's keys are on one master, the one restarted:

- a replica restarted (SIGTERM, then started again on its port with its files): nobody
  notices, not even in the log;
- that master restarted the same way, quicker than the node timeout, so it is still
  master when it returns (Redis 7's SIGTERM waits for the replicas to catch up first, and
  a restarted master refuses all but sharded pub/sub for 2 s: CLUSTER_WRITABLE_DELAY);
- every node paused (SIGSTOP, then SIGCONT 2.5 s later): a network partition between the
  processes and the cluster, which stays whole (connections open, nothing answers; under
  redis-py's 5 s socket timeout, so calls just wait, as on a single Redis);
- every node restarted at once (SIGTERM all, start all).

The nodes keep an append-only file, which a graceful shutdown writes out, so a restarted
node comes back with its data: the yardstick is a single Redis with persistence restarted
under the single-server layer, which loses nothing (a send made while it is away is
retried for ``retry_timeout`` and gets through). So here: nothing lost, nothing twice,
each road in order, no error raised to a caller, delivery back within a few seconds of
the cluster, and at most one "unreachable" and one "reachable again" line per process.
The master is also restarted on a cluster that keeps nothing on disk: it comes back
empty, as a single Redis without persistence does, and only what it held may be lost.

The node timeout (5 s) is longer than any of these events, as it would be in production
for a quick restart: a restart that made the replica take over is the failover drill's
case (test_redis_cluster_failover.py), and these tests check that none happened.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from redis.exceptions import ClusterDownError

from channels_layer import redis_health
from channels_layer.redis_health import ClusterHealth
from tests.redis_servers import RedisClusterServers, RedisServer

MESSAGES = 60  # rounds at least (one message per road each)
EVENT_AT = 20  # the round at which the event begins
AFTER = 2.0  # seconds of rounds after the event ended
RESUME_WITHIN = 5.0  # seconds from the cluster's return to delivery on every road
SETTLE = 10.0  # seconds for the last messages to arrive on a loaded machine
PAUSE = 2.5  # seconds every node is paused
# Direct messages, broadcasts and a worker channel's from the sender, one at a time; and
# the receiver's own messages to a channel it reads, a new one every CHATTER seconds
# without waiting for the last (as many consumers send), so that it meets the outage as
# a sender too, in callers that begin all along it.
ROADS = "dgwe"
CHATTER = 0.02


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterServers]:
    """A cluster of this module's own (its nodes are restarted), each node with an
    append-only file and a node timeout longer than any restart here."""
    cluster = RedisClusterServers(node_timeout=5000, persistent=True).start()
    yield cluster
    cluster.stop()


@dataclass
class Drill:
    """What one run saw."""

    sent: dict[str, list[str]] = field(default_factory=lambda: {road: [] for road in ROADS})
    got: dict[str, list[tuple[float, str]]] = field(
        default_factory=lambda: {road: [] for road in ROADS}
    )
    returned: dict[str, float] = field(default_factory=dict)  # when each send returned
    raised: list[BaseException] = field(default_factory=list)
    began: float = 0.0
    ended: float = 0.0

    def lost(self, road: str) -> list[str]:
        arrived = {mid for _, mid in self.got[road]}
        return [mid for mid in self.sent[road] if mid not in arrived]

    def resumed(self, road: str) -> float:
        """Seconds from the event's end to the road's first delivery after it."""
        return min(when for when, _ in self.got[road] if when >= self.ended) - self.ended

    def stall(self, road: str) -> float:
        """The longest wait between two deliveries on the road."""
        times = [when for when, _ in self.got[road]]
        return max(b - a for a, b in itertools.pairwise(times))


async def run_drill(
    make_layer, cluster: RedisClusterServers, event: Callable[[RedisServer], None]
) -> Drill:
    """Messages on the three roads, ``event(master)`` (in a thread) at round ``EVENT_AT``,
    and rounds on until ``AFTER`` seconds after it returned; then wait for the last ones.
    ``master`` holds every road: the receiver's inbox, and the group and the channels,
    whose names are chosen so."""
    cluster.wait_until_ok()
    # Each process seeded by a node of its own, so each one's log lines name it.
    seeds = [node.url for node in cluster.nodes[:2]]
    sender, receiver = (
        make_layer(hosts=[seed], cluster=True, retry_timeout=10, capacity=10000) for seed in seeds
    )
    channel = await receiver.new_channel()
    master = cluster.owner(receiver._key("inbox", receiver.client_prefix))
    room, worker, own = (
        next(
            name
            for name in (f"{kind}-{n}" for n in range(1000))
            if cluster.owner(receiver._key(key_kind, name)) is master
        )
        for kind, key_kind in (
            ("room", "broadcast"),
            ("worker.restart", "channel"),
            ("own.restart", "channel"),
        )
    )
    await receiver.group_add(room, channel)
    drill = Drill()

    async def read(name: str) -> None:
        while True:
            try:
                message = await receiver.receive(name)
            except Exception as error:  # counted: a receive must not raise
                drill.raised.append(error)
                await asyncio.sleep(0.05)
                continue
            drill.got[message["id"][0]].append((time.monotonic(), message["id"]))

    readers = [asyncio.ensure_future(read(name)) for name in (channel, worker, own)]

    def send_road(road: str, mid: str):
        message = {"type": "test", "id": mid}
        if road == "d":
            return sender.send(channel, message)
        if road == "g":
            return sender.group_send(room, message)
        return sender.send(worker, message)

    async def send_own(mid: str) -> None:
        try:
            await receiver.send(own, {"type": "test", "id": mid})
        except Exception as error:  # counted: a send must not raise
            drill.raised.append(error)
        else:
            drill.sent["e"].append(mid)
            drill.returned[mid] = time.monotonic()

    async def chatter() -> None:
        sending = set()
        n = 0
        while happening is None or not happening.done() or time.monotonic() < drill.ended + AFTER:
            task = asyncio.ensure_future(send_own(f"e{n}"))
            sending.add(task)
            task.add_done_callback(sending.discard)
            n += 1
            await asyncio.sleep(CHATTER)
        await asyncio.gather(*sending)

    def timed_event() -> None:
        drill.began = time.monotonic()
        event(master)
        drill.ended = time.monotonic()

    happening: asyncio.Future[None] | None = None
    chattering = asyncio.ensure_future(chatter())
    n = 0
    while (
        n < MESSAGES
        or happening is None
        or not happening.done()
        or (time.monotonic() < drill.ended + AFTER)
    ):
        if n == EVENT_AT:
            happening = asyncio.ensure_future(asyncio.to_thread(timed_event))
        for road in "dgw":
            try:
                # A task of its own, as each consumer's send is.
                await asyncio.ensure_future(send_road(road, f"{road}{n}"))
            except Exception as error:  # counted: a send must not raise
                drill.raised.append(error)
            else:
                drill.sent[road].append(f"{road}{n}")
                drill.returned[f"{road}{n}"] = time.monotonic()
        n += 1
        await asyncio.sleep(0.01)
    assert happening is not None
    happening.result()  # raises what the event raised
    await chattering
    deadline = time.monotonic() + SETTLE
    while time.monotonic() < deadline and any(
        len(drill.got[road]) < len(drill.sent[road]) for road in ROADS
    ):
        await asyncio.sleep(0.05)
    for reader in readers:
        reader.cancel()
    return drill


def check(drill: Drill, caplog, name: str, quiet: bool = False, volatile: bool = False) -> None:
    """The promises (see the module docstring); ``quiet``: not even a log line;
    ``volatile``: a node came back empty, so what it held may be lost (what a send put in
    Redis before the event began), as on a single Redis restarted without persistence."""
    lines = [r.getMessage() for r in caplog.records if r.name == "channels_layer.redis"]
    print("\n".join(lines))
    others = [
        f"{r.name} {r.levelname} {r.getMessage()}"
        for r in caplog.records
        if r.name != "channels_layer.redis" and r.levelno >= logging.WARNING
    ]
    print(f"{len(others)} other lines:", *others[:10], sep="\n")
    for road in ROADS:
        print(
            f"{name} {road}: {len(drill.sent[road])} sent, {len(drill.got[road])} received, "
            f"lost {drill.lost(road)}; event {drill.ended - drill.began:.2f} s, "
            f"resumed {drill.resumed(road):.2f} s after it, longest stall "
            f"{drill.stall(road):.2f} s"
        )
    assert not drill.raised, drill.raised
    for road in ROADS:
        lost = drill.lost(road)
        if volatile:
            drill.sent[road] = [mid for mid in drill.sent[road] if mid not in lost]
            lost = [mid for mid in lost if drill.returned[mid] >= drill.began]
        assert not lost, f"{road}: lost {lost}"
        arrived = [mid for _, mid in drill.got[road]]
        if road == "e":  # sent concurrently: in no order
            arrived, drill.sent[road] = sorted(arrived), sorted(drill.sent[road])
        assert arrived == drill.sent[road], f"{road}: twice or out of order"
        assert drill.resumed(road) < RESUME_WITHIN
    if quiet:
        assert not lines, lines
    # One line when the outage begins and one when it ends, in each process that met it.
    by_process: dict[str, list[str]] = {}
    for line in lines:
        by_process.setdefault(line.split(" is ")[0], []).append(line)
    for process, mine in by_process.items():
        assert len([line for line in mine if "is unreachable" in line]) == 1, mine
        assert len([line for line in mine if "reachable again" in line]) == 1, mine
        assert len(mine) == 2, (process, mine)


def roles(cluster: RedisClusterServers) -> set[int]:
    """The ports of the masters: unchanged by an event that made no failover."""
    return {node.port for node in cluster.live_masters()}


def restart(node: RedisServer) -> None:
    node.stop()
    node.start()


async def test_cluster_replica_restarted(cluster, make_layer, caplog):
    caplog.set_level(logging.WARNING)
    masters = roles(cluster)
    [replica, *_] = [node for node in cluster.nodes if node.port not in masters]
    drill = await run_drill(make_layer, cluster, lambda _: restart(replica))
    check(drill, caplog, "replica restarted", quiet=True)
    cluster.wait_until_ok()
    assert roles(cluster) == masters


async def test_cluster_master_restarted(cluster, make_layer, caplog):
    """The master of the receiver's inbox, the group's and the worker's slots."""
    caplog.set_level(logging.WARNING)
    masters = roles(cluster)
    drill = await run_drill(make_layer, cluster, restart)
    check(drill, caplog, "master restarted")
    cluster.wait_until_ok()
    assert roles(cluster) == masters, "a failover happened: the restart took too long"


@pytest.fixture(scope="module")
def volatile_cluster() -> Iterator[RedisClusterServers]:
    """A cluster whose nodes keep nothing on disk (the node timeout as above)."""
    cluster = RedisClusterServers(node_timeout=5000).start()
    yield cluster
    cluster.stop()


async def test_cluster_master_restarted_empty(volatile_cluster, make_layer, caplog):
    """The same master restarted without persistence: it comes back with its slots and
    no data (its replica then copies that), as a single Redis restarted without
    persistence: what it held is lost, nothing sent after it began."""
    caplog.set_level(logging.WARNING)
    masters = roles(volatile_cluster)
    drill = await run_drill(make_layer, volatile_cluster, restart)
    check(drill, caplog, "master restarted empty", volatile=True)
    volatile_cluster.wait_until_ok()
    assert roles(volatile_cluster) == masters, "a failover happened: the restart took too long"


async def test_cluster_paused_briefly(cluster, make_layer, caplog):
    """Every node stopped for ``PAUSE`` seconds (SIGSTOP), as behind a network partition."""
    caplog.set_level(logging.WARNING)
    masters = roles(cluster)

    def pause(_: RedisServer) -> None:
        for node in cluster.nodes:
            node.pause()
        time.sleep(PAUSE)
        for node in cluster.nodes:
            node.resume()

    drill = await run_drill(make_layer, cluster, pause)
    check(drill, caplog, "cluster paused")
    cluster.wait_until_ok()
    assert roles(cluster) == masters


async def test_cluster_restarted_whole(cluster, make_layer, caplog):
    """Every node stopped (SIGTERM), then every node started again."""
    caplog.set_level(logging.WARNING)
    masters = roles(cluster)

    def restart_all(_: RedisServer) -> None:
        for node in cluster.nodes:
            node.stop()
        for node in cluster.nodes:
            node.start()

    drill = await run_drill(make_layer, cluster, restart_all)
    check(drill, caplog, "cluster restarted")
    cluster.wait_until_ok()
    assert roles(cluster) == masters


async def test_cluster_unreachable_sends_wait_for_it(cluster, make_layer, caplog):
    """Every node down when sends begin: they are retried, as on a single Redis, and get
    through once the nodes are back within ``retry_timeout`` (redis-py 8 raises
    ``RedisClusterUnreachableError`` when a slot map refresh reaches no node, which the
    layer let through to its callers and its readers); the readers go on. The outage is
    reported by the layer's lines alone (redis-py logged an ERROR at each failed refresh
    of each client)."""
    caplog.set_level(logging.WARNING)
    cluster.wait_until_ok()
    sender, receiver = (
        make_layer(hosts=[node.url], cluster=True, retry_timeout=10) for node in cluster.nodes[:2]
    )
    channel = await receiver.new_channel()
    await receiver.group_add("room", channel)
    await sender.send(channel, {"type": "test", "id": "before"})
    assert (await asyncio.wait_for(receiver.receive(channel), 5))["id"] == "before"
    await asyncio.to_thread(lambda: [node.stop() for node in cluster.nodes])
    try:
        sending = [
            asyncio.ensure_future(sender.send(channel, {"type": "test", "id": "direct"})),
            asyncio.ensure_future(sender.group_send("room", {"type": "test", "id": "broadcast"})),
        ]
        await asyncio.wait(sending, timeout=1.5)  # slot map refreshes fail meanwhile
        assert not [task.exception() for task in sending if task.done()]
    finally:
        await asyncio.to_thread(lambda: [node.start() for node in cluster.nodes])
    await asyncio.wait_for(asyncio.gather(*sending), 10)
    got = {(await asyncio.wait_for(receiver.receive(channel), 10))["id"] for _ in range(2)}
    assert got == {"direct", "broadcast"}
    others = [
        f"{r.name} {r.levelname} {r.getMessage()}"
        for r in caplog.records
        if r.name != "channels_layer.redis" and r.levelno >= logging.WARNING
    ]
    assert not others, others


def test_cluster_outage_reports_of_redis_py_are_debug_lines(caplog):
    """Only redis-py's reports of an outage: a refresh that failed otherwise stays an
    error."""
    caplog.set_level(logging.WARNING)
    ClusterHealth("cluster via test")  # installs the filter
    cluster_logger = logging.getLogger("redis.asyncio.cluster")
    unreachable = "Redis Cluster cannot be connected. Please provide at least one reachable node"
    cluster_logger.error(f"Topology refresh failed, keeping the current one: {unreachable}")
    cluster_logger.warning(
        "shard channel %r migration deferred: %s: %s", "t", "ConnectionError", "refused"
    )
    cluster_logger.error(
        "shard subscription reconciliation failed: %r",
        error := ConnectionError("refused"),
        exc_info=error,
    )
    assert caplog.records == []
    disagree = "startup_nodes could not agree on a valid slots cache"
    cluster_logger.error(f"Topology refresh failed, keeping the current one: {disagree}")
    cluster_logger.error(
        "shard subscription reconciliation failed: %r", error := KeyError("x"), exc_info=error
    )
    assert [r.levelname for r in caplog.records] == ["ERROR", "ERROR"]


def test_cluster_master_refusing_writes_after_restart_is_one_outage(monkeypatch, caplog):
    """A restarted master serves SSUBSCRIBE at once but refuses writes with CLUSTERDOWN
    for 2 s more (measured here: 1.99 to 2.02 s after it answers PING): the subscription
    reader ends the outage, and a send begun later that meets CLUSTERDOWN just after those
    2 s (the node's cron ticks every 100 ms) is still that outage, not a new one."""
    caplog.set_level(logging.WARNING, logger="channels_layer.redis")
    now = [1000.0]
    # The module's clock only (asyncio's, in other threads, reads the real one).
    monkeypatch.setattr(redis_health, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    health = ClusterHealth("cluster via test")
    reader, sender = contextvars.copy_context(), contextvars.copy_context()
    reader.run(health.down, ConnectionError("Connection closed by server."))
    now[0] += 0.05  # the node is back: SSUBSCRIBE goes through
    reader.run(health.up)
    now[0] += 2.1  # a send that began after that meets the end of the writable delay
    sender.run(health.down, ClusterDownError("The cluster is down"))
    now[0] += 0.05
    sender.run(health.up)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
