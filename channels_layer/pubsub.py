"""The Redis pub/sub channel layer: lowest latency, nothing stored in Redis.

Like ``RedisChannelLayer`` but a message for a consumer channel is published straight to
its process instead of queued in the process's Redis inbox. Nothing waits in Redis, so a
process that is down or reconnecting misses what was sent meanwhile (at-most-once, as the
spec allows). Unlike channels_redis's pub/sub layer, each channel's queue in the receiving
process is bounded by ``capacity`` (messages beyond it are dropped and logged), and a
message to a named channel reaches one receiver only: named channels stay Redis lists.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from . import redis_envelopes as envelopes
from .redis import RedisChannelLayer

logger = logging.getLogger(__name__)


class RedisPubSubChannelLayer(RedisChannelLayer):
    """Same keywords as ``RedisChannelLayer``; ``send`` to a consumer channel never raises
    ``ChannelFull`` because the sender cannot see the receiver's queue."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Set once a consumer channel exists here; the process topic is then kept subscribed.
        self._process_topic_needed = False

    async def _send_to_process(self, channel: str, payload: bytes) -> bool:
        owner = self._owner(channel)
        topic = self._key("process", owner)
        entry = envelopes.process_entry(channel, payload)
        shard = self._ring.shard(owner)
        await self._connections.call(
            shard, lambda state: state.clients[shard].publish(topic, entry)
        )
        return True

    async def new_channel(self, prefix: str = "specific") -> str:
        """A consumer channel; the process subscribes to its topic first, so nothing sent to
        the channel can be missed."""
        channel = await super().new_channel(prefix)
        await self._connections.run(self._start_process_reader)
        return channel

    async def _start_process_reader(self) -> None:
        self._process_topic_needed = True
        await self._connections.subscribe(self._key("process", self.client_prefix))

    def _topics(self) -> list[str]:
        topics = super()._topics()
        if self._process_topic_needed:
            topics.append(self._key("process", self.client_prefix))
        return topics

    def _deliver(self, topic: str, data: bytes) -> None:
        if topic != self._key("process", self.client_prefix):
            super()._deliver(topic, data)
            return
        channel, sent_at, payload = envelopes.read_process_entry(data)
        remaining = self.expiry - (time.time() - sent_at)
        capacity = self.get_capacity(channel)
        if remaining > 0 and not self._mailboxes.put(channel, payload, remaining, capacity):
            logger.warning(
                "Dropped a message for %r: its queue holds its capacity of %d", channel, capacity
            )
