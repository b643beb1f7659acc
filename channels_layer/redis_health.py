"""Whether each Redis host answers: one log line when it stops, one when it is back, and
the backoff of everyone waiting to retry (all wake as soon as one call gets through).

A Redis Cluster is one "host" of the layer but fails node by node: while one master is
down, calls to the others succeed. So its record (``ClusterHealth``) ends an outage only
when a call that met it gets through (the node is back, or a replica serves its slots
now), not when any call to another master does: one line when it begins, one when it ends.
redis-py's Cluster client reports the same outage itself, at ERROR, at each slot map
refresh that reaches no node: once the layer runs on a Cluster, those reports are DEBUG
lines (see ``ClusterOutageReports``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextvars import ContextVar

from redis import exceptions as redis_exceptions
from redis.exceptions import (
    ClusterError,
    MasterDownError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import metrics
from .wakeups import wake

# The outage lines are the layer's: operators filter on this logger's name.
logger = logging.getLogger("channels_layer.redis")

# A Cluster none of whose nodes answered a slot map refresh (every node restarting, or
# beyond a partition); redis-py 8 raises it at once instead of its connection error.
_CLUSTER_UNREACHABLE: tuple[type[Exception], ...] = tuple(
    getattr(redis_exceptions, name)
    for name in ("RedisClusterUnreachableError",)
    if hasattr(redis_exceptions, name)
)
# What a Redis that is away raises; and a Cluster while a master fails over or a slot moves
# (``ClusterError``: redirections that did not settle, as a script's keys split by a slot
# migration get TRYAGAIN until the last of them has moved), or while no node answers.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    OSError,
    ClusterError,  # and its subclass ClusterDownError
    MasterDownError,
    SlotNotCoveredError,
    TryAgainError,
    *_CLUSTER_UNREACHABLE,
)
# Retries back off up to half a second, and all wake as soon as one gets through.
BACKOFF_FIRST, BACKOFF_MAX = 0.05, 0.5
# On a Cluster, failures this soon after an outage ended are still that outage (seconds):
# callers whose slot map is not refreshed yet, and a restarted master, which serves sharded
# pub/sub at once (so a process's subscription reader ends the outage) but refuses every
# other command with CLUSTERDOWN for 2 s more (Redis's CLUSTER_WRITABLE_DELAY).
SAME_OUTAGE = 3.0


class Health:
    """Logs one line when a host becomes unreachable and one when it is back."""

    @staticmethod
    def of_host(label: str, cluster: bool) -> Health:
        """The record of one entry of ``hosts``: a server, or a whole Cluster."""
        return ClusterHealth(label) if cluster else Health(label)

    def __init__(self, label: str) -> None:
        self.label = label
        self.down_since: float | None = None
        self.backoff = BACKOFF_FIRST
        self._waiting: set[asyncio.Future[None]] = set()
        metrics.watch_redis_host(self)

    async def wait(self, error: BaseException) -> None:
        """Record a failure and sleep the backoff, or until ``up()``."""
        back = asyncio.get_running_loop().create_future()
        self._waiting.add(back)
        try:
            # Not asyncio.wait_for, which can swallow a cancellation on Python 3.11.
            await asyncio.wait([back], timeout=self.down(error))
        finally:
            self._waiting.discard(back)

    def down(self, error: BaseException) -> float:
        """Record a failure; the seconds to wait before trying again."""
        if self.down_since is None:
            self.down_since = time.monotonic()
            self.backoff = BACKOFF_FIRST
            logger.warning("Redis %s is unreachable (%s); retrying", self.label, error)
        wait = self.backoff
        self.backoff = min(self.backoff * 2, BACKOFF_MAX)
        return wait

    def up(self) -> None:
        if self.down_since is not None:
            metrics.redis_back(time.monotonic() - self.down_since)
            logger.warning(
                "Redis %s is reachable again after %.1f s",
                self.label,
                time.monotonic() - self.down_since,
            )
            self.down_since = None
            for back in self._waiting:
                wake(back)


class ClusterOutageReports(logging.Filter):
    """Makes redis-py's own reports of a Cluster outage DEBUG lines (dropped unless its
    logger shows DEBUG): the layer reports the outage once, and a client reports it at
    every slot map refresh that reached no node, every shard channel it could not move
    for a connection error, every subscription repair that met a node away. Its other
    records are left as they are. Installed on redis-py's logger, it applies to every
    Cluster client of the process."""

    LOGGER = "redis.asyncio.cluster"

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG and self._outage(record):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            record.exc_info = record.exc_text = None
            return logging.getLogger(self.LOGGER).isEnabledFor(logging.DEBUG)
        return True

    @staticmethod
    def _outage(record: logging.LogRecord) -> bool:
        template = str(record.msg)
        if template.startswith("Topology refresh failed"):
            return "cannot be connected" in record.getMessage()  # no node answered
        if template.startswith("shard channel %r migration deferred"):
            return True  # only ever for a connection error or a timeout
        if template.startswith("shard subscription reconciliation failed"):
            error = record.exc_info[1] if isinstance(record.exc_info, tuple) else None
            return isinstance(error, UNAVAILABLE)
        return False

    @classmethod
    def install(cls) -> None:
        """Once per process, by the first Cluster record."""
        cluster_logger = logging.getLogger(cls.LOGGER)
        if not any(isinstance(f, cls) for f in cluster_logger.filters):
            cluster_logger.addFilter(cls())


class ClusterHealth(Health):
    """A Redis Cluster's record: an outage begins when a call fails (on any node) and ends
    when a call that met it gets through, which on a Cluster says the failed node, or the
    replica that took its slots, answers. A caller that never failed says nothing of it.
    Failures just after it ended (connections still open to the dead node, callers whose
    slot map is not refreshed yet) are the same outage, not a new one. (redis-py does not
    always tell which node failed: a pipeline's error does not.)"""

    def __init__(self, label: str) -> None:
        super().__init__(label)
        ClusterOutageReports.install()
        # Whether the current task (a caller or a reader) met this outage.
        self._met: ContextVar[bool] = ContextVar(f"met_outage_{id(self)}", default=False)
        self._ended_at = -SAME_OUTAGE

    def down(self, error: BaseException) -> float:
        if self.down_since is None and (
            self._met.get() or time.monotonic() - self._ended_at < SAME_OUTAGE
        ):
            self._met.set(True)
            return BACKOFF_FIRST  # the outage that just ended, going on here: no new line
        self._met.set(True)
        return super().down(error)

    def up(self) -> None:
        if self._met.get():
            self._met.set(False)
            if self.down_since is not None:
                self._ended_at = time.monotonic()
            super().up()
