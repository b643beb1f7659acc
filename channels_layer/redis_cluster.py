"""What the Redis layer does differently on a Redis Cluster (``cluster=True``): subscribe
with SSUBSCRIBE, read sharded messages, find the node of a key, refresh the slot map after a
failover. Single-server clients take the plain path of each helper."""

from __future__ import annotations

from typing import Any

from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterPubSub, RedisCluster

from .redis_hosts import Client

# redis-py's ClusterPubSub holds a node's connection lock while it waits for a message, and
# an SSUBSCRIBE or SUNSUBSCRIBE waits for that lock: a reader's wait is kept this short, or
# every group_add and group_discard would wait up to a whole idle read (a second) for it.
CLUSTER_READ_SECONDS = 0.05


async def subscribe(pubsub: PubSub, *topics: str) -> None:
    """SUBSCRIBE, or on a Cluster SSUBSCRIBE on the shard of each topic."""
    if isinstance(pubsub, ClusterPubSub):
        await pubsub.ssubscribe(*topics)
    else:
        await pubsub.subscribe(*topics)


async def unsubscribe(pubsub: PubSub, topic: str) -> None:
    if isinstance(pubsub, ClusterPubSub):
        await pubsub.sunsubscribe(topic)
    else:
        await pubsub.unsubscribe(topic)


async def next_message(pubsub: PubSub, timeout: float) -> dict[str, Any] | None:
    """The next message, a (sharded) subscription's confirmation or a published one."""
    if isinstance(pubsub, ClusterPubSub):
        message = await pubsub.get_sharded_message(timeout=min(timeout, CLUSTER_READ_SECONDS))
        if message is not None and message["type"] == "sunsubscribe":
            await _follow_moved_topic(pubsub, message["channel"])
        return message
    return await pubsub.get_message(timeout=timeout)


async def _follow_moved_topic(pubsub: ClusterPubSub, topic: bytes) -> None:
    """A node unsubscribes us from a shard channel when its slot moves to another master
    (SETSLOT NODE at the end of a migration). redis-py keeps the topic and would move it
    at its next slot map refresh, which a process that only listens may never make: learn
    the new owner now and subscribe there (an SUNSUBSCRIBE of our own is forgotten)."""
    if topic in pubsub.shard_channels:
        await pubsub.cluster.nodes_manager.initialize()
        await pubsub.ssubscribe(topic)


async def refresh_slots(client: Client) -> None:
    """On a Cluster, learn who owns each slot now (a replica may have taken over), so
    topics are subscribed again on their shard's new master, not on the dead one."""
    if isinstance(client, RedisCluster):
        await client.nodes_manager.initialize()


async def node_of(client: Client, key: str) -> dict[str, Any]:
    """Keywords sending a command to the node of ``key`` on a Cluster (none elsewhere)."""
    if not isinstance(client, RedisCluster):
        return {}
    await client.initialize()  # its slot map, the first time
    return {"target_nodes": client.get_node_from_key(key)}


async def close(client: Client) -> None:
    """Close a client with its pools (a cluster client's are always closed with it)."""
    if isinstance(client, RedisCluster):
        await client.aclose()
    else:
        await client.aclose(close_connection_pool=True)
