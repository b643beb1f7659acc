"""A group's fan-out to ``receive()`` loops (part 7): a parked ``receive()`` is one
coroutine, a queue its receiver emptied is reused when it parks again, and a fan-out's
members share one tuple of the entry instead of a list each; with every guarantee kept
(order, capacity, expiry, a cancelled receiver losing nothing, each member its own copy).
"""

import asyncio
import inspect
import time

import pytest

from channels_layer.mailbox import Mailboxes
from channels_layer.memory import InMemoryChannelLayer
from channels_layer.redis import RedisChannelLayer

ON_CLUSTER = False


async def parked(mailboxes: Mailboxes, channel: str, count: int = 1) -> None:
    for _ in range(200):
        if mailboxes.waiting(channel) >= count:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"nobody parked on {channel!r}")


def awaiting(task: asyncio.Task) -> list[str]:
    """The coroutines ``task`` waits in, outermost first."""
    names, awaited = [], task.get_coro()
    while inspect.iscoroutine(awaited):
        names.append(awaited.cr_code.co_name)
        awaited = awaited.cr_await
    return names


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_a_parked_receive_is_one_coroutine(kind, make_layer):
    layer = InMemoryChannelLayer() if kind == "memory" else make_layer()
    channel = await layer.new_channel()
    receiving = asyncio.ensure_future(layer.receive(channel))
    await parked(layer._mailboxes, channel)
    assert awaiting(receiving) == ["receive"]  # not receive, then Mailboxes.get
    await layer.send(channel, {"type": "m"})
    assert await asyncio.wait_for(receiving, 2) == {"type": "m"}


async def test_a_receive_loops_queue_is_reused_when_it_parks_again():
    mailboxes = Mailboxes()
    getting = asyncio.ensure_future(mailboxes.get("a"))
    await parked(mailboxes, "a")
    queue = mailboxes._channels["a"]
    mailboxes.put("a", b"1", 60, None)
    assert await getting == (b"1", None)
    assert "a" not in mailboxes  # emptied: gone from the channels at once, as before
    getting = asyncio.ensure_future(mailboxes.get("a"))
    await parked(mailboxes, "a")
    assert mailboxes._channels["a"] is queue
    mailboxes.put("a", b"2", 60, None)
    assert await getting == (b"2", None)


async def test_a_fan_out_makes_no_list_for_members_with_nothing_queued():
    mailboxes = Mailboxes()
    channels = [f"c{n}" for n in range(5)]
    getting = [asyncio.ensure_future(mailboxes.get(channel)) for channel in channels]
    for channel in channels:
        await parked(mailboxes, channel)
    assert mailboxes.put_many(channels, b"p", 60, lambda channel: None) == []
    shared = {id(mailboxes._channels[channel].messages) for channel in channels}
    assert len(shared) == 1  # one tuple of the one entry, not a list a member
    assert await asyncio.gather(*getting) == [(b"p", None)] * 5


async def test_a_shared_entry_then_more_messages_keep_their_order_and_capacity():
    mailboxes = Mailboxes()
    getting = asyncio.ensure_future(mailboxes.get("a"))
    await parked(mailboxes, "a")
    mailboxes.put_many(["a", "b"], b"1", 60, lambda channel: 3)  # "a" shares the tuple
    assert mailboxes.put("a", b"2", 60, 3)
    assert mailboxes.put_many(["a"], b"3", 60, lambda channel: 3) == []
    assert mailboxes.put_many(["a"], b"4", 60, lambda channel: 3) == ["a"]  # full
    assert not mailboxes.put("a", b"5", 60, 3)
    assert await getting == (b"1", None)
    assert [await mailboxes.get("a") for _ in range(2)] == [(b"2", None), (b"3", None)]
    assert await mailboxes.get("b") == (b"1", None)


async def test_a_shared_entry_expires_for_each_member():
    dropped = []
    mailboxes = Mailboxes(on_discard=lambda channel, receipt: dropped.append(channel))
    mailboxes.put_many(["a", "b"], b"old", 0.05, lambda channel: None)
    time.sleep(0.06)
    mailboxes.put("b", b"new", 60, None)
    assert await mailboxes.get("b") == (b"new", None)  # the expired one was dropped first
    mailboxes.sweep()
    assert sorted(dropped) == ["a", "b"]
    assert not mailboxes


async def test_a_receiver_cancelled_after_being_woken_hands_the_message_on():
    mailboxes = Mailboxes()
    first = asyncio.ensure_future(mailboxes.get("a"))
    await parked(mailboxes, "a", 1)
    second = asyncio.ensure_future(mailboxes.get("a"))
    await parked(mailboxes, "a", 2)
    mailboxes.put_many(["a"], b"only", 60, lambda channel: None)  # wakes `first`
    first.cancel()
    assert await asyncio.wait_for(second, 1) == (b"only", None)
    assert first.cancelled()
    assert not mailboxes


async def test_a_cancelled_receiver_whose_queue_went_to_another_channel_disturbs_nothing():
    mailboxes = Mailboxes()
    first = asyncio.ensure_future(mailboxes.get("a"))
    await parked(mailboxes, "a")
    mailboxes.put("a", b"1", 60, None)  # wakes `first`, which has not run yet
    assert await mailboxes.get("a") == (b"1", None)  # someone else takes it: "a" emptied
    other = asyncio.ensure_future(mailboxes.get("b"))  # and "b" parks in a's old queue
    await parked(mailboxes, "b")
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert mailboxes.waiting("b") == 1 and "a" not in mailboxes
    mailboxes.put("b", b"2", 60, None)
    assert await asyncio.wait_for(other, 1) == (b"2", None)
    assert not mailboxes


async def test_redis_members_each_get_their_own_copy_and_a_cancelled_one_loses_nothing(
    make_layer,
):
    layer: RedisChannelLayer = make_layer()
    channels = [await layer.new_channel() for _ in range(3)]
    for channel in channels:
        await layer.group_add("room", channel)
    receivers = [asyncio.ensure_future(layer.receive(channel)) for channel in channels]
    for channel in channels:
        await parked(layer._mailboxes, channel)
    receivers[0].cancel()
    await layer.group_send("room", {"type": "m", "n": 1})
    got = await asyncio.wait_for(asyncio.gather(*receivers[1:]), 2)
    assert got == [{"type": "m", "n": 1}] * 2
    got[0]["n"] = 2
    assert got[1]["n"] == 1
    assert await asyncio.wait_for(layer.receive(channels[0]), 2) == {"type": "m", "n": 1}


async def test_a_redis_member_cancelled_after_its_broadcast_woke_it_loses_nothing(make_layer):
    layer: RedisChannelLayer = make_layer()
    channel = await layer.new_channel()
    await layer.group_add("room", channel)
    receiving = asyncio.ensure_future(layer.receive(channel))
    await parked(layer._mailboxes, channel)
    deliver = layer._groups.deliver

    def deliver_then_cancel(topic, data):
        deliver(topic, data)  # wakes the receiver, which has not run yet
        receiving.cancel()

    layer._groups.deliver = deliver_then_cancel
    await layer.group_send("room", {"type": "m"})
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(receiving, 2)
    assert await asyncio.wait_for(layer.receive(channel), 2) == {"type": "m"}
