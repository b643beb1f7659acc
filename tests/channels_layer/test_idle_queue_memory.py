"""What a channel whose consumer waits for its next message costs: every idle connection
of a server holds one (10,000 in the scale benchmark). In bytes, and in objects kept for
the cyclic collector to scan (issue 20): the future and the queue, which is its list of
waiters."""

import gc
import tracemalloc

from channels_layer.mailbox import Mailboxes


def growth_per_channel(channels, warm, start, read):
    """How much ``read()`` grows past ``start()`` per channel while ``channels`` more wait,
    ``warm`` having waited first (the dict and free lists grown); the mailboxes, the
    channels' names and their waiters too."""
    mailboxes = Mailboxes()
    names = [f"specific.inmemory!{index:016x}" for index in range(warm + channels)]
    kept = [mailboxes.when_ready(name) for name in names[:warm]]
    before = start()
    kept += [mailboxes.when_ready(name) for name in names[warm:]]
    return (read() - before) / channels, mailboxes, names, kept


def traced_from_now():
    tracemalloc.start()
    return tracemalloc.get_traced_memory()[0]


def tracked_objects():
    gc.collect()
    return len(gc.get_objects())


async def test_a_waiting_channel_costs_less_than_350_bytes():
    # 394 bytes with an empty messages list and a four-slot waiters list per queue; 314
    # with neither (the shared empty tuple, a list of one). Both include the future
    # (176) and the channel's share of the mailboxes' dict.
    try:
        used, *_ = growth_per_channel(
            4000, 100, traced_from_now, lambda: tracemalloc.get_traced_memory()[0]
        )
    finally:
        tracemalloc.stop()
    assert used < 350, used


async def test_a_waiting_channel_keeps_two_tracked_objects():
    per_channel, mailboxes, names, kept = growth_per_channel(
        1000, 10, tracked_objects, tracked_objects
    )
    assert per_channel < 2.1, per_channel  # a _Ready, a _Queue (3.0 with a list of waiters)
    # The waiters still behave as a list of them, oldest first, withdrawn when cancelled.
    again = mailboxes.when_ready(names[-1])
    assert mailboxes.waiting(names[-1]) == 2
    kept[-1].cancel()
    assert mailboxes.waiting(names[-1]) == 1
    assert mailboxes.put(names[-1], b"1", 60.0, None)
    assert again.done() and mailboxes.waiting(names[-1]) == 0


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
