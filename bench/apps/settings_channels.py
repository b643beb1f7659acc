"""Settings for ``bench.apps.channels_app``: Django Channels and channels-redis."""

from bench.apps.settings_common import *  # noqa: F403
from bench.apps.settings_common import layers

INSTALLED_APPS = ["channels"]
CHANNEL_LAYERS = layers(
    "channels.layers.InMemoryChannelLayer", "channels_redis.core.RedisChannelLayer"
)
