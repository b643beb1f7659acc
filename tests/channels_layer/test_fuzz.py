"""Fuzzing the channel layer API with Hypothesis, on the in-memory, Redis and Redis pub/sub
layers: generated channel names, group names and messages (tests/fuzzing.py). Valid names and
encodable messages round-trip exactly; anything else is refused at once with an error that
names the defect, and reaches no one. The test at the end pins a defect the fuzzing found:
messages nested too deeply for the checks.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import settings as fuzz_settings
from hypothesis import strategies as st

from channels_layer import InMemoryChannelLayer
from channels_layer.base import MAX_NAME_LENGTH
from channels_layer.exceptions import MessageTooLarge
from channels_layer.pubsub import RedisPubSubChannelLayer
from channels_layer.redis import RedisChannelLayer
from tests.fuzzing import (
    FUZZ,
    LAYER_OPERATIONS,
    NAME_CHARS,
    SMALL_LIMIT,
    TIMEOUT,
    assert_no_errors_since,
    layer_operations,
)


def valid_group(name: Any) -> bool:
    return (
        isinstance(name, str)
        and 0 < len(name) <= MAX_NAME_LENGTH
        and all(c in NAME_CHARS for c in name)
    )


def valid_channel(name: Any) -> bool:
    if not isinstance(name, str) or len(name) > MAX_NAME_LENGTH:
        return False
    shared, bang, local = name.partition("!")
    return valid_group(shared) and (not bang or all(c in NAME_CHARS for c in local))


def wire(value: Any) -> Any:
    """What a receiver gets back: tuples as lists, bytes-likes as bytes."""
    if isinstance(value, dict):
        return {key: wire(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [wire(item) for item in value]
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    return value


def same(left: Any, right: Any) -> bool:
    """Equal, with the same types all the way down (True is not 1), NaN equal to NaN."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(same(left[k], right[k]) for k in left)
    if isinstance(left, list):
        return len(left) == len(right) and all(map(same, left, right))
    if isinstance(left, float):
        return (math.isnan(left) and math.isnan(right)) or (
            left == right and math.copysign(1, left) == math.copysign(1, right)
        )
    return left == right


def encoded_size(message: dict) -> int:
    return len(msgpack.packb(message, use_bin_type=True))


LAYERS = {
    "memory": None,
    "redis": RedisChannelLayer,
    "pubsub": RedisPubSubChannelLayer,
}


@pytest.fixture(params=list(LAYERS))
async def layer(request, make_layer):
    if request.param == "memory":
        return InMemoryChannelLayer(max_message_size=SMALL_LIMIT)
    return make_layer(LAYERS[request.param], max_message_size=SMALL_LIMIT)


async def within(awaitable: Any) -> Any:
    return await asyncio.wait_for(awaitable, TIMEOUT)


@dataclass
class LayerFuzz:
    layer: Any
    tally: Counter

    @property
    def redis(self) -> bool:
        return not isinstance(self.layer, InMemoryChannelLayer)

    async def refused(self, call: Any, error: type, words: str) -> None:
        """``call`` must raise ``error`` at once, with ``words`` in its message."""
        with pytest.raises(error) as raised:
            await within(call)
        assert words in str(raised.value), (words, str(raised.value))
        self.tally["refused"] += 1

    def message_outcome(self, message: Any) -> tuple[type, str] | None:
        """The refusal a generated message must get, or None if it must arrive intact."""
        if not isinstance(message, dict):
            return TypeError, "must be a dict"
        if encoded_size(message) > SMALL_LIMIT:
            return MessageTooLarge, f"over the limit of {SMALL_LIMIT} bytes"
        return None

    async def receivable(self, name: str) -> str:
        """A channel named after ``name`` that this process may receive on."""
        if self.redis and "!" in name:
            return await within(self.layer.new_channel(name.partition("!")[0][:60]))
        return name

    async def still_empty(self, channel: str) -> None:
        """Nothing refused reached ``channel``: the next message received is a fresh one."""
        await within(self.layer.send(channel, {"type": "sentinel"}))
        assert await within(self.layer.receive(channel)) == {"type": "sentinel"}

    async def send(self, name: Any, message: Any, refusal: tuple[type, str] | None) -> None:
        self.tally["operations"] += 1
        if not valid_channel(name):
            await self.refused(self.layer.send(name, {"type": "x"}), TypeError, "Channel name")
            await self.refused(self.layer.receive(name), TypeError, "Channel name")
            return
        channel = await self.receivable(name)
        if refusal is None:
            refusal = self.message_outcome(message)
        if refusal:
            await self.refused(self.layer.send(channel, message), *refusal)
            await self.still_empty(channel)
            return
        await within(self.layer.send(channel, message))
        received = await within(self.layer.receive(channel))
        assert same(received, wire(message)), (received, message)
        self.tally["round trips"] += 1

    async def foreign(self, name: str) -> None:
        """Redis: another process's channel may be sent to but not received from."""
        self.tally["operations"] += 1
        await within(self.layer.send(name, {"type": "for.them"}))
        await self.refused(self.layer.receive(name), ValueError, "belongs to another process")

    async def group(self, group: Any, name: Any, message: Any, refusal: Any) -> None:
        self.tally["operations"] += 1
        layer = self.layer
        if not valid_group(group):
            channel = "fine"
            await self.refused(layer.group_add(group, channel), TypeError, "Group name")
            await self.refused(layer.group_send(group, {"type": "x"}), TypeError, "Group name")
            await self.refused(layer.group_discard(group, channel), TypeError, "Group name")
            return
        if not valid_channel(name):
            await self.refused(layer.group_add(group, name), TypeError, "Channel name")
            await self.refused(layer.group_discard(group, name), TypeError, "Channel name")
            return
        channel = await self.receivable(name)
        await within(layer.group_add(group, channel))
        if refusal is None:
            refusal = self.message_outcome(message)
        if refusal:
            await self.refused(layer.group_send(group, message), *refusal)
            await self.still_empty(channel)
        else:
            await within(layer.group_send(group, message))
            received = await within(layer.receive(channel))
            assert same(received, wire(message)), (received, message)
            self.tally["round trips"] += 1
        await within(layer.group_discard(group, channel))
        await within(layer.group_send(group, {"type": "after.discard"}))
        await self.still_empty(channel)

    async def new_channel(self, prefix: Any) -> None:
        self.tally["operations"] += 1
        owner = self.layer.client_prefix if self.redis else "inmemory"
        room = len(f".{owner}!") + 16
        if not (valid_group(prefix) and len(prefix) <= MAX_NAME_LENGTH - room):
            await self.refused(self.layer.new_channel(prefix), TypeError, "new_channel prefix")
            return
        channel = await within(self.layer.new_channel(prefix))
        assert valid_channel(channel) and channel.startswith(f"{prefix}.{owner}!")
        await within(self.layer.send(channel, {"type": "hello", "to": channel}))
        assert await within(self.layer.receive(channel)) == {"type": "hello", "to": channel}
        self.tally["round trips"] += 1


@pytest.mark.sends(operations=LAYER_OPERATIONS)
@fuzz_settings(FUZZ, max_examples=30)
@given(operations=st.lists(layer_operations, min_size=12, max_size=20))
async def test_layer_api_accepts_valid_input_and_refuses_the_rest(layer, tally, caplog, operations):
    """Valid names and encodable messages round-trip exactly (tuples come back as lists);
    an invalid name raises TypeError naming it; a defective message raises TypeError or
    ValueError naming the defect, at once, and reaches no one."""
    start = len(caplog.records)
    fuzz = LayerFuzz(layer, tally)
    for operation, *arguments in operations:
        if operation == "send":
            name, (message, refusal) = arguments
            await fuzz.send(name, message, refusal)
        elif operation == "group":
            group, name, (message, refusal) = arguments
            await fuzz.group(group, name, message, refusal)
        elif operation == "new_channel":
            await fuzz.new_channel(*arguments)
        elif fuzz.redis:
            await fuzz.foreign(*arguments)
        else:
            await fuzz.send(arguments[0], {"type": "local"}, None)
    assert_no_errors_since(caplog, start)


@pytest.mark.parametrize("depth", [2_000, 100_000])
async def test_a_too_deeply_nested_message_is_refused_with_a_clear_error(depth):
    layer = InMemoryChannelLayer()
    nested: Any = "bottom"
    for _ in range(depth):
        nested = [nested]
    with pytest.raises((TypeError, ValueError)):
        await layer.send("deep", {"type": "deep", "value": nested})
    await layer.send("deep", {"type": "after"})
    assert await layer.receive("deep") == {"type": "after"}
