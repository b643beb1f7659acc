"""What a channel whose consumer waits for its next message keeps for the cyclic
collector to scan (issue 20): the future and the queue, which is its list of waiters."""

import gc

from channels_layer.mailbox import Mailboxes

CHANNELS = 1000


async def test_a_waiting_channel_keeps_two_tracked_objects():
    mailboxes = Mailboxes()
    names = [f"specific.inmemory!{index:016x}" for index in range(CHANNELS + 10)]
    kept = [mailboxes.when_ready(name) for name in names[:10]]
    gc.collect()
    before = len(gc.get_objects())
    kept += [mailboxes.when_ready(name) for name in names[10:]]
    gc.collect()
    per_channel = (len(gc.get_objects()) - before) / CHANNELS
    assert per_channel < 2.1, per_channel  # a _Ready, a _Queue (3.0 with a list of waiters)
    # The waiters still behave as a list of them, oldest first, withdrawn when cancelled.
    again = mailboxes.when_ready(names[-1])
    assert mailboxes.waiting(names[-1]) == 2
    kept[-1].cancel()
    assert mailboxes.waiting(names[-1]) == 1
    assert mailboxes.put(names[-1], b"1", 60.0, None)
    assert again.done() and mailboxes.waiting(names[-1]) == 0
