"""The inbox send script's numbers come out right on a Redis whose C ``long`` has 32 bits
(i386 and armhf builds, the ``redis:7`` image's 32-bit variants, Windows ports): there,
Lua's ``string.format('%d', n)`` casts ``n`` to a ``long``, so a sequence number (the
server's clock in microseconds, about 1.8e15) would come out as -2147483648 for every
entry, and broadcasts would no longer wait for earlier direct messages (inbox_order).

The script runs on the machine's Redis with ``string.format`` shadowed by one that refuses
an integer conversion a 32-bit ``long`` cannot hold, as such a Redis would mangle it."""

import secrets
from collections.abc import Iterator

import pytest
import redis

from channels_layer.inbox_order import QUEUE_LUA, SEQ_DIGITS, SEQ_FIELD, split_entry
from channels_layer.redis_delivery import SEND_TO_PROCESS, inbox_ttl_ms
from tests.redis_servers import REDIS_URL

pytestmark = pytest.mark.single_server

LONG_32_BITS = """
local host_format = string.format
local string = setmetatable({format = function(form, ...)
  local args, n = {...}, 0
  for conversion in form:gmatch('%%[%-+ #%d.]*(.)') do
    if conversion ~= '%' then
      n = n + 1
      local value = tonumber(args[n])
      if (conversion == 'd' or conversion == 'i') and (value >= 2^31 or value < -2^31) then
        error('a 32-bit long cannot hold ' .. host_format('%.0f', value))
      end
    end
  end
  return host_format(form, ...)
end}, {__index = string})
"""


@pytest.fixture
def keys() -> Iterator[tuple[redis.Redis, list[str]]]:
    client = redis.Redis.from_url(REDIS_URL)
    prefix = f"test-{secrets.token_hex(6)}"
    names = [f"{prefix}:inbox", f"{prefix}:pending"]
    yield client, names
    client.delete(*names)
    client.close()


def test_entries_are_numbered_without_32_bit_integer_conversions(keys):
    client, names = keys
    ttl = inbox_ttl_ms(60)
    script = client.register_script(LONG_32_BITS + SEND_TO_PROCESS)
    seconds, micros = client.time()
    firsts = [script(keys=names, args=["c", b"one", 100, ttl])[0] for _ in range(2)]
    batch = script(keys=names, args=["c", b"two", 100, ttl, "d", b"three", 100, ttl])

    entries = [split_entry(entry) for entry in client.lrange(names[0], 0, -1)]
    assert entries == [
        (firsts[0], b"one"),
        (firsts[1], b"one"),
        (batch[0], b"two"),
        (batch[1], b"three"),
    ]
    numbers = [seq for seq, _ in entries]
    assert numbers == sorted(set(numbers))  # they only grow
    assert numbers[0] >= seconds * 1_000_000 + micros  # the server's clock, in us
    saved, deadline = client.hmget(names[1], SEQ_FIELD, "#exp")
    assert saved == b"%0*d" % (SEQ_DIGITS, numbers[-1])
    assert int(deadline) > numbers[0] + ttl * 1000 - 1_000_000


def test_the_shadowed_format_refuses_what_a_32_bit_long_cannot_hold(keys):
    client, _ = keys
    fits = client.eval(LONG_32_BITS + "return string.format('%08d', 2^31 - 1)", 0)
    assert fits == b"2147483647"
    with pytest.raises(redis.ResponseError, match="cannot hold 1765078424123456"):
        client.eval(LONG_32_BITS + "return string.format('%017d', 1765078424123456)", 0)


@pytest.mark.parametrize(
    "number",
    [0, 1, 99_999_999, 100_000_000, 1_796_614_616_199_674, 9_007_199_239_999_999, 2**53 - 1],
)
def test_numbers_are_written_as_the_float_printing_writes_them(keys, number):
    client, _ = keys
    both = "return {numbered(tonumber(ARGV[1])), string.format('%017.0f', tonumber(ARGV[1]))}"
    written, printed = client.eval(LONG_32_BITS + QUEUE_LUA + both, 0, str(number))
    assert written == printed == b"%017d" % number
