"""The Redis clients of the chat's limits: one server, or a Redis Cluster from its seeds.

``CHAT_LIMITS_REDIS_URL`` is one URL, or with ``CHAT_LIMITS_REDIS_CLUSTER`` the URL of one
node of a Cluster or a list of several (seeds), tried in order until one answers;
the client finds the other nodes and follows the slots as they move. As in the channel
layer's ``hosts``, the first URL's password, user and TLS (``rediss://``) apply to every
node, and a Cluster has only database 0.

A limit is checked on every frame: it must answer fast or not at all, so both kinds of
client have short timeouts and no retries (a frame that meets a failed node is let through,
and the next ones are until Redis answers again: ``chat.limits``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.cluster
import redis.retry
from redis.backoff import NoBackoff
from redis.connection import SSLConnection, parse_url
from redis.exceptions import RedisClusterException

# What an unreachable Redis or a Cluster in trouble raises. redis-py's cluster client
# raises ``RedisClusterException``s (no node reachable, a slot not covered), which are not
# ``RedisError``s.
UNAVAILABLE: tuple[type[Exception], ...] = (redis.RedisError, RedisClusterException)

TIMEOUTS: dict[str, Any] = {"socket_timeout": 1, "socket_connect_timeout": 1}

SyncClient = redis.Redis | redis.RedisCluster
AsyncClient = redis.asyncio.Redis | redis.asyncio.RedisCluster


def cluster_options(url: str | Sequence[str]) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """The seed nodes (host, port) and the connection options (the first URL's password,
    user, TLS and query options) of a Cluster's URLs; a ``ValueError`` names a URL that
    cannot be a Cluster node's (only ``redis://`` and ``rediss://`` with a host)."""
    urls = [url] if isinstance(url, str) else list(url)
    if not urls:
        raise ValueError("A Redis Cluster needs the URL of at least one of its nodes")
    seeds = []
    for each in urls:
        parts = urlsplit(each)
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            safe = each.replace(f":{parts.password}@", ":***@") if parts.password else each
            raise ValueError(f"A Redis Cluster node needs a redis:// or rediss:// URL: {safe}")
        seeds.append((parts.hostname, parts.port or 6379))
    options = parse_url(urls[0])
    for where in ("host", "port", "db"):
        options.pop(where, None)
    if options.pop("connection_class", None) is SSLConnection:
        options["ssl"] = True
    return seeds, options


def _one(url: str | Sequence[str]) -> str:
    if not isinstance(url, str):
        raise TypeError("Several Redis URLs are a Cluster's nodes: set CHAT_LIMITS_REDIS_CLUSTER")
    return url


def sync_client(url: str | Sequence[str], cluster: bool) -> SyncClient:
    """A client for sync callers (views). A Cluster's client reads the slot map now."""
    if not cluster:
        return redis.Redis.from_url(_one(url), retry=redis.retry.Retry(NoBackoff(), 0), **TIMEOUTS)
    seeds, options = cluster_options(url)
    return redis.RedisCluster(
        startup_nodes=[redis.cluster.ClusterNode(host, port) for host, port in seeds],
        retry=redis.retry.Retry(NoBackoff(), 0),
        **{**TIMEOUTS, **options},  # a URL's own timeouts win, as with from_url
    )


def async_client(url: str | Sequence[str], cluster: bool) -> AsyncClient:
    """A client for one event loop (redis-py's asyncio pools belong to one loop). A
    Cluster's client reads the slot map on its first command."""
    if not cluster:
        return redis.asyncio.Redis.from_url(
            _one(url), retry=redis.asyncio.retry.Retry(NoBackoff(), 0), **TIMEOUTS
        )
    seeds, options = cluster_options(url)
    return redis.asyncio.RedisCluster(
        startup_nodes=[redis.asyncio.cluster.ClusterNode(host, port) for host, port in seeds],
        retry=redis.asyncio.retry.Retry(NoBackoff(), 0),
        **{**TIMEOUTS, **options},  # a URL's own timeouts win, as with from_url
    )
