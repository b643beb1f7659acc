"""The recovery scenario's server (``daphne bench.recovery_app:application``): one route,
``/ws/recover/``, whose consumer joins the group ``bench.recovery`` from the position the
client gives in its handshake and forwards every message with its position.

Settings are made here from the environment as ``bench.apps.settings_common`` makes them
(``BENCH_LAYER=redis`` with ``BENCH_REDIS_URL`` and ``BENCH_PREFIX``, or the in-memory
layer), plus the group's history.
"""

import os

import django
from django.conf import settings

GROUP = "bench.recovery"
HISTORY = {"bench.*": {"size": 1000, "ttl": 600}}

settings.configure(
    SECRET_KEY="bench-only-not-secret",  # noqa: S106  a benchmark's throwaway key
    DEBUG=False,
    ALLOWED_HOSTS=["*"],
    INSTALLED_APPS=["consumers"],
    CHANNEL_LAYERS={
        "default": {
            "BACKEND": "channels_layer.redis.RedisChannelLayer",
            "CONFIG": {
                "hosts": [os.environ["BENCH_REDIS_URL"]],
                "prefix": os.environ["BENCH_PREFIX"],
                "history": HISTORY,
            },
        }
        if os.environ.get("BENCH_LAYER") == "redis"
        else {
            "BACKEND": "channels_layer.memory.InMemoryChannelLayer",
            "CONFIG": {"history": HISTORY},
        }
    },
    LOGGING={
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"console": {"class": "logging.StreamHandler"}},
        "root": {"handlers": ["console"], "level": "WARNING"},
    },
)
django.setup()

from consumers.generic.websocket import AsyncJsonWebsocketConsumer  # noqa: E402
from consumers.history import ResumableJsonMixin  # noqa: E402


class Recovering(ResumableJsonMixin, AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()
        await self.history_join(GROUP, self.client_position(GROUP))

    async def receive_json(self, content: dict, **kwargs: object) -> None:
        """``{"type": "publish", "count": n}``: send n messages to the group, one by one."""
        assert self.channel_layer is not None
        position = None
        for number in range(int(content["count"])):
            position = await self.channel_layer.group_send(
                GROUP, {"type": "bench.note", "n": number}
            )
        await self.send_json({"type": "published", "offset": position and position.offset})

    async def bench_note(self, event: dict) -> None:
        await self.send_json(event)


application = Recovering.as_asgi()
