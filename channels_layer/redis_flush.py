"""``RedisChannelLayer.flush()``'s Redis part: every key under the layer's prefix goes,
on every host, and the subscriptions with them. Runs on the home loop."""

from __future__ import annotations

from .redis_connections import LoopState, RedisConnections


async def delete_everything(connections: RedisConnections, prefix: str) -> None:
    """Unsubscribe from every topic, then delete the keys under ``prefix`` on each host."""
    for topic in connections.topics():
        await connections.unsubscribe(topic)
    for shard in range(len(connections.hosts)):

        async def delete_all(state: LoopState, shard: int = shard) -> None:
            client = state.clients[shard]
            batch = [key async for key in client.scan_iter(match=f"{prefix}:*")]
            for start in range(0, len(batch), 1000):
                await client.unlink(*batch[start : start + 1000])

        await connections.call(shard, delete_all)
