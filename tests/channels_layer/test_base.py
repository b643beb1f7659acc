"""The shared spec in BaseChannelLayer: names, capacities, message validation and encoding."""

import datetime
import re

import msgpack
import pytest

from channels_layer import BaseChannelLayer, InMemoryChannelLayer
from channels_layer.base import MAX_NAME_LENGTH


@pytest.fixture
def layer() -> BaseChannelLayer:
    return BaseChannelLayer()


# Names -----------------------------------------------------------------------


def test_max_name_length_is_100_on_module_and_class(layer):
    assert MAX_NAME_LENGTH == 100
    assert layer.MAX_NAME_LENGTH == 100


def test_channel_name_of_exactly_100_chars_is_accepted(layer):
    layer.require_valid_channel_name("a" * 100)
    layer.require_valid_channel_name("a" * 90 + "!" + "b" * 9)


def test_channel_name_of_101_chars_is_rejected_with_its_length(layer):
    with pytest.raises(TypeError, match=r"at most 100 .*\(101 chars\)"):
        layer.require_valid_channel_name("a" * 101)


@pytest.mark.parametrize("name", ["", "has space", "bad name!!", "ünïcode", "a/b", "a!b!c", "!x"])
def test_channel_name_with_bad_characters_is_rejected_showing_the_repr(layer, name):
    with pytest.raises(TypeError) as info:
        layer.require_valid_channel_name(name)
    message = str(info.value)
    assert repr(name) in message
    assert "ASCII letters, digits, hyphens, underscores or periods" in message


def test_bad_channel_name_message_matches_the_documented_form(layer):
    with pytest.raises(TypeError) as info:
        layer.require_valid_channel_name("bad name!!")
    assert str(info.value) == (
        "Channel name must be a str of at most 100 ASCII letters, digits, hyphens, "
        "underscores or periods (plus '!suffix' for a process-local channel); "
        "got 'bad name!!' (10 chars)"
    )


@pytest.mark.parametrize("name", [None, 42, b"bytes.name", ["a"]])
def test_non_str_channel_name_is_rejected_naming_its_type(layer, name):
    with pytest.raises(TypeError, match=re.escape(f"got {name!r} of type {type(name).__name__}")):
        layer.require_valid_channel_name(name)


def test_process_local_channel_name_is_valid_for_send(layer):
    layer.require_valid_channel_name("specific.inmemory!abc123")
    layer.require_valid_channel_name("specific.inmemory!")


def test_receive_true_requires_a_process_local_name_to_end_at_the_bang(layer):
    layer.require_valid_channel_name("specific.abc!", receive=True)
    layer.require_valid_channel_name("plain.channel", receive=True)
    with pytest.raises(TypeError, match=r"must end at the '!'.*'specific\.abc!xyz'"):
        layer.require_valid_channel_name("specific.abc!xyz", receive=True)


def test_group_name_accepts_100_chars_and_rejects_101(layer):
    layer.require_valid_group_name("g" * 100)
    with pytest.raises(TypeError, match=r"Group name .*\(101 chars\)"):
        layer.require_valid_group_name("g" * 101)


def test_group_name_rejects_bang(layer):
    with pytest.raises(TypeError, match=r"Group name .*got 'chat!room'"):
        layer.require_valid_group_name("chat!room")


def test_group_name_rejects_non_str(layer):
    with pytest.raises(TypeError, match="got 7 of type int"):
        layer.require_valid_group_name(7)


# Capacity ------------------------------------------------------------------------


def test_glob_pattern_capacity_applies_to_matching_channels_only():
    layer = BaseChannelLayer(capacity=10, channel_capacity={"http.response!*": 3})
    assert layer.get_capacity("http.response!abc") == 3
    assert layer.get_capacity("http.request") == 10


def test_regex_pattern_capacity_applies_to_matching_channels():
    layer = BaseChannelLayer(channel_capacity={re.compile(r"^big\."): 500})
    assert layer.get_capacity("big.queue") == 500
    assert layer.get_capacity("small.queue") == 100


def test_first_matching_capacity_pattern_wins():
    layer = BaseChannelLayer(
        capacity=5, channel_capacity={"chat.*": 20, re.compile("chat"): 30, "*": 40}
    )
    assert layer.get_capacity("chat.lobby") == 20
    assert layer.get_capacity("chatter") == 30
    assert layer.get_capacity("other") == 40


def test_compile_capacities_returns_regex_capacity_pairs_in_order(layer):
    compiled = layer.compile_capacities({"a.*": 1, re.compile("b"): 2})
    assert [capacity for _, capacity in compiled] == [1, 2]
    assert all(isinstance(regex, re.Pattern) for regex, _ in compiled)
    assert compiled[0][0].match("a.x") and not compiled[0][0].match("b.a.x")


@pytest.mark.parametrize("capacity", [0, -1, 1.5, "10", True])
def test_non_positive_int_capacity_is_rejected(capacity):
    with pytest.raises(TypeError, match="capacity must be a positive int"):
        BaseChannelLayer(capacity=capacity)
    with pytest.raises(TypeError, match=r"channel_capacity\['x\.\*'\] must be a positive int"):
        BaseChannelLayer(channel_capacity={"x.*": capacity})


def test_expiry_settings_are_stored_and_must_be_positive():
    layer = BaseChannelLayer(expiry=5, group_expiry=0.5)
    assert (layer.expiry, layer.group_expiry) == (5, 0.5)
    with pytest.raises(TypeError, match="expiry must be a positive number"):
        BaseChannelLayer(expiry=0)


def test_unknown_constructor_keyword_is_a_type_error():
    with pytest.raises(TypeError):
        BaseChannelLayer(hosts=["redis://"])
    with pytest.raises(TypeError):
        InMemoryChannelLayer(hosts=["redis://"])


# Messages ------------------------------------------------------------------------


@pytest.mark.parametrize("message", [["type", "x"], "chat.message", None])
def test_non_dict_message_is_a_type_error_naming_the_type(layer, message):
    with pytest.raises(TypeError, match=f"must be a dict; got {type(message).__name__}"):
        layer.serialize(message)


def test_message_without_type_is_a_value_error(layer):
    with pytest.raises(ValueError, match="needs a 'type' key"):
        layer.serialize({"text": "hi"})


def test_message_with_non_str_type_is_a_value_error(layer):
    with pytest.raises(ValueError, match=r"message\['type'\] must be a str; got 3 of type int"):
        layer.serialize({"type": 3})


def test_unencodable_nested_dict_value_names_its_key_path(layer):
    message = {"type": "x", "payload": {"when": datetime.datetime(2024, 1, 1)}}
    with pytest.raises(TypeError) as info:
        layer.serialize(message)
    assert str(info.value) == (
        "message['payload']['when'] is a datetime.datetime, which msgpack cannot encode"
    )


def test_unencodable_list_item_names_its_index(layer):
    with pytest.raises(TypeError, match=re.escape("message['items'][1] is a set,")):
        layer.serialize({"type": "x", "items": [1, {2}]})


def test_non_str_key_is_rejected_with_its_path(layer):
    with pytest.raises(TypeError, match=re.escape("message['scores'] has the key 1 of type int")):
        layer.serialize({"type": "x", "scores": {1: "a"}})


def test_int_beyond_64_bits_is_rejected_with_its_path(layer):
    with pytest.raises(TypeError, match=re.escape("message['n'] is an int outside")):
        layer.serialize({"type": "x", "n": 2**64})


def test_serialize_is_msgpack_and_round_trips_types(layer):
    message = {
        "type": "x",
        "text": "héllo",
        "raw": b"\x00\xff",
        "n": -(2**63),
        "f": 1.5,
        "flag": True,
        "none": None,
        "items": (1, "two"),
    }
    data = layer.serialize(message)
    assert msgpack.unpackb(data, raw=False)["text"] == "héllo"
    decoded = layer.deserialize(data)
    assert decoded == {**message, "items": [1, "two"]}
    assert type(decoded["raw"]) is bytes
