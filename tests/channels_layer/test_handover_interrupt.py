"""A KeyboardInterrupt (a signal: it lands on any bytecode of the main thread) while a
fan-out's message is decoded or copied for a claimed member, not only in its handler:
that member's claim and every later one are given back, or their consumers' turns stay
taken."""

import pytest

from channels_layer.memory import InMemoryChannelLayer
from channels_layer.ready import offer_eagerly
from tests.channels_layer.receivers import Counting


@pytest.mark.parametrize("interrupted", [0, 1, 2])
async def test_claims_are_given_back_after_a_keyboardinterrupt_while_decoding(interrupted):
    layer = InMemoryChannelLayer()
    decode = layer._mailboxes._decode
    calls = []

    def interrupting(channel, payload, receipt):
        calls.append(channel)
        if len(calls) == interrupted + 1:
            raise KeyboardInterrupt
        return decode(channel, payload, receipt)

    layer._mailboxes._decode = interrupting
    layer._mailboxes.decode_once = False  # one decoding per member
    receivers, readies = [], []
    for _ in range(3):
        channel = await layer.new_channel()
        await layer.group_add("room", channel)
        receivers.append(Counting())
        ready = await layer.when_ready(channel)
        assert offer_eagerly(ready, receivers[-1])
        readies.append(ready)
    with pytest.raises(KeyboardInterrupt):
        await layer.group_send("room", {"type": "n", "n": 0})
    # Before it, handled; it and after it, given back: every claim ends once.
    assert sorted((r.handled, r.released) for r in receivers) == sorted(
        [(1, 0)] * interrupted + [(0, 1)] * (3 - interrupted)
    )
    for ready in readies:
        ready.cancel()
