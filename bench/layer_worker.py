"""One process of the channel-layer scenario (no Daphne): a receiver or a sender.

``python -m bench.layer_worker IMPL REDIS_URL PREFIX`` reads JSON commands, one per line, on
stdin and answers each with one JSON line on stdout. IMPL is

- ``ours``: ``channels_layer.redis.RedisChannelLayer`` (run with the project on the path);
- ``channels``: ``channels_redis.core.RedisChannelLayer`` (run in bench/.venv-channels);
- ``bare``: the ceiling, raw redis-py with no channel-layer semantics: RPUSH onto the
  receiving process's list drained by one BLMPOP reader, PUBLISH for a group with one
  SUBSCRIBE reader per process fanning out in memory (no capacity, expiry or validation).

Every message carries the sender's ``time.monotonic()`` at the start of its ``send`` or
``group_send`` call (CLOCK_MONOTONIC is shared by the processes of one machine), so the
receiver computes each delivery's latency.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import secrets
import sys
import time
from collections import defaultdict
from typing import Any

CAPACITY = 100_000  # high enough that saturation measures throughput, not ChannelFull
# redis-py's asyncio pools hold at most 100 connections (and raise past that), so no worker
# runs more than this many layer calls at once.
MAX_CONCURRENCY = 64


def make_layer(impl: str, url: str, prefix: str) -> Any:
    if impl == "ours":
        from channels_layer.redis import RedisChannelLayer

        cluster = os.environ.get("BENCH_REDIS_CLUSTER") == "1"  # url is a Cluster node
        return RedisChannelLayer(hosts=[url], prefix=prefix, capacity=CAPACITY, cluster=cluster)
    if impl == "channels":
        from django.conf import settings

        if not settings.configured:
            settings.configure()
        from channels_redis.core import RedisChannelLayer as ChannelsRedisLayer

        return ChannelsRedisLayer(hosts=[url], prefix=prefix, capacity=CAPACITY)
    if impl == "bare":
        return BareLayer(url, prefix)
    raise ValueError(impl)


class BareLayer:
    """The raw redis-py ceiling (see the module docstring)."""

    def __init__(self, url: str, prefix: str) -> None:
        import msgpack
        import redis.asyncio

        self._pack, self._unpack = msgpack.packb, msgpack.unpackb
        self._url, self._prefix = url, prefix
        self._redis = redis.asyncio.Redis.from_url(url)
        self._process = secrets.token_hex(6)
        self._queues: dict[str, asyncio.Queue[Any]] = {}
        self._groups: dict[str, list[str]] = defaultdict(list)
        self._readers: list[asyncio.Task[None]] = []
        self._pubsub: Any = None

    async def new_channel(self) -> str:
        name = f"{self._process}!{secrets.token_hex(6)}"
        self._queues[name] = asyncio.Queue()
        if not self._readers:
            self._readers.append(asyncio.ensure_future(self._read_inbox()))
        return name

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        inbox = f"{self._prefix}:inbox:{channel.partition('!')[0]}"
        await self._redis.rpush(inbox, self._pack([channel, message]))

    async def receive(self, channel: str) -> dict[str, Any]:
        return await self._queues[channel].get()

    async def group_add(self, group: str, channel: str) -> None:
        if self._pubsub is None:
            self._pubsub = self._redis.pubsub()
            self._readers.append(asyncio.ensure_future(self._read_broadcasts()))
        if group not in self._groups:
            await self._pubsub.subscribe(f"{self._prefix}:group:{group}")
        self._groups[group].append(channel)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        await self._redis.publish(f"{self._prefix}:group:{group}", self._pack(message))

    async def _read_inbox(self) -> None:
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(self._url)
        key = f"{self._prefix}:inbox:{self._process}"
        while True:
            popped = await client.blmpop(1, 1, key, direction="LEFT", count=500)
            for item in popped[1] if popped else ():
                channel, message = self._unpack(item)
                self._queues[channel].put_nowait(message)

    async def _read_broadcasts(self) -> None:
        start = len(f"{self._prefix}:group:")
        while True:
            if not self._pubsub.subscribed:
                await asyncio.sleep(0.01)
                continue
            item = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if item is None:
                continue
            message = self._unpack(item["data"])
            for channel in self._groups[item["channel"].decode()[start:]]:
                self._queues[channel].put_nowait(message)

    async def close(self) -> None:
        for task in self._readers:
            task.cancel()


class Worker:
    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.tasks: list[asyncio.Task[None]] = []
        self.arrivals: list[float] = []
        self.latencies: list[float] = []
        self.by_key: dict[int, int] = defaultdict(int)
        self.key_event = asyncio.Event()

    # Receiver ---------------------------------------------------------------------------

    async def _receive_loop(self, channel: str) -> None:
        receive, arrivals, latencies, by_key = (
            self.layer.receive,
            self.arrivals,
            self.latencies,
            self.by_key,
        )
        while True:
            message = await receive(channel)
            now = time.monotonic()
            arrivals.append(now)
            latencies.append(now - message["t"])
            key = message.get("k")
            if key is not None:
                by_key[key] += 1
                self.key_event.set()

    async def cmd_channels(self, count: int) -> dict[str, Any]:
        names = [await self.layer.new_channel() for _ in range(count)]
        self.tasks += [asyncio.ensure_future(self._receive_loop(name)) for name in names]
        return {"channels": names}

    async def cmd_group(self, group: str, count: int, concurrency: int = 50) -> dict[str, Any]:
        started = time.monotonic()
        names = [await self.layer.new_channel() for _ in range(count)]
        gate = asyncio.Semaphore(concurrency)

        async def join(name: str) -> None:
            async with gate:
                await self.layer.group_add(group, name)

        await asyncio.gather(*(join(name) for name in names))
        self.tasks += [asyncio.ensure_future(self._receive_loop(name)) for name in names]
        await asyncio.sleep(0.2)  # let every receive loop park before the first send
        # Every impl starts the measured broadcasts with its collector at the same point:
        # where a join storm leaves the generation counters decides which of the few
        # broadcasts meets a full collection (45-65 ms at 10,000 members), a matter of
        # luck, not of the fan-out (bench/results/issue20/part7-group.md).
        gc.collect()
        return {"members": count, "setup_s": round(time.monotonic() - started, 3)}

    async def cmd_wait(self, key: int, expected: int, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while self.by_key[key] < expected and time.monotonic() < deadline:
            self.key_event.clear()
            try:
                await asyncio.wait_for(self.key_event.wait(), deadline - time.monotonic())
            except TimeoutError:
                break
        return {"got": self.by_key[key]}

    async def cmd_count(self) -> dict[str, Any]:
        return {"received": len(self.arrivals)}

    async def cmd_stats(self, since: float = 0.0, until: float = float("inf")) -> dict[str, Any]:
        """Deliveries that arrived in [since, until] (all by default), then forget them."""
        chosen = [
            latency
            for arrival, latency in zip(self.arrivals, self.latencies, strict=True)
            if since <= arrival <= until
        ]
        total = len(self.arrivals)
        self.arrivals.clear()
        self.latencies.clear()
        self.by_key.clear()
        return {
            "received": total,
            "in_window": len(chosen),
            "latencies": [round(latency, 7) for latency in chosen],
        }

    async def cmd_reset(self) -> dict[str, Any]:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        await self.cmd_stats()
        return {"reset": True}

    # Sender -----------------------------------------------------------------------------

    async def cmd_p2p_rate(
        self, channels: list[str], rate: float, duration: float
    ) -> dict[str, Any]:
        """Open loop: message i is started at ``start + i / rate`` (within a millisecond)."""
        inflight: set[asyncio.Task[None]] = set()
        full = errors = late = 0

        async def one(channel: str) -> None:
            nonlocal full, errors
            try:
                await self.layer.send(channel, {"type": "bench.msg", "t": time.monotonic()})
            except Exception as error:  # ChannelFull from either layer
                if "Full" in type(error).__name__:
                    full += 1
                else:
                    errors += 1
                    print(f"send failed: {error!r}", file=sys.stderr)

        start = time.monotonic()
        sent = 0
        while (now := time.monotonic()) - start < duration:
            due = int((now - start) * rate)
            if sent < due and len(inflight) >= MAX_CONCURRENCY:
                late += 1  # the layer is behind the offered rate
            while sent < due and len(inflight) < MAX_CONCURRENCY:
                task = asyncio.ensure_future(one(channels[sent % len(channels)]))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
                sent += 1
            await asyncio.sleep(0.0005)
        end = time.monotonic()
        if inflight:
            await asyncio.wait(inflight, timeout=10)
        return {
            "sent": sent,
            "full": full,
            "errors": errors,
            "late_ticks": late,
            "start": start,
            "end": end,
        }

    async def cmd_p2p_saturate(
        self, channels: list[str], concurrency: int, duration: float
    ) -> dict[str, Any]:
        """Closed loop: ``concurrency`` senders, each awaiting its send before the next."""
        stop = time.monotonic() + duration
        concurrency = min(concurrency, MAX_CONCURRENCY)
        counts = [0] * concurrency
        full = 0

        async def sender(index: int) -> None:
            nonlocal full
            send, position = self.layer.send, index
            while time.monotonic() < stop:
                try:
                    await send(
                        channels[position % len(channels)],
                        {"type": "bench.msg", "t": time.monotonic()},
                    )
                except Exception as error:
                    if "Full" not in type(error).__name__:
                        raise
                    full += 1
                counts[index] += 1
                position += concurrency

        start = time.monotonic()
        await asyncio.gather(*(sender(i) for i in range(concurrency)))
        return {"sent": sum(counts), "full": full, "start": start, "end": time.monotonic()}

    async def cmd_p2p_one_by_one(self, channels: list[str], duration: float) -> dict[str, Any]:
        """A single sender awaiting each ``send`` before the next (a worker or a view
        pushing messages in turn): bounded by one round trip per message."""
        send, stop = self.layer.send, time.monotonic() + duration
        sent = full = 0
        start = time.monotonic()
        while time.monotonic() < stop:
            try:
                await send(
                    channels[sent % len(channels)], {"type": "bench.msg", "t": time.monotonic()}
                )
            except Exception as error:
                if "Full" not in type(error).__name__:
                    raise
                full += 1
            sent += 1
        return {"sent": sent, "full": full, "start": start, "end": time.monotonic()}

    async def cmd_group_send(self, group: str, key: int) -> dict[str, Any]:
        started = time.monotonic()
        await self.layer.group_send(group, {"type": "bench.group", "t": started, "k": key})
        return {"send_s": time.monotonic() - started}


async def main() -> None:
    impl, url, prefix = sys.argv[1:4]
    worker = Worker(make_layer(impl, url, prefix))
    loop = asyncio.get_running_loop()
    print(json.dumps({"ready": impl}), flush=True)
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        command = json.loads(line)
        name = command.pop("cmd")
        if name == "quit":
            break
        try:
            reply = await getattr(worker, f"cmd_{name}")(**command)
        except Exception as error:
            reply = {"error": f"{type(error).__name__}: {error}"}
        print(json.dumps(reply), flush=True)
    await worker.cmd_reset()
    close = getattr(worker.layer, "close", None) or getattr(worker.layer, "close_pools", None)
    if close is not None:
        await close()
    print(json.dumps({"bye": True}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
