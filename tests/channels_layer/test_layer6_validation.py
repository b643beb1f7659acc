"""Issue 20, part 6: a flat message of plain values is checked in one loop, with the same
outcome as the full check; anything else still gets the full check and its errors."""

import pytest

from channels_layer import message_checks
from channels_layer.memory import InMemoryChannelLayer


@pytest.fixture
def layer():
    return InMemoryChannelLayer()


def test_a_flat_message_is_checked_without_walking_it(layer, monkeypatch):
    walked = []
    full = message_checks.require_encodable
    monkeypatch.setattr(
        message_checks,
        "require_encodable",
        lambda value, path: walked.append(path) or full(value, path),
    )
    layer.require_valid_message(
        {"type": "websocket.send", "text": "hi", "bytes": None, "n": 3, "x": 1.5, "ok": True}
    )
    assert walked == []
    layer.require_valid_message({"type": "chat", "nested": {"a": [1, 2]}})
    assert walked  # not flat: the full check


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ({"type": "x", "n": 2**64}, TypeError),
        ({"type": "x", "n": -(2**63) - 1}, TypeError),
        ({"type": "x", 1: "a"}, TypeError),
        ({"type": "x", "s": {1, 2}}, TypeError),
        ({"type": 1}, ValueError),
        ({"text": "no type"}, ValueError),
        (["type", "x"], TypeError),
    ],
)
def test_what_the_full_check_refuses_is_still_refused(layer, message, error):
    with pytest.raises(error):
        layer.require_valid_message(message)


@pytest.mark.parametrize(
    "message",
    [
        {"type": "x", "n": 2**64 - 1, "m": -(2**63)},
        {"type": "x", b"key": b"v", "a": bytearray(b"v")},
        {"type": "x", "t": (1, "a")},
    ],
)
def test_what_the_full_check_accepts_is_still_accepted(layer, message):
    layer.require_valid_message(message)


async def test_a_layers_own_shape_check_sees_flat_messages_too():
    class Dotted(InMemoryChannelLayer):
        def require_message_shape(self, message):
            super().require_message_shape(message)
            if "." not in message["type"]:
                raise ValueError("types here are dotted")

    with pytest.raises(ValueError, match="dotted"):
        await Dotted().send("somewhere", {"type": "nodot", "text": "hi"})
    await Dotted().send("somewhere", {"type": "has.dot", "text": "hi"})
