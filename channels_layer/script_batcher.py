"""Lua scripts run by SHA, with all the calls of one event-loop turn sent in one round trip.

On a Redis Cluster the pipeline sends each EVALSHA to the node of its keys.

A busy process sends many messages at once (a fan-out to workers, many consumers replying).
Each would cost a network round trip and a reply to parse. ``ScriptBatcher`` queues every
script call made during one turn of the loop; on the next turn, calls to the same script
with the same keys become a single EVALSHA whose ARGV holds each call's arguments one
after the other (the scripts loop over them and return one result per call), and all of
those go out as one pipeline. A lone call waits for nothing: the flush is the very next
turn. Scripts are loaded again, once, when a restarted Redis has forgotten them.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

# Calls folded into one EVALSHA at most: a script runs alone in Redis, so keep it short.
MAX_CALLS_PER_SCRIPT = 500

_Call = tuple[list[Any], asyncio.Future[Any]]


class ScriptBatcher:
    """Batches calls of the given scripts against one Redis client."""

    def __init__(self, client: Redis | RedisCluster, scripts: Mapping[str, str]) -> None:
        self.client = client
        self.sources = dict(scripts)
        self.shas = {name: _sha(source) for name, source in scripts.items()}
        self._queued: dict[tuple[str, tuple[str, ...]], list[_Call]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def call(self, name: str, keys: list[str], args: list[Any]) -> asyncio.Future[Any]:
        """The script's result for ``args``, once this turn's batch has been answered."""
        loop = asyncio.get_running_loop()
        if not self._queued:
            loop.call_soon(self._flush)
        future = loop.create_future()
        self._queued.setdefault((name, tuple(keys)), []).append((args, future))
        return future

    def _flush(self) -> None:
        queued, self._queued = self._queued, {}
        batch = [
            (name, keys, calls[start : start + MAX_CALLS_PER_SCRIPT])
            for (name, keys), calls in queued.items()
            for start in range(0, len(calls), MAX_CALLS_PER_SCRIPT)
        ]
        task = asyncio.ensure_future(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[str, tuple[str, ...], list[_Call]]]) -> None:
        try:
            replies = await self._execute(batch)
            refused = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if refused:
                for name in {batch[i][0] for i in refused}:
                    await self.client.script_load(self.sources[name])
                retried = await self._execute([batch[i] for i in refused])
                for i, reply in zip(refused, retried, strict=True):
                    replies[i] = reply
        except BaseException as error:  # the connection failed: every caller hears of it
            for _, _, calls in batch:
                _fail(calls, error)
            if not isinstance(error, Exception):
                raise
            return
        for (_, _, calls), reply in zip(batch, replies, strict=True):
            if isinstance(reply, Exception):
                _fail(calls, reply)
                continue
            for (_, future), result in zip(calls, reply, strict=True):
                if not future.done():
                    future.set_result(result)

    async def _execute(self, batch: list[tuple[str, tuple[str, ...], list[_Call]]]) -> list[Any]:
        async with self.client.pipeline(transaction=False) as pipe:
            for name, keys, calls in batch:
                args = [arg for call_args, _ in calls for arg in call_args]
                pipe.execute_command("EVALSHA", self.shas[name], len(keys), *keys, *args)
            return await pipe.execute(raise_on_error=False)


def _fail(calls: list[_Call], error: BaseException) -> None:
    for _, future in calls:
        if not future.done():
            future.set_exception(error)


def _sha(source: str) -> str:
    # The name Redis gives a script (EVALSHA), not a security hash.
    return hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
