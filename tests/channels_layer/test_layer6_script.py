"""Issue 20, part 6: the cheaper inbox send script keeps its guarantees. It refreshes the
inbox's and pending hash's expiry at most once per ``REFRESH_SECONDS`` (and the inbox's
whenever a send makes it anew), with a time to live that covers the interval; entries keep
numbers that only grow, across a flushed inbox too."""

import asyncio
from typing import Any, NamedTuple

import pytest
import redis

from channels_layer import inbox_order
from channels_layer.inbox_order import split_entry
from channels_layer.redis_delivery import inbox_ttl_ms

pytestmark = pytest.mark.single_server


@pytest.fixture
def server(redis_servers):
    (started,) = redis_servers(1)
    return started


def _calls(client: redis.Redis, command: str) -> int:
    return client.info("commandstats").get(f"cmdstat_{command}", {"calls": 0})["calls"]


class Pair(NamedTuple):
    sender: Any
    receiver: Any
    channel: str
    client: redis.Redis
    inbox: str
    pending: str


@pytest.fixture
async def pair(make_layer, server) -> Pair:
    """A sender and a receiver on the test's Redis (messages expire after 5 s), the
    receiver's channel, a client of that Redis, and the receiving process's two keys."""
    url = f"redis://127.0.0.1:{server.port}"
    sender, receiver = make_layer(hosts=[url], expiry=5), make_layer(hosts=[url], expiry=5)
    owner = receiver.client_prefix
    return Pair(
        sender,
        receiver,
        await receiver.new_channel(),
        redis.Redis(port=server.port),
        sender._key("inbox", owner),
        sender._key("pending", owner),
    )


async def test_a_busy_inbox_refreshes_its_expiry_once_per_interval(pair):
    sender, _, channel, client, inbox, pending = pair
    before = _calls(client, "expire") + _calls(client, "pexpire")
    for n in range(50):
        await sender.send(channel, {"type": "n", "n": n})
    refreshes = _calls(client, "expire") + _calls(client, "pexpire") - before
    # Two keys, refreshed by the first send (in well under REFRESH_SECONDS; once more if
    # the interval ended meanwhile), not by each of the 50.
    assert 2 <= refreshes <= 4
    assert client.llen(inbox) == 50
    # Each key lives at least expiry + 1 s more after any send, as when every send
    # refreshed it.
    for key in (inbox, pending):
        assert client.pttl(key) > (5 + 1) * 1000
    assert client.pttl(inbox) <= inbox_ttl_ms(5)


async def test_an_inbox_made_anew_between_refreshes_still_expires(pair):
    """A receiver drains the inbox (Redis deletes an empty list): the send that makes it
    again gives it a time to live, though the pending hash needs no refresh yet."""
    sender, _, channel, client, inbox, pending = pair
    await sender.send(channel, {"type": "n", "n": 1})
    client.delete(inbox)  # as a BLMPOP that took its last entry
    await sender.send(channel, {"type": "n", "n": 2})
    assert client.llen(inbox) == 1
    assert client.pttl(inbox) > (5 + 1) * 1000
    assert client.pttl(pending) > (5 + 1) * 1000


async def test_the_keys_are_refreshed_again_after_the_interval(pair):
    sender, _, channel, client, inbox, pending = pair
    await sender.send(channel, {"type": "n", "n": 1})
    client.pexpire(inbox, 4_000)  # as if set a while ago: a send within the interval
    client.pexpire(pending, 4_000)  # leaves them be
    await sender.send(channel, {"type": "n", "n": 2})
    assert client.pttl(inbox) <= 4_000 and client.pttl(pending) <= 4_000
    await asyncio.sleep(inbox_order.REFRESH_SECONDS + 0.05)
    await sender.send(channel, {"type": "n", "n": 3})
    assert client.pttl(inbox) > (5 + 1) * 1000 and client.pttl(pending) > (5 + 1) * 1000


async def test_entry_numbers_only_grow_across_a_flushed_inbox(pair):
    sender, receiver, channel, client, inbox, pending = pair
    await asyncio.gather(*(sender.send(channel, {"type": "n", "n": n}) for n in range(20)))
    numbers = [split_entry(entry)[0] for entry in client.lrange(inbox, 0, -1)]
    assert numbers == sorted(set(numbers)) and len(numbers) == 20
    assert int(client.hget(pending, inbox_order.SEQ_FIELD)) == numbers[-1]
    client.delete(inbox, pending)
    await sender.send(channel, {"type": "n", "n": 20})
    (entry,) = client.lrange(inbox, 0, -1)
    assert split_entry(entry)[0] > numbers[-1]
    # And the messages are as sent.
    received = [(await asyncio.wait_for(receiver.receive(channel), 2))["n"] for _ in range(1)]
    assert received == [20]


async def test_an_inbox_made_anew_expires_with_its_pending_hash(pair):
    """The counts must not go before the entries they count (capacity would drift)."""
    sender, _, channel, client, inbox, pending = pair
    await sender.send(channel, {"type": "n", "n": 1})
    client.delete(inbox)  # drained
    await asyncio.sleep(0.5)  # the hash's deadline is now half a second nearer
    await sender.send(channel, {"type": "n", "n": 2})
    assert abs(client.pttl(inbox) - client.pttl(pending)) < 100


async def test_a_sender_with_a_shorter_expiry_never_shortens_anothers(make_layer, server):
    url = f"redis://127.0.0.1:{server.port}"
    receiver = make_layer(hosts=[url], expiry=60)
    short, long = make_layer(hosts=[url], expiry=1), make_layer(hosts=[url], expiry=60)
    channel = await receiver.new_channel()
    client = redis.Redis(port=server.port)
    inbox = short._key("inbox", receiver.client_prefix)
    await short.send(channel, {"type": "n", "n": 1})
    await long.send(channel, {"type": "n", "n": 2})  # within the interval: still refreshed
    assert client.pttl(inbox) > 61_000
    await short.send(channel, {"type": "n", "n": 3})
    assert client.pttl(inbox) > 60_000
