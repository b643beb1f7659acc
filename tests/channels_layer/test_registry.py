"""channel_layers / get_channel_layer: building layers from settings.CHANNEL_LAYERS."""

import pytest
from django.test import override_settings

from channels_layer import (
    DEFAULT_CHANNEL_LAYER,
    InMemoryChannelLayer,
    InvalidChannelLayerError,
    channel_layers,
    get_channel_layer,
)

MEMORY = "channels_layer.memory.InMemoryChannelLayer"


def test_default_alias_is_default():
    assert DEFAULT_CHANNEL_LAYER == "default"


def test_get_channel_layer_returns_the_configured_backend_with_its_config():
    with override_settings(
        CHANNEL_LAYERS={"default": {"BACKEND": MEMORY, "CONFIG": {"capacity": 7}}}
    ):
        layer = get_channel_layer()
        assert isinstance(layer, InMemoryChannelLayer)
        assert layer.capacity == 7


def test_get_channel_layer_returns_the_same_instance_twice():
    with override_settings(
        CHANNEL_LAYERS={"default": {"BACKEND": MEMORY}, "other": {"BACKEND": MEMORY}}
    ):
        layer = get_channel_layer()
        assert get_channel_layer() is layer
        assert channel_layers["default"] is layer
        assert get_channel_layer("other") is not layer


def test_get_channel_layer_returns_none_for_an_unknown_alias():
    with override_settings(CHANNEL_LAYERS={"default": {"BACKEND": MEMORY}}):
        assert get_channel_layer("missing") is None


@pytest.mark.parametrize("value", [None, {}])
def test_get_channel_layer_returns_none_without_channel_layers(value):
    with override_settings(CHANNEL_LAYERS=value):
        assert get_channel_layer() is None


def test_indexing_an_unknown_alias_raises_key_error_listing_the_configured_ones():
    with (
        override_settings(CHANNEL_LAYERS={"default": {"BACKEND": MEMORY}}),
        pytest.raises(KeyError, match=r"'nope'.*\['default'\]"),
    ):
        channel_layers["nope"]


@pytest.mark.parametrize(
    ("backend", "detail"),
    [
        ("no_such_module.Layer", "No module named 'no_such_module'"),
        ("channels_layer.memory.Missing", "does not define"),
    ],
)
def test_unimportable_backend_raises_invalid_channel_layer_error(backend, detail):
    with (
        override_settings(CHANNEL_LAYERS={"main": {"BACKEND": backend}}),
        pytest.raises(InvalidChannelLayerError) as info,
    ):
        get_channel_layer("main")
    message = str(info.value)
    assert "'main'" in message
    assert repr(backend) in message
    assert detail in message


def test_backend_that_is_not_a_class_raises_invalid_channel_layer_error():
    backend = "channels_layer.registry.get_channel_layer"
    with (
        override_settings(CHANNEL_LAYERS={"default": {"BACKEND": backend}}),
        pytest.raises(InvalidChannelLayerError, match=r"'default'.*get_channel_layer.*not a class"),
    ):
        get_channel_layer()


def test_missing_backend_raises_invalid_channel_layer_error():
    with (
        override_settings(CHANNEL_LAYERS={"default": {"CONFIG": {}}}),
        pytest.raises(InvalidChannelLayerError, match=r"'default'.*'BACKEND'"),
    ):
        get_channel_layer()


def test_config_rejected_by_backend_raises_invalid_channel_layer_error():
    config = {"default": {"BACKEND": MEMORY, "CONFIG": {"hosts": ["redis://localhost"]}}}
    with (
        override_settings(CHANNEL_LAYERS=config),
        pytest.raises(InvalidChannelLayerError) as info,
    ):
        get_channel_layer()
    message = str(info.value)
    assert "'default'" in message
    assert MEMORY in message
    assert "hosts" in message


def test_changing_channel_layers_setting_drops_cached_layers():
    with override_settings(CHANNEL_LAYERS={"default": {"BACKEND": MEMORY}}):
        first = get_channel_layer()
    with override_settings(
        CHANNEL_LAYERS={"default": {"BACKEND": MEMORY, "CONFIG": {"capacity": 3}}}
    ):
        second = get_channel_layer()
        assert second is not first
        assert second is not None and second.capacity == 3


def test_make_backend_builds_a_fresh_uncached_layer():
    with override_settings(CHANNEL_LAYERS={"default": {"BACKEND": MEMORY}}):
        assert channel_layers.make_backend("default") is not channel_layers["default"]


async def test_layer_from_registry_works_in_async_code():
    with override_settings(CHANNEL_LAYERS={"default": {"BACKEND": MEMORY}}):
        layer = get_channel_layer()
        assert layer is not None
        await layer.send("reg.test", {"type": "ping"})
        assert await layer.receive("reg.test") == {"type": "ping"}
