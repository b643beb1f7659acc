"""Settings for the Redis Cluster drill: the project's, with its layer on a Cluster
(``REDIS_URL`` is one node of it). The chat's rate limits stay in each process: their
Redis client is a single-server one, and the drill raises them out of the way anyway."""

from project.settings import *  # noqa: F403

CHANNEL_LAYERS["default"]["CONFIG"]["cluster"] = True  # noqa: F405
CHAT_LIMITS_REDIS_URL = None
