"""What a channel whose consumer waits for its next message costs in memory: every idle
connection of a server holds one (10,000 in the scale benchmark)."""

import tracemalloc

from channels_layer.mailbox import Mailboxes

CHANNELS = 4000


async def test_a_waiting_channel_costs_less_than_350_bytes():
    # 394 bytes with an empty messages list and a four-slot waiters list per queue; 314
    # with neither (the shared empty tuple, a list of one). Both include the future
    # (176) and the channel's share of the mailboxes' dict.
    mailboxes = Mailboxes()
    names = [f"specific.inmemory!{index:016x}" for index in range(CHANNELS + 100)]
    kept = [mailboxes.when_ready(name) for name in names[:100]]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept += [mailboxes.when_ready(name) for name in names[100:]]
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert used / CHANNELS < 350, used / CHANNELS


async def test_the_first_message_of_a_new_queue_goes_to_a_list_of_its_own():
    mailboxes = Mailboxes()
    assert mailboxes.put("a", b"1", 60.0, None)
    assert mailboxes.put("b", b"2", 60.0, None)
    assert mailboxes.put("a", b"3", 60.0, None)
    assert await mailboxes.get("a") == (b"1", None)
    assert await mailboxes.get("b") == (b"2", None)
    assert await mailboxes.get("a") == (b"3", None)
    assert mailboxes.put("b", b"4", 60.0, capacity=1)
    assert not mailboxes.put("b", b"5", 60.0, capacity=1)
    assert await mailboxes.get("b") == (b"4", None)
