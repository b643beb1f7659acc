"""The Redis layer's envelopes (``redis_envelopes``): a small header, then the serializer's
bytes exactly as it made them, so a message is encoded once on the Redis path."""

import asyncio

import msgpack
import pytest
import redis

from channels_layer import redis_envelopes as envelopes
from channels_layer.serializers import MsgPackSerializer
from tests.redis_servers import REDIS_URL

PAYLOAD = MsgPackSerializer().serialize({"type": "chat.message", "text": "hi"})


def split(entry):
    """The header and the rest, by the format's own rule: one length byte, then msgpack."""
    return msgpack.unpackb(entry[1 : 1 + entry[0]]), entry[1 + entry[0] :]


def test_each_entry_is_a_header_then_the_payload_untouched():
    header, rest = split(envelopes.named_entry(PAYLOAD))
    assert rest == PAYLOAD and len(header) == 2 and len(header[1]) == 8  # sent_at, token
    header, rest = split(envelopes.process_entry("specific.abc!def", PAYLOAD))
    assert rest == PAYLOAD and header[0] == "specific.abc!def"
    header, rest = split(envelopes.broadcast(PAYLOAD))
    assert rest == PAYLOAD and len(header) == 1


def test_reading_gives_back_what_was_framed():
    assert envelopes.read_named_entry(envelopes.named_entry(PAYLOAD))[1] == PAYLOAD
    channel, sent_at, payload = envelopes.read_process_entry(
        envelopes.process_entry("specific.abc!def", PAYLOAD)
    )
    assert (channel, payload) == ("specific.abc!def", PAYLOAD) and sent_at > 0
    assert envelopes.read_broadcast(envelopes.broadcast(PAYLOAD))[1:] == (PAYLOAD, None)


@pytest.mark.parametrize(
    "entry",
    [b"", b"\x05ab", b"\x01\x05rest", msgpack.packb([1.0, PAYLOAD]), b"\x02\x91\x01" + PAYLOAD],
)
def test_a_malformed_entry_is_a_value_error(entry):
    with pytest.raises(ValueError, match="not a channel layer entry"):
        envelopes.read_named_entry(entry)


async def test_a_named_channel_entry_in_redis_holds_the_serializer_bytes(make_layer):
    layer = make_layer()
    message = {"type": "chat.message", "text": "hi"}
    await layer.send("jobs", message)
    [raw] = redis.Redis.from_url(REDIS_URL).lrange(f"{layer.prefix}:channel:jobs", 0, -1)
    assert split(raw)[1] == msgpack.packb(message, use_bin_type=True)
    assert await asyncio.wait_for(layer.receive("jobs"), 2) == message


def test_headers_msgpack_made_elsewhere_are_read_too():
    """Python builds its headers byte by byte; one packed by msgpack (or by Lua's cmsgpack,
    as history broadcasts are) reads the same."""

    def framed(header):
        packed = msgpack.packb(header)
        return bytes((len(packed),)) + packed + PAYLOAD

    assert envelopes.read_process_entry(framed(["specific.a!b", 1.5])) == (
        "specific.a!b",
        1.5,
        PAYLOAD,
    )
    assert envelopes.read_named_entry(framed([1.5, b"12345678"])) == (1.5, PAYLOAD)
    assert envelopes.read_broadcast(framed([1.5])) == (1.5, PAYLOAD, None)
    assert envelopes.read_broadcast(framed([1.5, 7, "e1"])) == (1.5, PAYLOAD, (7, "e1"))
