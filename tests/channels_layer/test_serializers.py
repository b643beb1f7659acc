"""channels_layer.serializers: channels_redis's serializer registry, formats and encryption."""

import asyncio
import json
import logging
import threading

import msgpack
import pytest
import redis

from channels_layer import MessageTooLarge
from channels_layer.redis_envelopes import read_named_entry
from channels_layer.serializers import (
    BaseMessageSerializer,
    JSONSerializer,
    MsgPackSerializer,
    SerializerDoesNotExist,
    SerializersRegistry,
    registry,
)
from tests.redis_servers import REDIS_URL

MESSAGE = {"type": "chat", "n": [1, 2], "ok": True, "none": None}


class Reversed:
    """A custom serializer that is no BaseMessageSerializer: JSON, reversed."""

    def __init__(self, **options):
        self.options = options

    def serialize(self, message):
        return json.dumps(message).encode()[::-1]

    def deserialize(self, data):
        return json.loads(data[::-1])


class OnlySerialize:
    def serialize(self, message):
        return b""


class OnlyDeserialize:
    def deserialize(self, data):
        return {}


@pytest.mark.parametrize("bad", [OnlySerialize, OnlyDeserialize, Reversed(), print])
def test_a_serializer_without_both_methods_is_refused(bad):
    with pytest.raises(TypeError, match="serialize\\(\\) and deserialize\\(\\)"):
        SerializersRegistry().register_serializer("custom", bad)
    # What channels_redis raises, for code that catches that.
    with pytest.raises(AssertionError):
        SerializersRegistry().register_serializer("custom", bad)


def test_an_unknown_format_names_the_registered_ones():
    with pytest.raises(SerializerDoesNotExist, match=r"No serializer 'yaml'; .*'json', 'msgpack'"):
        registry.get_serializer("yaml")
    assert isinstance(SerializerDoesNotExist("x"), KeyError)


def test_pickle_is_unavailable_and_the_error_says_why():
    with pytest.raises(SerializerDoesNotExist, match=r"pickle is not offered: .* run code"):
        registry.get_serializer("pickle")


@pytest.mark.parametrize(
    ("serializer_class", "expected"),
    [
        (MsgPackSerializer, msgpack.packb(MESSAGE)),
        (JSONSerializer, json.dumps(MESSAGE).encode()),
    ],
)
def test_formats_encode_as_their_libraries_do_with_an_optional_random_prefix(
    serializer_class, expected
):
    assert serializer_class().serialize(MESSAGE) == expected
    prefixed = serializer_class(random_prefix_length=8)
    data = prefixed.serialize(MESSAGE)
    assert data[8:] == expected
    assert prefixed.deserialize(data) == MESSAGE


@pytest.mark.parametrize("serializer_class", [MsgPackSerializer, JSONSerializer])
def test_encryption_is_applied_on_top_and_any_listed_key_opens(serializer_class):
    sealed = serializer_class(symmetric_encryption_keys=["old"]).serialize(MESSAGE)
    assert b"chat" not in sealed
    rotated = serializer_class(symmetric_encryption_keys=["new", "old"])
    assert rotated.deserialize(sealed) == MESSAGE
    with pytest.raises(ValueError, match="cannot be decrypted"):
        serializer_class(symmetric_encryption_keys=["other"]).deserialize(sealed)


def test_base_serializer_needs_only_as_bytes_and_from_bytes():
    class Upper(BaseMessageSerializer):
        def as_bytes(self, message):
            return json.dumps(message).upper().encode()

        def from_bytes(self, data):
            return json.loads(data.lower())

    serializer = Upper(symmetric_encryption_keys=["k"])
    assert serializer.deserialize(serializer.serialize({"type": "x"})) == {"type": "x"}


async def test_the_layer_uses_the_chosen_format_on_the_wire(make_layer):
    layer = make_layer(serializer_format="json")
    await layer.send("json.jobs", MESSAGE)
    [raw] = redis.Redis.from_url(REDIS_URL).lrange(f"{layer.prefix}:channel:json.jobs", 0, -1)
    assert json.loads(read_named_entry(raw)[1]) == MESSAGE
    assert await asyncio.wait_for(layer.receive("json.jobs"), 2) == MESSAGE
    local = await layer.new_channel()
    await layer.group_add("room", local)
    await layer.group_send("room", MESSAGE)
    assert await asyncio.wait_for(layer.receive(local), 2) == MESSAGE


async def test_json_refuses_bytes_and_still_checks_the_message_and_its_size(make_layer):
    layer = make_layer(serializer_format="json", max_message_size=100)
    with pytest.raises(TypeError, match="bytes is not JSON serializable"):
        await layer.send("jobs", {"type": "x", "data": b"\x00"})
    with pytest.raises(ValueError, match="'type'"):
        await layer.send("jobs", {"text": "no type"})
    with pytest.raises(MessageTooLarge, match="over the limit of 100 bytes"):
        await layer.send("jobs", {"type": "x", "text": "y" * 200})


async def test_a_custom_serializer_registered_by_name_carries_messages(make_layer):
    registry.register_serializer("reversed", Reversed)
    try:
        layer = make_layer(serializer_format="reversed")
        assert layer._serializer.options == {
            "symmetric_encryption_keys": None,
            "random_prefix_length": 0,
            "expiry": 60.0,
        }
        await layer.send("custom.jobs", MESSAGE)
        assert await asyncio.wait_for(layer.receive("custom.jobs"), 2) == MESSAGE
    finally:
        registry._registry.pop("reversed")


async def test_encrypted_json_hides_the_payload_and_a_wrong_format_is_dropped(make_layer, caplog):
    sealed = make_layer(serializer_format="json", symmetric_encryption_keys=["k"])
    plain_reader = make_layer()  # msgpack, no keys: cannot read what sealed sent
    await sealed.send("mixed", {"type": "secret", "text": "attack at dawn"})
    [raw] = redis.Redis.from_url(REDIS_URL).lrange(f"{sealed.prefix}:channel:mixed", 0, -1)
    assert b"attack" not in raw
    await sealed.send("mixed", {"type": "readable"})
    assert (await asyncio.wait_for(sealed.receive("mixed"), 2))["text"] == "attack at dawn"
    await plain_reader.send("mixed", {"type": "plain"})
    with caplog.at_level(logging.ERROR, logger="channels_layer"):
        # The sealed "readable" message is logged and skipped; the plain one arrives.
        assert (await asyncio.wait_for(plain_reader.receive("mixed"), 2))["type"] == "plain"
    assert "Not a msgpack-encoded message" in caplog.text


def test_msgpack_packs_the_same_after_a_refused_message_and_from_many_threads_at_once():
    """Its Packer is kept per thread: a failed pack leaves nothing behind, and threads
    packing at the same time each get their own message's bytes."""
    serializer = MsgPackSerializer()
    with pytest.raises(TypeError):
        serializer.as_bytes({"type": "t", "bad": [1, 2, object()]})
    message = {"type": "t", "data": b"x" * 100, "items": [1, 2.5, "é"]}
    assert serializer.as_bytes(message) == msgpack.packb(message, use_bin_type=True)
    wrong: list[int] = []

    def pack_many(n: int) -> None:
        mine = {"type": "t", "n": n, "blob": bytes([n]) * (1000 * n)}
        expected = msgpack.packb(mine, use_bin_type=True)
        for _ in range(2000):
            if serializer.as_bytes(mine) != expected:
                wrong.append(n)
                return

    threads = [threading.Thread(target=pack_many, args=(n,)) for n in range(1, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []


class _Reserializing(dict):
    """A dict whose items() serializes another message, as a custom mapping might."""

    def items(self):
        MsgPackSerializer().as_bytes({"type": "inner", "payload": {"a": 1}})
        return super().items()


def test_msgpack_packing_again_while_packing_spoils_neither_message():
    message = {"type": "outer", "payload": _Reserializing(a=1)}
    expected = msgpack.packb({"type": "outer", "payload": {"a": 1}}, use_bin_type=True)
    assert MsgPackSerializer().as_bytes(message) == expected


def test_msgpack_keeps_no_large_buffer_after_a_large_message():
    serializer = MsgPackSerializer()
    serializer.as_bytes({"type": "t"})
    kept = MsgPackSerializer._packers.pack
    serializer.as_bytes({"type": "t", "blob": b"x" * (2 * serializer.KEEP_PACKER_BELOW)})
    assert getattr(MsgPackSerializer._packers, "pack", None) is None  # that Packer went
    serializer.as_bytes({"type": "t"})
    assert MsgPackSerializer._packers.pack is not kept  # a new one for the next
