"""Settings for the worker drills: the project's, with an at-least-once ``jobs`` channel."""

import os

from project.settings import *  # noqa: F403

ASGI_APPLICATION = "tests.reliability.worker_app.application"
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_layer.redis.RedisChannelLayer",
        "CONFIG": {
            "hosts": [os.environ["REDIS_URL"]],
            "prefix": os.environ["REDIS_PREFIX"],
            "at_least_once": {"jobs": float(os.environ.get("JOB_LEASE", "2"))},
        },
    }
}
