"""``RedisChannelLayer``'s ``at_least_once`` named channels (base's ``AT_LEAST_ONCE``
extension): which channels are leased, how long a named channel's key lives, and
``receive_leased``. The leases themselves are ``redis_leases``'."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Mapping

from . import redis_envelopes as envelopes
from .base import BaseChannelLayer, CapacityPattern, Message
from .redis_connections import RedisConnections
from .redis_leases import Lease, Leases

logger = logging.getLogger("channels_layer.redis")


class AtLeastOnceChannels(BaseChannelLayer):
    """The leasing part of ``RedisChannelLayer``, set up by ``_lease_channels``."""

    _leased: list[tuple[re.Pattern[str], float]]
    _leases: Leases

    def _lease_channels(
        self,
        connections: RedisConnections,
        key: Callable[[str, str], str],
        at_least_once: Mapping[CapacityPattern, float] | None,
    ) -> None:
        """``at_least_once``: ``{pattern: visibility_timeout}`` (see the layer's docstring)."""
        self._leases = Leases(
            connections,
            channel_key=functools.partial(key, "channel"),
            leases_key=functools.partial(key, "leases"),
            ttl=self._named_ttl,
        )
        self._leased = self.compile_patterns(
            at_least_once or {}, "at_least_once", self._require_seconds
        )

    def lease_timeout(self, channel: str) -> float | None:
        """The visibility timeout of an ``at_least_once`` channel; None for the others."""
        if "!" in channel:
            return None
        return next((seconds for pattern, seconds in self._leased if pattern.match(channel)), None)

    async def receive_leased(self, channel: str) -> tuple[Message, Lease]:
        """The next message of an ``at_least_once`` channel and its lease: call
        ``lease.finish()`` once the job is done (or ``give_back()`` to run it elsewhere)."""
        self.require_valid_channel_name(channel)
        timeout = self.lease_timeout(channel)
        if timeout is None:
            raise ValueError(f"Channel {channel!r} is not configured as at_least_once")
        while True:
            lease = await self._leases.claim(channel, timeout)
            try:
                return self.deserialize(envelopes.read_named_entry(lease.envelope)[1]), lease
            except ValueError as error:
                logger.error("Dropped a message on %r: %s", channel, error)
                await lease.finish()

    def _named_ttl(self, channel: str) -> int:
        """Seconds a named channel's key lives: a leased one's messages are kept for
        ``group_expiry``, the others' for ``expiry``; and one more."""
        kept = self.group_expiry if self.lease_timeout(channel) is not None else self.expiry
        return int(kept) + 1
