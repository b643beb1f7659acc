"""The message size limit (``max_message_size``, 1 MiB by default as the spec asks) on every
backend, and the serializer's refusal of anything that is not plain msgpack data."""

import asyncio
import pathlib
import pickle  # noqa: TID251  makes the payloads deserialize() must refuse
import re
import time

import msgpack
import pytest
import redis
from django.test import override_settings

from channels_layer import InMemoryChannelLayer, InvalidChannelLayerError, channel_layers
from channels_layer.exceptions import MessageTooLarge
from channels_layer.pubsub import RedisPubSubChannelLayer
from channels_layer.redis import RedisChannelLayer
from consumers import exceptions as consumer_exceptions
from tests.redis_servers import REDIS_URL

MIB = 1024 * 1024
KINDS = ["memory", "redis", "pubsub"]


@pytest.fixture(params=KINDS)
def make_pair(request, make_layer):
    """``make_pair(**config)``: a sending and a receiving layer, as two processes of one
    site (for the in-memory layer, one instance plays both)."""

    def make(**config):
        if request.param == "memory":
            layer = InMemoryChannelLayer(**config)
            return layer, layer
        layer_class = RedisChannelLayer if request.param == "redis" else RedisPubSubChannelLayer
        return make_layer(layer_class, **config), make_layer(layer_class, **config)

    return make


def sized(size, type_="big"):
    """A message whose msgpack encoding is exactly ``size`` bytes."""
    fill = size
    while True:
        message = {"type": type_, "data": b"x" * fill}
        actual = len(msgpack.packb(message, use_bin_type=True))
        if actual == size:
            return message
        fill -= actual - size


async def receive(layer, channel, timeout=3):
    return await asyncio.wait_for(layer.receive(channel), timeout)


# The limit ---------------------------------------------------------------------------


async def test_default_limit_is_one_mib_and_a_message_of_that_size_arrives_intact(make_pair):
    sender, receiver = make_pair()
    assert sender.max_message_size == MIB
    channel = await receiver.new_channel()
    largest = sized(MIB)
    await sender.send(channel, largest)
    assert await receive(receiver, channel) == largest


async def test_send_refuses_one_byte_over_the_default_limit_then_keeps_working(make_pair):
    sender, receiver = make_pair()
    channel = await receiver.new_channel()
    with pytest.raises(MessageTooLarge) as refused:
        await sender.send(channel, sized(MIB + 1))
    text = str(refused.value)
    assert f"{MIB + 1} bytes" in text and f"limit of {MIB} bytes" in text
    assert "max_message_size" in text and "not sent" in text
    await sender.send(channel, {"type": "small"})
    # The refused message never reached the channel: the next one received is the small one.
    assert await receive(receiver, channel) == {"type": "small"}


async def test_a_configured_limit_applies_to_send_on_local_and_named_channels(make_pair):
    sender, receiver = make_pair(max_message_size=1000)
    assert sender.max_message_size == 1000
    for channel in (await receiver.new_channel(), "size-named"):
        under = sized(999)
        await sender.send(channel, under)
        assert await receive(receiver, channel) == under
        await sender.send(channel, sized(1000))
        assert await receive(receiver, channel) == sized(1000)
        with pytest.raises(MessageTooLarge, match=r"1001 bytes .* limit of 1000 bytes"):
            await sender.send(channel, sized(1001))
        await sender.send(channel, {"type": "after"})
        assert await receive(receiver, channel) == {"type": "after"}


async def test_group_send_over_the_limit_reaches_no_member(make_pair):
    sender, receiver = make_pair(max_message_size=1000)
    # Consumer channels (fanned out in the receiving process) and a named channel (sent to
    # one by one on Redis): none may get any part of a refused broadcast.
    members = [await receiver.new_channel(), await receiver.new_channel(), "size-worker"]
    for member in members:
        await receiver.group_add("size-room", member)
    with pytest.raises(MessageTooLarge, match="limit of 1000 bytes"):
        await sender.group_send("size-room", sized(1001))
    await sender.group_send("size-room", {"type": "after"})
    for member in members:
        assert await receive(receiver, member) == {"type": "after"}
    under = sized(1000)
    await sender.group_send("size-room", under)
    for member in members:
        assert await receive(receiver, member) == under


async def test_the_limit_is_on_the_encoded_size_not_a_character_count(make_pair):
    sender, receiver = make_pair(max_message_size=1000)
    channel = await receiver.new_channel()
    # 400 characters, but "é" takes two bytes in UTF-8: over 800 bytes encoded.
    with pytest.raises(MessageTooLarge):
        await sender.send(channel, {"type": "text", "text": "é" * 500})
    await sender.send(channel, {"type": "text", "text": "é" * 400})
    assert (await receive(receiver, channel))["text"] == "é" * 400


async def test_the_limit_is_checked_before_encryption(make_layer):
    # Encryption makes the stored bytes larger; the limit is the message's own msgpack size.
    keys = {"symmetric_encryption_keys": ["secret"], "max_message_size": 1000}
    sender, receiver = make_layer(**keys), make_layer(**keys)
    channel = await receiver.new_channel()
    await sender.send(channel, sized(1000))
    assert await receive(receiver, channel) == sized(1000)
    with pytest.raises(MessageTooLarge):
        await sender.send(channel, sized(1001))


def test_message_too_large_is_a_value_error_and_re_exported_for_consumers():
    assert issubclass(MessageTooLarge, ValueError)
    assert consumer_exceptions.MessageTooLarge is MessageTooLarge
    assert "MessageTooLarge" in consumer_exceptions.__all__


# Configuration -----------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -1, 1.5, "1MB", None, True])
@pytest.mark.parametrize("kind", KINDS)
def test_an_invalid_max_message_size_is_refused_by_name(kind, value):
    layer_class = {
        "memory": InMemoryChannelLayer,
        "redis": RedisChannelLayer,
        "pubsub": RedisPubSubChannelLayer,
    }[kind]
    with pytest.raises(
        TypeError,
        match=re.escape(f"max_message_size (bytes) must be a positive int; got {value!r}"),
    ):
        layer_class(max_message_size=value)


def test_max_message_size_is_taken_from_channel_layers_config():
    memory = "channels_layer.memory.InMemoryChannelLayer"
    with override_settings(
        CHANNEL_LAYERS={
            "small": {"BACKEND": memory, "CONFIG": {"max_message_size": 2048}},
            "bad": {"BACKEND": memory, "CONFIG": {"max_message_size": "2KB"}},
        }
    ):
        assert channel_layers.make_backend("small").max_message_size == 2048
        with pytest.raises(InvalidChannelLayerError, match="max_message_size"):
            channel_layers.make_backend("bad")


# Only msgpack, never pickle ----------------------------------------------------------


class Exploit:
    """Pickling this would run code on the receiving side; it must never be pickled."""

    reduced = 0

    def __reduce__(self):
        Exploit.reduced += 1
        return (exec, ("raise SystemExit('unpickled')",))


class ExploitBytes(bytes):
    def __reduce__(self):
        Exploit.reduced += 1
        return (exec, ("raise SystemExit('unpickled')",))


@pytest.mark.parametrize(
    ("value", "named"),
    [
        (Exploit(), "test_message_size.Exploit"),
        ({1, 2}, "a set"),
        (frozenset({1}), "a frozenset"),
        (object(), "an object"),
        (1j, "a complex"),
        (range(3), "a range"),
    ],
)
def test_serialize_refuses_what_msgpack_cannot_carry(value, named):
    layer = InMemoryChannelLayer()
    Exploit.reduced = 0
    with pytest.raises(TypeError, match=rf"message\['v'\] is .*{re.escape(named)}.*msgpack"):
        layer.serialize({"type": "x", "v": value})
    assert Exploit.reduced == 0


def test_a_bytes_subclass_travels_as_plain_bytes_without_its_reduce():
    layer = InMemoryChannelLayer()
    Exploit.reduced = 0
    data = layer.serialize({"type": "x", "v": ExploitBytes(b"abc")})
    assert Exploit.reduced == 0
    decoded = layer.deserialize(data)
    assert decoded == {"type": "x", "v": b"abc"} and type(decoded["v"]) is bytes


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_deserialize_refuses_a_pickle_and_never_unpickles_it(protocol):
    layer = InMemoryChannelLayer()
    payloads = [
        pickle.dumps(Exploit(), protocol=protocol),
        pickle.dumps({"type": "x", "v": Exploit()}, protocol=protocol),
    ]
    for payload in payloads:
        # Running the payload's exec would raise SystemExit, not ValueError.
        with pytest.raises(ValueError, match="Not a msgpack-encoded message"):
            layer.deserialize(payload)


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (msgpack.packb([1, 2]), "msgpack decoded a list, expected a dict"),
        (msgpack.packb("type"), "msgpack decoded a str, expected a dict"),
        (msgpack.packb({1: "x"}), "Not a msgpack-encoded message"),
        (b"", "Not a msgpack-encoded message"),
        (b'{"type": "json"}', "Not a msgpack-encoded message"),
    ],
)
def test_deserialize_refuses_anything_but_a_msgpack_dict(payload, error):
    with pytest.raises(ValueError, match=re.escape(error)):
        InMemoryChannelLayer().deserialize(payload)


async def test_a_redis_receiver_drops_a_pickle_and_gets_the_next_message(make_layer, caplog):
    layer = make_layer()
    # As if another program pushed a pickle onto the named channel's list.
    envelope = msgpack.packb([time.time(), pickle.dumps(Exploit())])
    redis.Redis.from_url(REDIS_URL).rpush(layer._key("channel", "size-intruded"), envelope)
    await layer.send("size-intruded", {"type": "real"})
    assert await receive(layer, "size-intruded") == {"type": "real"}
    assert "Not a msgpack-encoded message" in caplog.text


def test_no_pickle_marshal_or_eval_in_the_layer_or_consumers():
    root = pathlib.Path(__file__).resolve().parents[2]
    forbidden = re.compile(r"\b(import\s+(pickle|marshal|shelve|dill)|pickle\.|eval\(|exec\()")
    offenders = [
        f"{path.relative_to(root)}:{number}: {line.strip()}"
        for package in ("channels_layer", "consumers")
        for path in sorted((root / package).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if forbidden.search(line)
    ]
    assert offenders == []
