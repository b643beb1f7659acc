"""Group history (``channels_layer.history``) on every layer: positions, epochs, trimming by
size and age, ``HistoryLost``, and recovery exactly once across the switch from history to
live delivery while others keep sending."""

import asyncio

import pytest

from channels_layer import InMemoryChannelLayer
from channels_layer.history import HistoryLost, Position

KINDS = ["memory"]
HISTORY = {"chat.*": {"size": 50, "ttl": 60}, "short.*": {"size": 3, "ttl": 60}}


@pytest.fixture(params=KINDS)
def kind(request):
    return request.param


@pytest.fixture
def make_pair(kind):
    """``make_pair(**config)``: a sending and a receiving layer, as two processes of one
    site (for the in-memory layer, one instance plays both)."""

    def make(**config):
        config.setdefault("history", HISTORY)
        layer = InMemoryChannelLayer(**config)
        return layer, layer

    return make


async def receive(layer, channel, timeout=3):
    return await asyncio.wait_for(layer.receive(channel), timeout)


async def member(layer, group):
    channel = await layer.new_channel()
    await layer.group_add(group, channel)
    await layer.when_ready(channel)
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
    with pytest.raises(HistoryLost, match="trimmed"):
        await receiver.group_history("short.room", Position(last.epoch, 1))


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
def test_a_bad_history_option_is_refused_with_what_was_wrong(kind, history, error):
    with pytest.raises(ValueError, match=error):
        InMemoryChannelLayer(history=history)


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
