"""A fan-out's members share one queued entry; group memberships still expire one by one."""

import asyncio
from types import SimpleNamespace

import pytest

from channels_layer import group_members
from channels_layer.group_members import GroupMembers
from channels_layer.mailbox import Mailboxes


async def test_a_fan_out_queues_one_shared_entry_and_each_receiver_gets_it():
    mailboxes = Mailboxes()
    channels = [f"c{index}" for index in range(600)]  # more than one FAN_OUT_BATCH
    readies = [mailboxes.when_ready(channel) for channel in channels]  # their queues exist
    assert mailboxes.put_many(channels, b"payload", 60, lambda channel: 1, "receipt") == []
    entries = {id(mailboxes._channels[channel].messages[0]) for channel in channels}
    assert len(entries) <= 3  # one per batch of 256, not one per member (600 before)
    assert all(ready.done() for ready in readies)
    for channel in channels:
        assert await mailboxes.get(channel) == (b"payload", "receipt")
        assert channel not in mailboxes  # taken, nobody waits: forgotten
    # A second fan-out to full channels (capacity 1): refused, as before.
    for channel in channels[:2]:
        mailboxes.put(channel, b"first", 60, None)
    assert mailboxes.put_many(channels[:2], b"second", 60, lambda channel: 1) == channels[:2]


async def test_an_expired_first_message_is_dropped_by_get():
    mailboxes = Mailboxes(on_discard=lambda channel, receipt: dropped.append(receipt))
    dropped: list = []
    mailboxes.put("c", b"old", 0.01, None, "old")
    mailboxes.put("c", b"new", 60, None, "new")
    await asyncio.sleep(0.02)
    assert await mailboxes.get("c") == (b"new", "new")
    assert dropped == ["old"] and "c" not in mailboxes


def test_members_expire_one_by_one_with_renewals(monkeypatch):
    now = [100.0]
    # This module's clock only: patching time.monotonic itself would stop every loop's.
    monkeypatch.setattr(group_members, "time", SimpleNamespace(monotonic=lambda: now[0]))
    members = GroupMembers()
    assert members.add("g", "a", 10)  # until 110
    members.add("g", "b", 20)  # until 120
    members.add("g", "a", 30)  # renewed: until 130
    now[0] = 115
    assert members.live_members("g") == ["a", "b"]
    members.add("g", "c", 1)  # until 116: earlier than every other
    now[0] = 116.5
    assert members.live_members("g") == ["a", "b"]
    now[0] = 125
    assert members.live_members("g") == ["a"]
    now[0] = 131
    assert members.live_members("g") == []
    assert members.groups() == []
    assert members.add("g", "d", 5)  # the group starts again
    now[0] = 135
    assert members.live_members("g") == ["d"]
    assert members.discard("g", "d")
    assert members.live_members("g") == []


def test_a_membership_with_an_unusable_expiry_leaves_the_group_as_it_was():
    members = GroupMembers()
    with pytest.raises(TypeError):
        members.add("g", "a", None)  # say, a group_expiry set to None at run time
    assert members.live_members("g") == []
    assert members.add("g", "b", 10)
    assert members.live_members("g") == ["b"]
