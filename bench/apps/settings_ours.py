"""Settings for ``bench.apps.ours``: the project's packages."""

from bench.apps.settings_common import *  # noqa: F403
from bench.apps.settings_common import layers

INSTALLED_APPS = ["consumers"]
CHANNEL_LAYERS = layers(
    "channels_layer.memory.InMemoryChannelLayer", "channels_layer.redis.RedisChannelLayer"
)
