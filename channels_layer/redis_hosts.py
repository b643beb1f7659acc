"""channels_redis-style ``hosts`` settings turned into Redis clients, and keys spread over them.

Each entry of ``hosts`` is one shard, given as a URL (``redis://``, ``rediss://`` with TLS,
``unix://``; password and database in the URL are honoured), a ``(host, port)`` pair, a dict
with ``address`` (URL or pair) plus connection keywords (``password``, ``ssl``, ``db``...),
or a dict with ``sentinels``, ``master_name`` and optional ``sentinel_kwargs`` for Redis
Sentinel, which follows the master through a failover.

With ``cluster=True``, ``hosts`` holds nodes of a Redis Cluster (URLs, pairs or dicts with
``address``), the seeds: the client starts from the first that answers, finds the others
and follows slots as they move. Several seeds let a process start while one node is down.
Keys then carry their name as a hash tag (``KeyScheme``), so the keys one script touches
together, and a group's sharded pub/sub topic, are all in one slot.

The layer's Redis keys, all under ``prefix`` (``{prefix}:{kind}:{name}``, made by ``KeyScheme``;
on a Cluster every name is a hash tag, ``{prefix}:{kind}:{{name}}``):

==================  ===============================================  ======================
kind:name           holds                                            expires
==================  ===============================================  ======================
inbox:<process>     list: entries for the process's consumer chans   expiry (+1-2 s) [1]
pending:<process>   hash: pending count per channel, inbox seq no.   expiry (+1-2 s) [1]
channel:<name>      list: a named channel's entries                  expiry, or
                                                                     group_expiry if leased
leases:<name>       zset: leased entries by lease deadline           group_expiry
group:<group>       zset: direct members (other processes' chans)    group_expiry
procs:<group>       zset: processes with local members, by time      group_expiry
broadcast:<group>   (sharded) pub/sub topic: the group's broadcasts  (not stored)
history:{<group>}   stream: a history group's last messages          ttl after last send
position:{<group>}  hash: a history group's epoch and last offset    max(ttl, group_expiry)
process:<process>   pub/sub topic: the pub/sub layer's inbox         (not stored)
==================  ===============================================  ======================

[1] A send refreshes these two at most once a second (``inbox_order.QUEUE_LUA``), so they
live at least ``expiry`` + 1 s after the last send and at most a second more.
"""

from __future__ import annotations

import bisect
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.asyncio import BlockingConnectionPool, Redis, SSLConnection
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

DEFAULT_HOSTS: list[Any] = [("localhost", 6379)]
# Enough for the commands of a busy process; blocking receives take one each. When all
# are busy a caller waits for one instead of failing (redis-py's default pool errors).
MAX_CONNECTIONS = 200
POOL_TIMEOUT = 10

# A client of one Redis server (or Sentinel's master), or of a Redis Cluster.
Client = Redis | RedisCluster

# The oldest redis-py a Cluster runs on: the drills need its RedisClusterUnreachableError
# (older releases raise a plain RedisClusterException when no node answers, which the
# layer cannot tell from a mistake and would pass to callers).
CLUSTER_REDIS_PY = (8, 2)

# Kinds of key whose name is a hash tag even on single servers (kept so for stored data).
ALWAYS_TAGGED = frozenset({"history", "position"})
# Channel names found valid that a layer keeps, with their process (``ChannelOwners``):
# more than a busy process's consumers (each reads its own name), since the map is
# dropped whole when full.
KNOWN_CHANNELS = 16384


@dataclass(frozen=True)
class KeyScheme:
    """The layer's keys, ``{prefix}:{kind}:{name}`` (see the key table above); on a
    Cluster the name is written ``{name}``, a hash tag, so a process's, a channel's or a
    group's keys (and topic) share one slot."""

    prefix: str
    cluster: bool = False

    def key(self, kind: str, name: str) -> str:
        if self.cluster or kind in ALWAYS_TAGGED:
            return f"{self.prefix}:{kind}:{{{name}}}"
        return f"{self.prefix}:{kind}:{name}"

    def kind_prefix(self, kind: str) -> str:
        """What every key of ``kind`` starts with."""
        return f"{self.prefix}:{kind}:"

    @staticmethod
    def name_of(key: str) -> str:
        """The name in a key (prefixes never hold a colon; names never hold braces)."""
        return key.split(":", 2)[2].removeprefix("{").removesuffix("}")


class ChannelOwners:
    """The process of each consumer channel (``{prefix}.{process}!{suffix}``), whose inbox
    and pending hash its messages go to. Names found valid are kept (up to
    ``KNOWN_CHANNELS``): sends and receives reuse the names of the process's consumers, and
    checking one costs more than looking it up."""

    def __init__(self, validate: Callable[[Any], object]) -> None:
        self._validate = validate  # raises for an invalid channel name
        self._known: dict[str, str] = {}

    def checked(self, channel: str) -> str:
        """``of(channel)``, or ``validate``'s error for an invalid name."""
        known = self._known
        if type(channel) is str:
            owner = known.get(channel)
            if owner is not None:
                return owner
        self._validate(channel)
        owner = self.of(channel)
        if len(known) >= KNOWN_CHANNELS:
            known.clear()
        known[channel] = owner
        return owner

    @staticmethod
    def of(channel: str) -> str:
        """The process part of a consumer channel's name (any string for a named one)."""
        return channel.partition("!")[0].rpartition(".")[2]


@dataclass(frozen=True)
class RedisHost:
    """One shard: how to connect to it, and a label for logs that never shows a password."""

    label: str
    address: str | tuple[str, int] | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: str = ""
    sentinel_kwargs: dict[str, Any] = field(default_factory=dict)
    cluster: bool = False
    seeds: tuple[tuple[str, int], ...] = ()  # a Cluster's nodes to start from, in order

    def client(self, name: str, dedicated: bool = False) -> Client:
        """A new client with its own connection pool (pools belong to one event loop);
        ``name`` shows in CLIENT LIST; ``dedicated`` for one long blocking reader."""
        # One retry on a fresh connection: a pooled connection left idle across a Redis
        # restart fails on first use (redis-py does not check it), which would otherwise
        # count as a second outage right after the first. None for the blocking reader:
        # redis-py would repeat a read its cancellation interrupted, and its own loop
        # reconnects anyway.
        retry = Retry(NoBackoff(), 0 if dedicated else 1)
        options = {"client_name": name, "retry": retry, **self.kwargs}
        if self.cluster:
            return self._cluster_client(name, dedicated)
        if self.sentinels:
            sentinel = Sentinel(
                list(self.sentinels), sentinel_kwargs=self.sentinel_kwargs or None, **options
            )
            return sentinel.master_for(self.master_name)
        max_connections = 1 if dedicated else options.pop("max_connections", MAX_CONNECTIONS)
        if isinstance(self.address, str):
            pool = BlockingConnectionPool.from_url(
                self.address, max_connections=max_connections, timeout=POOL_TIMEOUT, **options
            )
        else:
            assert self.address is not None  # noqa: S101  for mypy: no URL means an address
            host, port = self.address
            pool = BlockingConnectionPool(
                host=host,
                port=port,
                max_connections=max_connections,
                timeout=POOL_TIMEOUT,
                **options,
            )
        return Redis(connection_pool=pool)

    def _cluster_client(self, name: str, dedicated: bool) -> RedisCluster:
        """redis-py's own retries stay on: they refresh the slot map after a failover.
        Every seed gets the first URL's password and TLS, as every node of one Cluster."""
        options: dict[str, Any] = {"client_name": name}
        if isinstance(self.address, str):
            options.update(parse_url(self.address))
            for where in ("host", "port", "db"):
                options.pop(where, None)
            if options.pop("connection_class", None) is SSLConnection:
                options["ssl"] = True
        options.update(self.kwargs)
        max_connections = 1 if dedicated else options.pop("max_connections", MAX_CONNECTIONS)
        nodes = [ClusterNode(host, port) for host, port in self.seeds]
        return RedisCluster(startup_nodes=nodes, max_connections=max_connections, **options)


def parse_hosts(hosts: Sequence[Any] | None, cluster: bool = False) -> list[RedisHost]:
    """Every shard of a ``hosts`` setting; a ``TypeError`` names any entry it cannot use.
    A cluster is one "shard": the nodes given, from which the client finds the others."""
    if hosts is None or (isinstance(hosts, Sequence) and not isinstance(hosts, str) and not hosts):
        hosts = DEFAULT_HOSTS
    if isinstance(hosts, str | bytes) or not isinstance(hosts, Sequence):
        raise TypeError(f"hosts must be a list of hosts, got {hosts!r}")
    parsed = [_parse_host(entry) for entry in hosts]
    if not cluster:
        return parsed
    _require_cluster_support(redis.__version__)
    seeds = [_seed(node) for node in parsed]
    if None in seeds or any(node.kwargs != parsed[0].kwargs for node in parsed):
        raise TypeError(
            "With cluster=True, hosts must be nodes of the cluster (redis:// or rediss:// "
            "URLs, (host, port) pairs or dicts with 'address', all with the same options); "
            f"got {hosts!r}"
        )
    first = parsed[0]
    label = "cluster via " + ", ".join(node.label for node in parsed)
    return [
        RedisHost(
            label,
            first.address,
            first.kwargs,
            cluster=True,
            seeds=tuple(seed for seed in seeds if seed is not None),
        )
    ]


def _require_cluster_support(version: str) -> None:
    release = tuple(int(part) for part in re.findall(r"\d+", version)[:2])
    if release < CLUSTER_REDIS_PY:
        needed = ".".join(map(str, CLUSTER_REDIS_PY))
        raise RuntimeError(f"cluster=True needs redis-py >= {needed}; this is {version}")


def _seed(node: RedisHost) -> tuple[str, int] | None:
    """A Cluster node's host and port; None for what cannot be one (Sentinel, a socket)."""
    if isinstance(node.address, tuple):
        return node.address
    if node.address is None or node.sentinels:
        return None
    parts = urlsplit(node.address)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        return None
    return parts.hostname, parts.port or 6379


def _parse_host(entry: Any) -> RedisHost:
    if isinstance(entry, str):
        return RedisHost(label=_safe_url(entry), address=_require_url(entry))
    if isinstance(entry, tuple | list) and len(entry) == 2:
        host, port = entry
        return RedisHost(label=f"{host}:{port}", address=(str(host), int(port)))
    if isinstance(entry, dict):
        options = dict(entry)
        if "sentinels" in options:
            sentinels = tuple((str(h), int(p)) for h, p in options.pop("sentinels"))
            master_name = options.pop("master_name", None)
            if not master_name:
                raise TypeError(f"A Sentinel host needs a 'master_name': {entry!r}")
            return RedisHost(
                label=f"sentinel {master_name} via {sentinels[0][0]}:{sentinels[0][1]}",
                sentinels=sentinels,
                master_name=master_name,
                sentinel_kwargs=options.pop("sentinel_kwargs", None) or {},
                kwargs=options,
            )
        if "address" in options:
            parsed = _parse_host(options.pop("address"))
            return RedisHost(label=parsed.label, address=parsed.address, kwargs=options)
    raise TypeError(
        "Each entry of hosts must be a redis:// or rediss:// or unix:// URL, a (host, port) "
        f"pair, or a dict with 'address' or 'sentinels'; got {entry!r}"
    )


def _require_url(url: str) -> str:
    if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise TypeError(f"A Redis URL must start with redis://, rediss:// or unix://; got {url!r}")
    return url


def _safe_url(url: str) -> str:
    """The URL with any password replaced, for log lines."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class ShardRing:
    """Consistent hashing: adding a shard moves only about 1/N of the keys."""

    POINTS_PER_SHARD = 160

    def __init__(self, shards: int) -> None:
        self._single = shards == 1
        ring = sorted(
            (zlib.crc32(f"shard-{shard}-{point}".encode()), shard)
            for shard in range(shards)
            for point in range(self.POINTS_PER_SHARD)
        )
        self._hashes = [hash_ for hash_, _ in ring]
        self._shards = [shard for _, shard in ring]

    def shard(self, key: str) -> int:
        if self._single:
            return 0
        index = bisect.bisect(self._hashes, zlib.crc32(key.encode())) % len(self._hashes)
        return self._shards[index]
