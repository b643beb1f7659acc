"""InMemoryChannelLayer behaviour: delivery, capacity, expiry, groups, cancellation, threads."""

import asyncio
import logging
import re

import pytest
from asgiref.sync import async_to_sync

from channels_layer import ChannelFull, InMemoryChannelLayer
from channels_layer.base import MAX_NAME_LENGTH
from channels_layer.mailbox import FAN_OUT_BATCH


async def wait_until_waiting(layer: InMemoryChannelLayer, channel: str, count: int = 1) -> None:
    """Yield to the loop until ``count`` receivers are parked on ``channel``."""
    for _ in range(100):
        if layer._mailboxes.waiting(channel) >= count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{count} receivers never started waiting on {channel!r}")


async def receive_soon(layer: InMemoryChannelLayer, channel: str) -> dict:
    """``receive``, failing within 2 s instead of waiting for ever for a message never sent."""
    return await asyncio.wait_for(layer.receive(channel), 2)


async def test_extensions_are_channels_ones_and_when_ready():
    """Channels' "groups" and "flush", and ours that this layer has (base.py lists them)."""
    assert InMemoryChannelLayer.extensions == ["groups", "flush", "when_ready", "history"]


# Send / receive ------------------------------------------------------------------


async def test_send_then_receive_returns_an_equal_message():
    layer = InMemoryChannelLayer()
    await layer.send("test.channel", {"type": "chat.message", "text": "hi"})
    assert await layer.receive("test.channel") == {"type": "chat.message", "text": "hi"}


async def test_receive_returns_messages_in_fifo_order():
    layer = InMemoryChannelLayer()
    for n in range(5):
        await layer.send("fifo", {"type": "n", "n": n})
    assert [(await layer.receive("fifo"))["n"] for _ in range(5)] == [0, 1, 2, 3, 4]


async def test_receive_waits_until_a_message_is_sent():
    layer = InMemoryChannelLayer()
    receiver = asyncio.create_task(layer.receive("later"))
    await wait_until_waiting(layer, "later")
    assert not receiver.done()
    await layer.send("later", {"type": "arrived"})
    assert await asyncio.wait_for(receiver, 1) == {"type": "arrived"}


async def test_concurrent_receivers_each_get_a_distinct_message():
    layer = InMemoryChannelLayer()
    receivers = [asyncio.create_task(layer.receive("shared")) for _ in range(10)]
    await wait_until_waiting(layer, "shared", 10)
    for n in range(10):
        await layer.send("shared", {"type": "n", "n": n})
    results = await asyncio.wait_for(asyncio.gather(*receivers), 1)
    assert sorted(message["n"] for message in results) == list(range(10))
    assert "shared" not in layer._mailboxes


async def test_bytes_values_survive_the_round_trip_as_bytes():
    layer = InMemoryChannelLayer()
    await layer.send("bin", {"type": "websocket.send", "bytes": b"\x00\x01\xff"})
    message = await layer.receive("bin")
    assert message["bytes"] == b"\x00\x01\xff"
    assert isinstance(message["bytes"], bytes)


async def test_send_rejects_an_unencodable_message_and_queues_nothing():
    layer = InMemoryChannelLayer()
    with pytest.raises(TypeError, match=re.escape("message['x'] is an object")):
        await layer.send("c", {"type": "t", "x": object()})
    assert "c" not in layer._mailboxes


async def test_send_and_receive_reject_invalid_channel_names():
    layer = InMemoryChannelLayer()
    with pytest.raises(TypeError, match="Channel name"):
        await layer.send("bad name", {"type": "t"})
    with pytest.raises(TypeError, match="Channel name"):
        await layer.receive("x" * 101)


# new_channel -----------------------------------------------------------------------


async def test_new_channel_names_are_valid_unique_and_honour_prefix():
    layer = InMemoryChannelLayer()
    names = {await layer.new_channel() for _ in range(50)}
    assert len(names) == 50
    for name in names:
        layer.require_valid_channel_name(name)
        assert re.fullmatch(r"specific\.inmemory![0-9a-f]+", name)
        assert ".." not in name
    custom = await layer.new_channel("worker")
    assert custom.startswith("worker.inmemory!")


async def test_new_channel_name_can_be_sent_to_and_received_from():
    layer = InMemoryChannelLayer()
    name = await layer.new_channel()
    await layer.send(name, {"type": "direct"})
    assert await layer.receive(name) == {"type": "direct"}


@pytest.mark.parametrize("prefix", ["bad!prefix", "has space", "", 5])
async def test_new_channel_rejects_an_invalid_prefix(prefix):
    with pytest.raises(TypeError, match="new_channel prefix") as info:
        await InMemoryChannelLayer().new_channel(prefix)
    assert repr(prefix) in str(info.value)


async def test_new_channel_accepts_the_longest_prefix_that_fits_and_no_longer():
    layer = InMemoryChannelLayer()
    room = len(".inmemory!") + 16
    name = await layer.new_channel("p" * (MAX_NAME_LENGTH - room))
    assert len(name) == MAX_NAME_LENGTH
    layer.require_valid_channel_name(name)
    with pytest.raises(TypeError, match="new_channel prefix must be a str of at most 74"):
        await layer.new_channel("p" * (MAX_NAME_LENGTH - room + 1))


# Capacity ----------------------------------------------------------------------


async def test_send_to_full_channel_raises_channel_full_and_keeps_earlier_messages():
    layer = InMemoryChannelLayer(capacity=2)
    await layer.send("small", {"type": "a"})
    await layer.send("small", {"type": "b"})
    with pytest.raises(ChannelFull, match=r"'small' is at its capacity of 2"):
        await layer.send("small", {"type": "c"})
    assert await layer.receive("small") == {"type": "a"}
    await layer.send("small", {"type": "d"})  # room again after one was taken
    assert [(await layer.receive("small"))["type"] for _ in range(2)] == ["b", "d"]


async def test_channel_capacity_glob_pattern_limits_matching_channels_only():
    layer = InMemoryChannelLayer(capacity=3, channel_capacity={"http.response!*": 1})
    await layer.send("http.response!abc", {"type": "r"})
    with pytest.raises(ChannelFull):
        await layer.send("http.response!abc", {"type": "r"})
    for _ in range(3):
        await layer.send("other", {"type": "o"})
    with pytest.raises(ChannelFull):
        await layer.send("other", {"type": "o"})


async def test_channel_capacity_regex_pattern_first_match_wins():
    layer = InMemoryChannelLayer(
        capacity=5, channel_capacity={re.compile(r"^tiny\."): 1, "tiny.*": 4}
    )
    await layer.send("tiny.q", {"type": "t"})
    with pytest.raises(ChannelFull):
        await layer.send("tiny.q", {"type": "t"})


# Expiry --------------------------------------------------------------------------


async def test_messages_older_than_expiry_are_never_delivered():
    layer = InMemoryChannelLayer(expiry=0.05)
    await layer.send("exp", {"type": "old"})
    await asyncio.sleep(0.1)
    await layer.send("exp", {"type": "new"})
    assert await layer.receive("exp") == {"type": "new"}
    assert "exp" not in layer.channels


async def test_channels_nobody_reads_lose_their_expired_messages_when_others_receive():
    layer = InMemoryChannelLayer(expiry=1)  # long enough for a slow machine's first part
    for number in range(100):  # consumers that went away without reading
        await layer.send(f"gone{number}", {"type": "lost"})
    await layer.send("busy", {"type": "first"})
    assert await layer.receive("busy") == {"type": "first"}  # none expired yet
    assert len(layer.channels) == 100
    await asyncio.sleep(1.1)
    await layer.send("busy", {"type": "later"})
    assert await layer.receive("busy") == {"type": "later"}
    assert len(layer.channels) == 0


async def test_expired_messages_do_not_count_against_capacity():
    layer = InMemoryChannelLayer(expiry=0.05, capacity=1)
    await layer.send("exp", {"type": "old"})
    await asyncio.sleep(0.1)
    await layer.send("exp", {"type": "new"})
    assert await layer.receive("exp") == {"type": "new"}


async def test_expired_messages_do_not_count_against_a_members_capacity_in_a_group_send():
    layer = InMemoryChannelLayer(expiry=0.05, capacity=1)
    await layer.group_add("room", "exp")
    await layer.send("exp", {"type": "old"})
    await asyncio.sleep(0.1)
    await layer.group_send("room", {"type": "new"})
    assert await receive_soon(layer, "exp") == {"type": "new"}
    assert "exp" not in layer._mailboxes


# Groups --------------------------------------------------------------------------


async def test_group_send_delivers_once_to_every_member():
    layer = InMemoryChannelLayer()
    await layer.group_add("room", "alice")
    await layer.group_add("room", "bob")
    await layer.group_add("room", "bob")  # adding twice must not deliver twice
    await layer.group_send("room", {"type": "hello"})
    assert await layer.receive("alice") == {"type": "hello"}
    assert await layer.receive("bob") == {"type": "hello"}
    assert "bob" not in layer._mailboxes  # nothing left behind


async def test_group_discard_stops_delivery_and_forgets_an_empty_group():
    layer = InMemoryChannelLayer()
    await layer.group_add("room", "alice")
    await layer.group_add("room", "bob")
    await layer.group_discard("room", "alice")
    await layer.group_discard("room", "never-joined")
    await layer.group_send("room", {"type": "hello"})
    assert "alice" not in layer._mailboxes
    assert await layer.receive("bob") == {"type": "hello"}
    await layer.group_discard("room", "bob")
    assert "room" not in layer._groups.groups()


async def test_group_send_to_unknown_group_does_nothing():
    layer = InMemoryChannelLayer()
    await layer.group_send("empty", {"type": "hello"})
    assert not layer._mailboxes and not layer._groups.groups()


async def test_group_send_skips_a_full_member_without_raising_and_reaches_the_rest():
    layer = InMemoryChannelLayer(capacity=1)
    await layer.send("full", {"type": "already.here"})
    await layer.group_add("room", "full")
    await layer.group_add("room", "free")
    await layer.group_send("room", {"type": "broadcast"})
    assert await layer.receive("free") == {"type": "broadcast"}
    assert await layer.receive("full") == {"type": "already.here"}
    assert "full" not in layer._mailboxes  # the broadcast was not queued behind it


async def test_a_large_group_send_reaches_each_member_once_and_skips_only_the_full_ones():
    """More members than one pass of the fan-out takes under the lock (FAN_OUT_BATCH):
    full ones in every pass are skipped, each other member gets the message once, and
    receivers parked on their channels are woken."""
    layer = InMemoryChannelLayer(capacity=1, channel_capacity={"roomy.*": 2})
    members = [f"m{n}" for n in range(3 * FAN_OUT_BATCH + 7)]
    full = {members[0], members[FAN_OUT_BATCH - 1], members[FAN_OUT_BATCH], members[-1]}
    for channel in members:
        await layer.group_add("room", channel)
        if channel in full:
            await layer.send(channel, {"type": "already.here"})
    await layer.send("roomy.one", {"type": "already.here"})  # room for one more
    await layer.group_add("room", "roomy.one")
    parked = {c: asyncio.ensure_future(layer.receive(c)) for c in members[1:40] if c not in full}
    await wait_until_waiting(layer, members[39])
    await layer.group_send("room", {"type": "broadcast"})
    for message in await asyncio.wait_for(asyncio.gather(*parked.values()), 2):
        assert message == {"type": "broadcast"}
    for channel in [*members, "roomy.one"]:
        if channel in full:
            assert await receive_soon(layer, channel) == {"type": "already.here"}
        elif channel == "roomy.one":
            assert await receive_soon(layer, channel) == {"type": "already.here"}
            assert await receive_soon(layer, channel) == {"type": "broadcast"}
        elif channel not in parked:
            assert await receive_soon(layer, channel) == {"type": "broadcast"}
        assert channel not in layer._mailboxes, channel  # exactly once: nothing left


async def test_receive_checks_a_name_it_remembers_as_valid_only_once_and_forgets_in_bulk(
    monkeypatch,
):
    layer = InMemoryChannelLayer()
    checked = []
    check = layer.require_valid_channel_name
    monkeypatch.setattr(
        layer, "require_valid_channel_name", lambda n: checked.append(n) or check(n)
    )
    monkeypatch.setattr("channels_layer.memory.CHECKED_NAMES_KEPT", 2)
    for channel in ("a", "a", "b", "a", "c", "a"):
        layer._mailboxes.put(channel, layer.serialize({"type": "x"}), 60, None)  # unchecked
        await layer.receive(channel)
    # "c" filled the remembered names: they were forgotten, so "a" was checked again.
    assert checked == ["a", "b", "c", "a"]
    for bad in ("bad name", "a" * (MAX_NAME_LENGTH + 1), 5, ["a"]):
        with pytest.raises(TypeError, match="Channel name"):
            await layer.receive(bad)


async def test_group_names_are_validated():
    layer = InMemoryChannelLayer()
    with pytest.raises(TypeError, match="Group name"):
        await layer.group_add("bad!group", "chan")
    with pytest.raises(TypeError, match="Channel name"):
        await layer.group_add("group", "bad chan")
    with pytest.raises(TypeError, match="Group name"):
        await layer.group_send("bad group", {"type": "t"})


async def test_group_send_validates_the_message_even_with_no_members():
    layer = InMemoryChannelLayer()
    with pytest.raises(ValueError, match="'type'"):
        await layer.group_send("room", {"text": "no type"})


async def test_stale_group_membership_is_dropped_and_not_delivered():
    layer = InMemoryChannelLayer(group_expiry=0.05)
    await layer.group_add("room", "gone")
    await asyncio.sleep(0.1)
    await layer.group_send("room", {"type": "late"})
    assert "room" not in layer._groups.groups()
    assert "gone" not in layer._mailboxes


async def test_group_add_refreshes_membership():
    layer = InMemoryChannelLayer(group_expiry=0.3)
    await layer.group_add("room", "stay")
    await asyncio.sleep(0.2)
    await layer.group_add("room", "stay")
    await asyncio.sleep(0.2)  # 0.4 s after the first add, 0.2 s after the refresh
    await layer.group_send("room", {"type": "still.here"})
    assert await layer.receive("stay") == {"type": "still.here"}


async def test_each_receiver_gets_an_independent_copy():
    layer = InMemoryChannelLayer()
    await layer.group_add("room", "one")
    await layer.group_add("room", "two")
    original = {"type": "t", "data": {"items": [1, 2]}}
    await layer.group_send("room", original)
    first = await layer.receive("one")
    first["data"]["items"].append(3)
    original["data"]["items"].append(99)
    assert await layer.receive("two") == {"type": "t", "data": {"items": [1, 2]}}


# Flush ---------------------------------------------------------------------------


async def test_flush_empties_channels_and_groups():
    layer = InMemoryChannelLayer()
    await layer.send("c1", {"type": "old"})
    await layer.group_add("room", "c2")
    await layer.flush()
    assert not layer._mailboxes and not layer._groups.groups()
    await layer.group_send("room", {"type": "after.flush"})
    await layer.send("c1", {"type": "new"})
    assert await layer.receive("c1") == {"type": "new"}
    assert "c2" not in layer._mailboxes


async def test_close_leaves_the_layer_usable():
    layer = InMemoryChannelLayer()
    await layer.send("c", {"type": "kept"})
    await layer.close()
    assert await layer.receive("c") == {"type": "kept"}


# Cancellation and bookkeeping --------------------------------------------------


async def test_cancelled_receive_does_not_lose_the_next_message():
    layer = InMemoryChannelLayer()
    receiver = asyncio.create_task(layer.receive("c"))
    await wait_until_waiting(layer, "c")
    receiver.cancel()
    with pytest.raises(asyncio.CancelledError):
        await receiver
    await layer.send("c", {"type": "next"})
    assert await layer.receive("c") == {"type": "next"}


async def test_receiver_cancelled_after_being_woken_hands_the_message_on():
    layer = InMemoryChannelLayer()
    first = asyncio.create_task(layer.receive("c"))
    await wait_until_waiting(layer, "c", 1)
    second = asyncio.create_task(layer.receive("c"))
    await wait_until_waiting(layer, "c", 2)
    await layer.send("c", {"type": "only"})  # wakes `first`, which has not run yet
    first.cancel()
    assert await asyncio.wait_for(second, 1) == {"type": "only"}
    assert first.cancelled()
    assert "c" not in layer._mailboxes


async def test_bookkeeping_is_dropped_for_emptied_and_abandoned_channels():
    layer = InMemoryChannelLayer()
    await layer.send("used", {"type": "t"})
    await layer.receive("used")
    assert "used" not in layer._mailboxes
    waiting = asyncio.create_task(layer.receive("abandoned"))
    await wait_until_waiting(layer, "abandoned")
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert not layer._mailboxes


# Threads and loops --------------------------------------------------------------


async def test_send_from_another_thread_and_loop_wakes_a_receiver_on_this_loop():
    layer = InMemoryChannelLayer()
    receiver = asyncio.create_task(layer.receive("cross"))
    await wait_until_waiting(layer, "cross")
    send_sync = async_to_sync(layer.send)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, send_sync, "cross", {"type": "from.thread"})
    assert await asyncio.wait_for(receiver, 1) == {"type": "from.thread"}


async def test_group_send_from_another_thread_reaches_a_waiting_receiver():
    layer = InMemoryChannelLayer()
    await layer.group_add("room", "member")
    receiver = asyncio.create_task(layer.receive("member"))
    await wait_until_waiting(layer, "member")
    loop = asyncio.get_running_loop()
    group_send = async_to_sync(layer.group_send)
    await loop.run_in_executor(None, group_send, "room", {"type": "broadcast"})
    assert await asyncio.wait_for(receiver, 1) == {"type": "broadcast"}


def test_receiver_stranded_on_a_closed_loop_does_not_swallow_messages():
    layer = InMemoryChannelLayer()
    old_loop = asyncio.new_event_loop()
    stranded = old_loop.create_task(layer.receive("c"))
    old_loop.run_until_complete(asyncio.sleep(0))
    assert layer._mailboxes.waiting("c") == 1
    old_loop.close()  # the receiver never finishes: like a test loop torn down mid-wait

    async def exchange():
        await layer.send("c", {"type": "t"})
        return await layer.receive("c")

    assert asyncio.run(exchange()) == {"type": "t"}
    assert not stranded.done()
    stranded._log_destroy_pending = False  # stranded on purpose; silence asyncio's GC warning


async def test_a_full_member_missing_broadcasts_is_logged_once_not_per_message(caplog):
    layer = InMemoryChannelLayer(capacity=1)
    slow = await layer.new_channel()
    await layer.group_add("room", slow)
    with caplog.at_level(logging.WARNING, logger="channels_layer"):
        for number in range(6):
            await layer.group_send("room", {"type": "news", "n": number})
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1 and "not keeping up" in warnings[0], warnings
    assert (await layer.receive(slow))["n"] == 0
