"""Every background task of the Redis layer ends when cancelled, wherever its loop waits,
and ``close()`` returns within 2 s, also when a library swallows the cancellation (as
redis-py's retries and ``asyncio.wait_for`` on Python 3.11, CPython gh-86296, can)."""

import asyncio
import secrets
import threading
import time

import pytest
import redis.asyncio
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError

from channels_layer.redis import RedisChannelLayer
from channels_layer.redis_health import Health
from channels_layer.redis_leases import Leases
from channels_layer.redis_subscriptions import SubscriptionReaders
from tests.redis_servers import REDIS_URL

INBOX, SUBSCRIPTIONS = "RedisConnections._read_inbox", "SubscriptionReaders.read"
LEASE = "Lease._renew"

# (what, the reader, the awaited call it is cancelled in, a call made to fail first so
# the reader reaches an error path)
POINTS = [
    ("inbox: BLMPOP", INBOX, (Redis, "blmpop"), None),
    ("inbox: backoff after an error", INBOX, (Health, "wait"), (Redis, "blmpop")),
    ("pub/sub: subscribing", SUBSCRIPTIONS, (PubSub, "subscribe"), None),
    ("pub/sub: reading", SUBSCRIPTIONS, (PubSub, "get_message"), None),
    # Reached for a broadcast that brings no mark of this process's inbox (inbox_order).
    ("pub/sub: the inbox's number", SUBSCRIPTIONS, (Redis, "hget"), None),
    (
        "pub/sub: backoff after an error",
        SUBSCRIPTIONS,
        (Health, "wait"),
        (PubSub, "get_message"),
    ),
    ("pub/sub: closing its connection", SUBSCRIPTIONS, (PubSub, "aclose"), (PubSub, "get_message")),
    ("lease: sleeping", LEASE, (asyncio, "sleep"), None),
    ("lease: renewing", LEASE, (Leases, "renew"), None),
]


def reader_of(task):
    return getattr(task.get_coro(), "__qualname__", "")


def interrupt(monkeypatch, target, reader, swallow, hits):
    """Cancel ``reader``'s task the first time it awaits ``target``; with ``swallow``, the
    call then returns None as if a library had caught the CancelledError."""
    owner, name = target
    original = getattr(owner, name)

    async def interrupted(*args, **kwargs):
        task = asyncio.current_task()
        if task is None or hits or reader_of(task) != reader:
            return await original(*args, **kwargs)
        hits.append(task)
        asyncio.get_running_loop().call_soon(task.cancel)
        try:
            return await original(*args, **kwargs)
        except asyncio.CancelledError:
            if swallow:
                return None
            raise

    monkeypatch.setattr(owner, name, interrupted)


def fail_once(monkeypatch, target, reader):
    owner, name = target
    original = getattr(owner, name)
    failed = []

    async def failing(*args, **kwargs):
        task = asyncio.current_task()
        if task is not None and not failed and reader_of(task) == reader:
            failed.append(task)
            raise RedisConnectionError("injected by the test")
        return await original(*args, **kwargs)

    monkeypatch.setattr(owner, name, failing)


async def drive(reader, hits, unmarked):
    """Start ``reader`` and make it reach every await point of its loop; then close."""
    layer = RedisChannelLayer(
        hosts=[REDIS_URL], prefix=f"test-{secrets.token_hex(6)}", at_least_once={"jobs": 0.3}
    )
    leases = []

    async def use():
        if reader == LEASE:
            await layer.send("jobs", {"type": "job"})
            leases.append((await layer.receive_leased("jobs"))[1])
        else:
            channel = await layer.new_channel()
            await layer.when_ready(channel)  # starts the inbox reader
            await layer.group_add("room", channel)
            if unmarked:  # as if this process's registration had expired
                await redis.asyncio.Redis.from_url(REDIS_URL).delete(layer._key("procs", "room"))
            await layer.send(channel, {"type": "direct"})
            await layer.group_send("room", {"type": "broadcast"})

    # The use may fail once its reader is cancelled (a group_add never confirmed, say).
    using = asyncio.ensure_future(use())
    try:
        deadline = time.monotonic() + 5
        while not hits and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert hits, "the reader never reached this point"
        started = time.monotonic()
        await layer.close()
        closed_in = time.monotonic() - started
        # The reader may run on the layer's own loop in another thread, which asyncio.wait()
        # would not be woken by: look at it instead.
        deadline = time.monotonic() + 2
        while not hits[0].done() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return closed_in, hits[0].done()
    finally:
        using.cancel()
        await asyncio.gather(using, return_exceptions=True)
        for lease in leases:
            lease.stop_renewing()
        await layer.flush()
        await layer.close()


@pytest.mark.parametrize("swallow", [False, True], ids=["cancelled", "cancel-swallowed"])
@pytest.mark.parametrize(
    ("point", "reader", "target", "failing"), POINTS, ids=[p[0] for p in POINTS]
)
def test_a_reader_cancelled_at_any_point_ends_and_close_returns_in_2_s(
    monkeypatch, point, reader, target, failing, swallow
):
    hits = []
    interrupt(monkeypatch, target, reader, swallow, hits)
    if failing is not None:
        fail_once(monkeypatch, failing, reader)
    outcome = {}
    # asyncio.run() must return too: it would hang on a task that never ends.
    thread = threading.Thread(
        target=lambda: outcome.update(
            result=asyncio.run(drive(reader, hits, target == (Redis, "hget")))
        )
    )
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "asyncio.run() did not exit"
    closed_in, ended = outcome["result"]
    assert closed_in < 2
    assert ended, f"the {reader} task still runs after close()"


async def test_a_group_add_cancelled_as_its_subscription_is_confirmed_is_cancelled(
    make_layer, monkeypatch
):
    # A caller cancelled while group_add waits for Redis to confirm the SUBSCRIBE must end,
    # also when the confirmation comes in the same turn of the loop (Python 3.11's
    # asyncio.wait_for then returned the result instead: a presence tracker cancelled
    # during a heartbeat's group_add went on for ever, and its test's teardown hung).
    layer = make_layer()
    channel = await layer.new_channel()
    await layer.when_ready(channel)  # its loop's state made: "room" is subscribed by group_add
    ours: list[asyncio.Future[None]] = []
    start = SubscriptionReaders.start

    def confirmed_by_the_test(readers, state, topic):
        confirmed = start(readers, state, topic)  # subscribes for real...
        if topic != layer._key("broadcast", "room"):
            return confirmed
        ours.append(state.loop.create_future())
        return ours[0]  # ...but the caller waits on ours

    monkeypatch.setattr(SubscriptionReaders, "start", confirmed_by_the_test)
    adding = asyncio.ensure_future(layer.group_add("room", channel))
    async with asyncio.timeout(5):
        while not ours:
            await asyncio.sleep(0)
    ours[0].set_result(None)
    adding.cancel()
    await asyncio.wait([adding], timeout=2)
    assert adding.cancelled(), "group_add returned: its caller's cancellation was lost"
