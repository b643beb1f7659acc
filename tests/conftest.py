"""Suite-wide fixtures."""

import pytest

from channels_layer import channel_layers


@pytest.fixture(autouse=True)
def fresh_channel_layers():
    """Each test starts with new layer instances, so no group or message leaks between tests."""
    channel_layers.reset()
    yield
    channel_layers.reset()
