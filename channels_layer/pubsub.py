"""The Redis pub/sub channel layer: lowest latency, nothing stored in Redis.

Like ``RedisChannelLayer`` but a message for a consumer channel is published straight to
its process instead of queued in the process's Redis inbox (``redis_delivery.PubSubDelivery``).
Nothing waits in Redis, so a process that is down or reconnecting misses what was sent
meanwhile (at-most-once, as the spec allows). Unlike channels_redis's pub/sub layer, each
channel's queue in the receiving process is bounded by ``capacity`` (messages beyond it are
dropped and logged), and a message to a named channel reaches one receiver only: named
channels stay Redis lists.
"""

from __future__ import annotations

from typing import ClassVar

from .redis import RedisChannelLayer
from .redis_delivery import ProcessDelivery, PubSubDelivery


class RedisPubSubChannelLayer(RedisChannelLayer):
    """Same keywords as ``RedisChannelLayer``; ``send`` to a consumer channel never raises
    ``ChannelFull`` because the sender cannot see the receiver's queue. A new channel's
    process is subscribed to its topic before ``new_channel()`` returns, so nothing sent to
    the channel can be missed."""

    delivery: ClassVar[type[ProcessDelivery]] = PubSubDelivery
