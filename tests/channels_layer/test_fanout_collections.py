"""A broadcast to thousands of idle members, and the layer's periodic sweep over their
channels, keep nothing alive per member: on a server holding 10,000 connections each
object kept until the end of a pass counts towards the garbage collector's next run, and
a dozen runs (one of the older generation) per broadcast showed in its latency."""

import gc

import pytest

from channels_layer.mailbox import Mailboxes
from channels_layer.ready import offer_eagerly
from tests.channels_layer.receivers import Counting

MEMBERS = 5000  # seven times the collector's first threshold (700)


class Collections:
    """How many times the garbage collector ran inside the block."""

    def __init__(self):
        self.count = 0

    def _note(self, phase, info):
        if phase == "start":
            self.count += 1

    def __enter__(self):
        gc.collect()  # start from empty young generations
        gc.callbacks.append(self._note)
        return self

    def __exit__(self, *exc):
        gc.callbacks.remove(self._note)


@pytest.fixture
def collector_on():
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def idle_channels(mailboxes, count):
    channels = [f"specific.inmemory!{index:016x}" for index in range(count)]
    receivers = []
    for channel in channels:
        receiver = Counting()
        assert offer_eagerly(mailboxes.when_ready(channel), receiver)
        receivers.append(receiver)
    return channels, receivers


@pytest.mark.usefixtures("collector_on")
async def test_a_fan_out_to_idle_members_sets_off_no_collection():
    mailboxes = Mailboxes(decode=lambda channel, payload, receipt: {"type": "x"})
    channels, receivers = idle_channels(mailboxes, MEMBERS)
    with Collections() as collections:
        full = mailboxes.put_many(channels, b"payload", 60.0, lambda channel: None)
    assert full == []
    assert all((receiver.handled, receiver.released) == (1, 0) for receiver in receivers)
    assert collections.count <= 1, collections.count  # a claim kept per member: 7 or more


@pytest.mark.usefixtures("collector_on")
async def test_the_sweep_over_idle_channels_sets_off_no_collection():
    mailboxes = Mailboxes()
    _, receivers = idle_channels(mailboxes, MEMBERS)
    with Collections() as collections:
        mailboxes.sweep()
    assert collections.count <= 1, collections.count  # a pair per channel: 7 or more
    assert not any(receiver.handled or receiver.released for receiver in receivers)
    assert len(mailboxes) == MEMBERS  # the waiting ones stay


async def test_the_sweep_still_drops_expired_messages_and_idle_channels():
    dropped = []
    mailboxes = Mailboxes(on_discard=lambda channel, receipt: dropped.append(channel))
    assert mailboxes.put("gone", b"old", 0.0, None)
    assert mailboxes.put("kept", b"new", 60.0, None)
    waiting = mailboxes.when_ready("waiting")
    mailboxes.sweep()
    assert dropped == ["gone"]
    assert "gone" not in mailboxes
    assert "kept" in mailboxes and "waiting" in mailboxes
    waiting.cancel()
    assert "waiting" not in mailboxes
