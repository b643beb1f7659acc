"""Group history (``channels_layer.history``) on every layer: positions, epochs, trimming by
size and age, ``HistoryLost``, and recovery exactly once across the switch from history to
live delivery while others keep sending. The Redis layers' tests run on a single Redis and
on a Redis Cluster (see conftest)."""

import asyncio
import json
import sys

import pytest

from channels_layer import InMemoryChannelLayer
from channels_layer.history import HistoryLost, Position
from channels_layer.pubsub import RedisPubSubChannelLayer
from channels_layer.redis import RedisChannelLayer
from testsupport.processes import ROOT

KINDS = ["memory", "redis", "pubsub"]
LAYERS = {"redis": RedisChannelLayer, "pubsub": RedisPubSubChannelLayer}
ON_CLUSTER = True
HISTORY = {"chat.*": {"size": 50, "ttl": 60}, "short.*": {"size": 3, "ttl": 60}}


@pytest.fixture(params=KINDS)
def kind(request):
    return request.param


@pytest.fixture
def make_pair(kind, make_layer):
    """``make_pair(**config)``: a sending and a receiving layer, as two processes of one
    site (for the in-memory layer, one instance plays both)."""

    def make(**config):
        config.setdefault("history", HISTORY)
        if kind == "memory":
            layer = InMemoryChannelLayer(**config)
            return layer, layer
        return make_layer(LAYERS[kind], **config), make_layer(LAYERS[kind], **config)

    return make


async def receive(layer, channel, timeout=3):
    return await asyncio.wait_for(layer.receive(channel), timeout)


async def member(layer, group):
    """A consumer channel in ``group``; broadcasts reach it once ``group_add`` returns."""
    channel = await layer.new_channel()
    await layer.group_add(group, channel)
    return channel


def offsets(messages):
    return [message["__position__"]["offset"] for message in messages]


async def join(layer, channel, group, since, expected):
    """What a consumer does when it reconnects (subscribed first): the history after
    ``since``, then live messages, dropping what arrives twice by offset, until
    ``expected`` messages are in hand."""
    got = await layer.group_history(group, since)
    last = since.offset if not got else got[-1]["__position__"]["offset"]
    while len(got) < expected:
        message = await receive(layer, channel, timeout=10)
        if message["__position__"]["offset"] > last:
            got.append(message)
            last = message["__position__"]["offset"]
    return got


# Positions and live delivery ----------------------------------------------------------


async def test_each_group_send_takes_the_next_offset_and_members_see_it(make_pair):
    sender, receiver = make_pair()
    channel = await member(receiver, "chat.room")
    start = await sender.group_position("chat.room")
    assert start.offset == 0
    positions = [await sender.group_send("chat.room", {"type": "post", "n": n}) for n in range(5)]
    assert [p.offset for p in positions] == [1, 2, 3, 4, 5]
    assert {p.epoch for p in positions} == {start.epoch}
    assert await sender.group_position("chat.room") == Position(start.epoch, 5)
    for n in range(5):
        message = await receive(receiver, channel)
        assert message == {
            "type": "post",
            "n": n,
            "__position__": {"group": "chat.room", "epoch": start.epoch, "offset": n + 1},
        }


async def test_a_group_without_history_behaves_as_before(make_pair):
    sender, receiver = make_pair()
    channel = await member(receiver, "other")
    assert await sender.group_send("other", {"type": "post"}) is None
    assert await receive(receiver, channel) == {"type": "post"}
    with pytest.raises(ValueError, match="'other' keeps no history"):
        await sender.group_position("other")
    with pytest.raises(ValueError, match="keeps no history"):
        await sender.group_history("other", Position("x", 0))


async def test_a_channel_added_by_name_gets_the_position_too(make_pair):
    sender, receiver = make_pair()
    await receiver.group_add("chat.room", "jobs")
    position = await sender.group_send("chat.room", {"type": "post"})
    message = await receive(receiver, "jobs")
    assert message["__position__"] == {
        "group": "chat.room",
        "epoch": position.epoch,
        "offset": position.offset,
    }


async def test_groups_count_their_offsets_apart(make_pair):
    sender, _ = make_pair()
    assert (await sender.group_send("chat.a", {"type": "x"})).offset == 1
    assert (await sender.group_send("chat.b", {"type": "x"})).offset == 1
    assert (await sender.group_send("chat.a", {"type": "x"})).offset == 2


# Reading the history -------------------------------------------------------------------


async def test_history_gives_what_followed_a_position_in_order(make_pair):
    sender, receiver = make_pair()
    for n in range(10):
        last = await sender.group_send("chat.room", {"type": "post", "n": n})
    since = Position(last.epoch, 4)
    got = await receiver.group_history("chat.room", since)
    assert [m["n"] for m in got] == [4, 5, 6, 7, 8, 9]
    assert offsets(got) == [5, 6, 7, 8, 9, 10]
    assert all(m["__position__"]["group"] == "chat.room" for m in got)
    assert offsets(await receiver.group_history("chat.room", since, limit=2)) == [5, 6]
    assert await receiver.group_history("chat.room", last) == []
    # The __position__ of a delivered message is a valid since.
    assert offsets(await receiver.group_history("chat.room", got[-2]["__position__"])) == [10]


async def test_a_position_of_another_epoch_is_lost(make_pair):
    sender, receiver = make_pair()
    current = await sender.group_send("chat.room", {"type": "post"})
    with pytest.raises(HistoryLost) as lost:
        await receiver.group_history("chat.room", Position("stale", 0))
    assert lost.value.current == current
    assert "epoch" in str(lost.value)


async def test_a_position_ahead_of_the_group_is_lost(make_pair):
    sender, receiver = make_pair()
    current = await sender.group_send("chat.room", {"type": "post"})
    with pytest.raises(HistoryLost):
        await receiver.group_history("chat.room", Position(current.epoch, 2))


async def test_history_is_trimmed_by_size(make_pair):
    sender, receiver = make_pair()
    for n in range(5):
        last = await sender.group_send("short.room", {"type": "post", "n": n})
    assert offsets(await receiver.group_history("short.room", Position(last.epoch, 2))) == [
        3,
        4,
        5,
    ]
    with pytest.raises(HistoryLost, match="trimmed") as lost:
        await receiver.group_history("short.room", Position(last.epoch, 1))
    assert (lost.value.since, lost.value.current) == (Position(last.epoch, 1), last)


async def test_history_is_trimmed_by_age(make_pair):
    sender, receiver = make_pair(history={"chat.*": {"size": 50, "ttl": 0.5}})
    first = await sender.group_send("chat.room", {"type": "post", "n": 0})
    await asyncio.sleep(0.7)
    last = await sender.group_send("chat.room", {"type": "post", "n": 1})
    assert offsets(await receiver.group_history("chat.room", first)) == [2]
    with pytest.raises(HistoryLost, match="trimmed"):
        await receiver.group_history("chat.room", Position(first.epoch, 0))
    await asyncio.sleep(0.7)  # nothing sent since: the last one ages out all the same
    with pytest.raises(HistoryLost):
        await receiver.group_history("chat.room", first)
    # Nothing was missed after the last position, whatever was trimmed before it.
    assert await receiver.group_history("chat.room", last) == []


async def test_recovery_is_exactly_once_across_the_switch_to_live(make_pair):
    """A consumer subscribes, reads the history after its position while another keeps
    sending, then takes live messages: every message once, in order."""
    sender, receiver = make_pair(capacity=1000)
    for n in range(20):
        since = await sender.group_send("chat.room", {"type": "post", "n": n})
    missed_from = Position(since.epoch, 10)

    async def keep_sending():
        for n in range(20, 120):
            await sender.group_send("chat.room", {"type": "post", "n": n})
            if n % 7 == 0:
                await asyncio.sleep(0)

    channel = await member(receiver, "chat.room")
    sending = asyncio.ensure_future(keep_sending())
    try:
        got = await join(receiver, channel, "chat.room", missed_from, expected=110)
    finally:
        await sending
    assert [m["n"] for m in got] == list(range(10, 120))
    assert offsets(got) == list(range(11, 121))


# Epochs ------------------------------------------------------------------------------


async def test_a_new_memory_layer_starts_new_epochs():
    first = InMemoryChannelLayer(history=HISTORY)
    position = await first.group_send("chat.room", {"type": "post"})
    again = InMemoryChannelLayer(history=HISTORY)
    restarted = await again.group_position("chat.room")
    assert restarted.offset == 0 and restarted.epoch != position.epoch
    with pytest.raises(HistoryLost):
        await again.group_history("chat.room", position)


async def test_flush_starts_new_epochs(make_pair):
    sender, receiver = make_pair()
    position = await sender.group_send("chat.room", {"type": "post"})
    await sender.flush()
    assert (await receiver.group_position("chat.room")).epoch != position.epoch


# Configuration -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("history", "error"),
    [
        ([("chat.*", {"size": 1, "ttl": 1})], "must be a dict"),
        ({"": {"size": 1, "ttl": 1}}, "non-empty str"),
        ({5: {"size": 1, "ttl": 1}}, "non-empty str"),
        ({"chat.*": 500}, "exactly the keys"),
        ({"chat.*": {"size": 500}}, "exactly the keys"),
        ({"chat.*": {"size": 1, "ttl": 1, "maxlen": 2}}, "exactly the keys"),
        ({"chat.*": {"size": 0, "ttl": 1}}, r"history\['chat.\*'\]\['size'\]"),
        ({"chat.*": {"size": 1.5, "ttl": 1}}, "positive int"),
        ({"chat.*": {"size": True, "ttl": 1}}, "positive int"),
        ({"chat.*": {"size": 1, "ttl": 0}}, r"\['ttl'\] must be a positive number"),
        ({"chat.*": {"size": 1, "ttl": "600"}}, "positive number"),
        ({"chat.*": {"size": 1, "ttl": float("inf")}}, "positive number"),
    ],
)
def test_a_bad_history_option_is_refused_with_what_was_wrong(make_pair, history, error):
    with pytest.raises(ValueError, match=error):
        make_pair(history=history)


async def test_the_first_matching_pattern_wins(make_pair):
    sender, _ = make_pair(
        history={"chat.vip.*": {"size": 1, "ttl": 60}, "chat.*": {"size": 5, "ttl": 60}}
    )
    for _ in range(3):
        vip = await sender.group_send("chat.vip.room", {"type": "x"})
        room = await sender.group_send("chat.room", {"type": "x"})
    with pytest.raises(HistoryLost):
        await sender.group_history("chat.vip.room", Position(vip.epoch, 1))
    assert offsets(await sender.group_history("chat.room", Position(room.epoch, 0))) == [1, 2, 3]


@pytest.mark.parametrize("since", [None, ("e", 1), Position("e", -1), Position(1, 1)])
async def test_a_bad_since_is_refused(make_pair, since):
    sender, _ = make_pair()
    with pytest.raises(ValueError, match="since must be a Position"):
        await sender.group_history("chat.room", since)


async def test_a_message_too_large_takes_no_offset(make_pair):
    sender, _ = make_pair(max_message_size=100)
    with pytest.raises(Exception, match="over the limit"):
        await sender.group_send("chat.room", {"type": "big", "data": "x" * 200})
    assert (await sender.group_send("chat.room", {"type": "small"})).offset == 1


def test_extensions_announce_history():
    assert "history" in InMemoryChannelLayer.extensions


# Redis: several processes, restarts, space, encryption, shared reads ------------------

# Another process sending to one group; prints the offsets its group_sends got.
SENDER = """
import asyncio, json, sys
from channels_layer.pubsub import RedisPubSubChannelLayer
from channels_layer.redis import RedisChannelLayer

async def main(kind, url, cluster, prefix, count):
    layer_class = RedisPubSubChannelLayer if kind == "pubsub" else RedisChannelLayer
    history = {"chat.*": {"size": 5000, "ttl": 60}}
    layer = layer_class(hosts=[url], cluster=cluster == "1", prefix=prefix, history=history)
    sends = [layer.group_send("chat.room", {"type": "post", "pid": sys.argv[1]})
             for _ in range(int(count))]
    print(json.dumps([position.offset for position in await asyncio.gather(*sends)]))
    await layer.close()

asyncio.run(main(*sys.argv[2:]))
"""


async def start_senders(kind, receiver, processes, count):
    """Sending processes, on the Redis (or Cluster) of ``receiver``."""
    return [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            SENDER,
            str(n),
            kind,
            receiver.hosts[0].address,
            "1" if receiver.cluster else "0",
            receiver.prefix,
            str(count),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        for n in range(processes)
    ]


@pytest.mark.parametrize("kind", ["redis", "pubsub"])
async def test_senders_in_several_processes_get_consecutive_offsets_in_live_order(kind, make_pair):
    _, receiver = make_pair(capacity=10000, history={"chat.*": {"size": 5000, "ttl": 60}})
    channel = await member(receiver, "chat.room")
    senders = await start_senders(kind, receiver, processes=3, count=200)
    got = [await receive(receiver, channel, timeout=20) for _ in range(600)]
    returned = []
    for sender in senders:
        out, _ = await asyncio.wait_for(sender.communicate(), 20)
        assert sender.returncode == 0
        returned += json.loads(out)
    assert sorted(returned) == list(range(1, 601))  # distinct and consecutive
    assert offsets(got) == list(range(1, 601))  # members see them in the order of offsets
    assert {m["pid"] for m in got} == {"0", "1", "2"}


@pytest.mark.parametrize("kind", ["redis"])
async def test_recovery_is_exactly_once_while_other_processes_send(kind, make_pair):
    _, receiver = make_pair(capacity=10000, history={"chat.*": {"size": 5000, "ttl": 60}})
    for _ in range(30):
        since = await receiver.group_send("chat.room", {"type": "post", "pid": "me"})
    channel = await member(receiver, "chat.room")
    senders = await start_senders("redis", receiver, processes=2, count=300)
    missed_from = Position(since.epoch, 5)
    got = await join(receiver, channel, "chat.room", missed_from, expected=625)
    for sender in senders:
        await asyncio.wait_for(sender.communicate(), 20)
    assert offsets(got) == list(range(6, 631))


@pytest.mark.parametrize("kind", ["redis", "pubsub"])
async def test_an_empty_restarted_redis_means_a_new_epoch(kind, make_pair, redis_servers):
    [server] = redis_servers(1)
    sender, receiver = make_pair(hosts=[server.url], retry_timeout=10)
    channel = await member(receiver, "chat.room")
    before = await sender.group_send("chat.room", {"type": "post"})
    assert (await receive(receiver, channel))["__position__"]["offset"] == 1
    server.kill()
    server.start()  # same port, no data
    after = await sender.group_position("chat.room")
    assert after.epoch != before.epoch and after.offset == 0
    with pytest.raises(HistoryLost, match="epoch") as lost:
        await receiver.group_history("chat.room", before)
    assert lost.value.current == after
    assert (await sender.group_send("chat.room", {"type": "post"})) == Position(after.epoch, 1)


@pytest.mark.parametrize("kind", ["redis"])
async def test_losing_only_the_position_key_starts_a_new_epoch_without_old_entries(
    kind, make_pair, raw_redis
):
    sender, receiver = make_pair()
    for _ in range(3):
        before = await sender.group_send("chat.room", {"type": "post"})
    raw_redis.delete(sender._key("position", "chat.room"))  # as an eviction would
    after = await sender.group_send("chat.room", {"type": "post"})
    assert after.epoch != before.epoch and after.offset == 1
    assert offsets(await receiver.group_history("chat.room", Position(after.epoch, 0))) == [1]


@pytest.mark.parametrize("kind", ["redis"])
async def test_losing_only_the_stream_is_a_gap_not_a_silence(kind, make_pair, raw_redis):
    sender, receiver = make_pair()
    for _ in range(3):
        before = await sender.group_send("chat.room", {"type": "post"})
    raw_redis.delete(sender._key("history", "chat.room"))
    with pytest.raises(HistoryLost, match="trimmed"):
        await receiver.group_history("chat.room", Position(before.epoch, 1))
    assert await receiver.group_history("chat.room", before) == []


@pytest.mark.parametrize("kind", ["redis"])
async def test_redis_space_is_bounded_by_size_ttl_and_expiry(kind, make_pair, raw_redis):
    sender, _ = make_pair(history={"chat.*": {"size": 3, "ttl": 0.5}}, group_expiry=30)
    stream = f"{sender.prefix}:history:{{chat.room}}"
    position = f"{sender.prefix}:position:{{chat.room}}"
    raw = raw_redis
    await asyncio.gather(*(sender.group_send("chat.room", {"type": "x"}) for _ in range(500)))
    # MAXLEN ~ trims whole stream nodes (100 entries by default).
    assert raw.xlen(stream) <= 3 + 100
    assert 0 < raw.pttl(stream) <= 500
    assert 25 < raw.ttl(position) <= 31
    await asyncio.sleep(0.7)
    await sender.group_send("chat.room", {"type": "x"})
    assert raw.xlen(stream) == 1  # what aged out is gone from Redis, not only hidden


@pytest.mark.parametrize("kind", ["redis"])
async def test_history_is_encrypted_in_redis(kind, make_pair, raw_redis):
    sender, receiver = make_pair(symmetric_encryption_keys=["secret"])
    position = await sender.group_send("chat.room", {"type": "post", "text": "attack at dawn"})
    [(_, fields)] = raw_redis.xrange(sender._key("history", "chat.room"))
    assert b"attack at dawn" not in fields[b"m"] and b"post" not in fields[b"m"]
    [message] = await receiver.group_history("chat.room", Position(position.epoch, 0))
    assert message["text"] == "attack at dawn"


@pytest.mark.parametrize("kind", ["redis"])
async def test_an_entry_no_key_opens_is_history_lost(kind, make_pair, make_layer, caplog):
    sender, _ = make_pair(symmetric_encryption_keys=["secret"])
    position = await sender.group_send("chat.room", {"type": "post"})
    stranger = make_layer(history=HISTORY, symmetric_encryption_keys=["other"])
    with pytest.raises(HistoryLost, match="unreadable"):
        await stranger.group_history("chat.room", Position(position.epoch, 0))
    assert "Unreadable history entry 1 of group 'chat.room'" in caplog.text


@pytest.mark.parametrize("kind", ["redis"])
async def test_concurrent_reads_of_the_same_history_cost_redis_one_read(
    kind, make_pair, redis_servers
):
    [server] = redis_servers(1)
    sender, receiver = make_pair(hosts=[server.url], history={"chat.*": {"size": 500, "ttl": 60}})
    for n in range(150):
        last = await sender.group_send("chat.room", {"type": "post", "n": n})
    since = Position(last.epoch, 50)
    await receiver.group_position("chat.room")  # connected, scripts loaded
    raw = server.client()
    raw.config_resetstat()
    results = await asyncio.gather(
        *(receiver.group_history("chat.room", since) for _ in range(1000))
    )
    assert all(offsets(got) == list(range(51, 151)) for got in results)
    # One batch of 100 entries: one XRANGE in Redis for all 1,000 callers.
    assert raw.info("commandstats")["cmdstat_xrange"]["calls"] == 1
    results[0][0]["n"] = "changed"
    assert results[1][0]["n"] == 50  # each caller has its own copies


@pytest.mark.parametrize("kind", ["redis"])
async def test_a_read_already_sent_is_not_shared_with_a_later_caller(kind, make_pair):
    sender, receiver = make_pair(history={"chat.*": {"size": 2000, "ttl": 60}})
    caught_in_flight = 0
    for attempt in range(20):
        group = f"chat.room{attempt}"
        sent = await asyncio.gather(
            *(sender.group_send(group, {"type": "post"}) for _ in range(1000))
        )  # ten batches to read: the early read takes a while
        since = Position(sent[0].epoch, 0)
        early = asyncio.ensure_future(receiver.group_history(group, since))
        await asyncio.sleep(0.002)  # its first batch has gone to Redis
        await sender.group_send(group, {"type": "post"})  # offset 1001
        # Asked after that send returned, so it must see it (a subscriber's catch-up).
        later = await receiver.group_history(group, since)
        assert offsets(later) == list(range(1, 1002))
        if offsets(await early) == list(range(1, 1001)):  # the case this test is about
            caught_in_flight += 1
            if caught_in_flight == 3:
                break
    assert caught_in_flight, "the early read never ran across the later send"
