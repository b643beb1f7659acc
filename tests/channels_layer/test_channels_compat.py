"""Parts of Channels' layer API a project moving over may call: the deprecated name checks,
``invalid_name_error``, ``channel_layers.make_test_backend``/``set``/``in``/``backends``, and the
in-memory layer's ``channels`` and ``groups`` that tests look into."""

import asyncio

import pytest
from django.test import override_settings

from channels_layer import (
    BaseChannelLayer,
    InMemoryChannelLayer,
    InvalidChannelLayerError,
    channel_layers,
    get_channel_layer,
)

MEMORY = "channels_layer.memory.InMemoryChannelLayer"


@pytest.mark.parametrize(
    ("check", "good", "bad"),
    [
        ("valid_channel_name", "specific.abc!def", "bad name"),
        ("valid_group_name", "room-1", "room!1"),
    ],
)
def test_deprecated_name_checks_return_true_or_raise_with_a_warning(check, good, bad):
    layer = InMemoryChannelLayer()
    with pytest.warns(DeprecationWarning, match=f"{check} is deprecated, use require_{check}"):
        assert getattr(layer, check)(good) is True
    with pytest.warns(DeprecationWarning), pytest.raises(TypeError, match="name must be"):
        getattr(layer, check)(bad)


def test_require_checks_return_true_as_in_channels():
    layer = BaseChannelLayer()
    assert layer.require_valid_channel_name("jobs") is True
    assert layer.require_valid_group_name("room") is True


def test_invalid_name_error_is_the_format_of_the_name_errors_and_can_be_reworded():
    assert BaseChannelLayer.invalid_name_error.format("Group").startswith("Group name must be")

    class Strict(InMemoryChannelLayer):
        invalid_name_error = "{} names are letters only"

    with pytest.raises(TypeError, match=r"^Channel names are letters only.*got 'a b'"):
        Strict().require_valid_channel_name("a b")
    with pytest.raises(TypeError, match=r"^Group names are letters only"):
        Strict().require_valid_group_name("a!b")


def test_make_test_backend_builds_a_new_layer_from_test_config():
    with override_settings(
        CHANNEL_LAYERS={
            "default": {
                "BACKEND": MEMORY,
                "CONFIG": {"capacity": 7},
                "TEST_CONFIG": {"capacity": 3},
            },
            "plain": {"BACKEND": MEMORY},
        }
    ):
        layer = channel_layers.make_test_backend("default")
        assert isinstance(layer, InMemoryChannelLayer) and layer.capacity == 3
        assert layer is not channel_layers.make_test_backend("default")
        assert get_channel_layer().capacity == 7  # the shared one keeps CONFIG
        with pytest.raises(InvalidChannelLayerError, match=r"'plain'.*no TEST_CONFIG"):
            channel_layers.make_test_backend("plain")
        with pytest.raises(KeyError, match="No channel layer 'missing'"):
            channel_layers.make_test_backend("missing")


def test_set_swaps_the_layer_of_an_alias_and_returns_the_old_one():
    with override_settings(CHANNEL_LAYERS={"default": {"BACKEND": MEMORY}}):
        assert "default" in channel_layers and "other" not in channel_layers
        built = get_channel_layer()
        replacement = InMemoryChannelLayer(capacity=1)
        assert channel_layers.set("default", replacement) is built
        assert get_channel_layer() is replacement
        spare = InMemoryChannelLayer()
        assert channel_layers.set("spare", spare) is None
        assert get_channel_layer("spare") is spare


def test_backends_holds_the_layers_built_and_empties_when_the_setting_changes():
    with override_settings(CHANNEL_LAYERS={"default": {"BACKEND": MEMORY}}):
        assert channel_layers.backends == {}
        layer = get_channel_layer()
        assert channel_layers.backends == {"default": layer}
    assert channel_layers.backends == {}


async def test_the_in_memory_layers_channels_and_groups_can_be_looked_into_as_in_channels():
    layer = InMemoryChannelLayer()
    await layer.send("inbox", {"type": "one"})
    await layer.send("outbox", {"type": "two"})
    assert "inbox" in layer.channels and len(layer.channels) == 2
    assert sorted(layer.channels.keys()) == sorted(layer.channels) == ["inbox", "outbox"]
    assert (await layer.receive("inbox"))["type"] == "one"
    assert "inbox" not in layer.channels  # read empty and nobody waiting: gone
    waiting = asyncio.create_task(layer.receive("idle"))
    await asyncio.sleep(0.01)
    assert sorted(layer.channels) == ["idle", "outbox"]  # a receiver waits on "idle"
    waiting.cancel()

    assert layer.groups == {}
    await layer.group_add("room", "inbox")
    assert list(layer.groups) == ["room"] and list(layer.groups["room"]) == ["inbox"]
    layer.groups.clear()  # a copy: the layer's own memberships stay
    assert "room" in layer.groups
    await layer.group_discard("room", "inbox")
    assert layer.groups == {}
