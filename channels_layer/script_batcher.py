"""Lua scripts run by SHA, one batch of calls in flight per Redis client, each batch one
round trip.

A busy process sends many messages at once (a fan-out to workers, many consumers replying).
Each would cost a network round trip and a reply to parse. ``ScriptBatcher`` queues the
script calls made while a batch is in flight; when its replies are in, calls to the same
script with the same keys become a single EVALSHA whose ARGV holds each call's arguments
one after the other (the scripts loop over them and return one result per call), and all
of those go out at once. So batches grow with the load, and a lone call (a sender awaiting
each send in turn) goes out on the next turn of the loop: one round trip, nothing more.
One batch at a time also keeps calls in the order they were made, whoever made them.
Once a batch's replies are in, the batcher waits one more turn of the loop before it
stops: a sender awaiting each call in turn makes its next call in that turn, and it leaves
at once, in the same turn, instead of on a turn of its own (three turns per call, two).
Work that may as well ride along (the counts of messages this process has taken) is added
by ``before_send`` hooks just before each batch leaves.

On a single Redis a batch is written straight to a connection the batcher keeps, as
redis-py's pipeline would write it but without its per-call bookkeeping; on a Redis
Cluster it goes through the cluster pipeline, which sends each EVALSHA to the node of its
keys, and with Sentinel through a pipeline of the pool that follows the master. Scripts
are loaded again, once, when a restarted Redis has forgotten them.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection, BlockingConnectionPool, ConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger("channels_layer.redis")

# Calls folded into one EVALSHA at most: a script runs alone in Redis, so keep it short.
MAX_CALLS_PER_SCRIPT = 500

OnResult = Callable[[Any], None]
# A call's arguments, its future, and what to call with its result as it arrives.
_Call = tuple[list[Any], asyncio.Future[Any], OnResult | None]
_Batch = list[tuple[str, tuple[str, ...], list[_Call]]]
# Called with the batcher just before each batch leaves, to add calls that may ride along.
BeforeSend = Callable[["ScriptBatcher"], None]


class ScriptBatcher:
    """Batches calls of the given scripts against one Redis client (of one event loop)."""

    def __init__(
        self,
        client: Redis | RedisCluster,
        scripts: Mapping[str, str],
        before_send: Sequence[BeforeSend] = (),
    ) -> None:
        self.client = client
        self.before_send = before_send
        self.sources = dict(scripts)
        self.shas = {name: _sha(source) for name, source in scripts.items()}
        self._queued: dict[tuple[str, tuple[str, ...]], list[_Call]] = {}
        self._sender: asyncio.Task[None] | None = None
        self._connection: AbstractConnection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop of its first call
        # A connection of its own for a single server; a Cluster's or Sentinel's pool
        # picks the node (or the master of the moment) for each batch.
        self._direct = isinstance(client, Redis) and type(client.connection_pool) in (
            ConnectionPool,
            BlockingConnectionPool,
        )

    def call(
        self, name: str, keys: list[str], args: list[Any], on_result: OnResult | None = None
    ) -> asyncio.Future[Any]:
        """The script's result for ``args``, once its batch has been answered.

        ``on_result`` is called with the result as it arrives, even if the future was
        cancelled meanwhile (the call goes out anyway), before the future is resolved:
        no callback of the future, so no turn of the loop, between the two."""
        # The loop is looked up once: on Python 3.11 each lookup costs a getpid() call.
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queued.setdefault((name, tuple(keys)), []).append((args, future, on_result))
        if self._sender is None:
            self._sender = loop.create_task(self._send_queued())
        return future

    async def _send_queued(self) -> None:
        """Send what is queued, batch after batch, until nothing is left."""
        try:
            while True:
                if not self._queued:
                    await asyncio.sleep(0)  # the turn in which callers resume (see above)
                    if not self._queued:
                        return
                for add in self.before_send:
                    add(self)
                queued, self._queued = self._queued, {}
                await self._send(
                    [
                        (name, keys, calls[start : start + MAX_CALLS_PER_SCRIPT])
                        for (name, keys), calls in queued.items()
                        for start in range(0, len(calls), MAX_CALLS_PER_SCRIPT)
                    ]
                )
        finally:
            self._sender = None
            if self._queued:  # stopped by a cancellation: nobody would answer them
                queued, self._queued = self._queued, {}
                for calls in queued.values():
                    for _, future, _ in calls:
                        future.cancel()

    async def _send(self, batch: _Batch) -> None:
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
            for (_, future, on_result), result in zip(calls, reply, strict=True):
                if on_result is not None:
                    try:
                        on_result(result)
                    except Exception:  # the other callers must still hear their results
                        logger.exception("A script result's callback failed")
                if not future.done():
                    future.set_result(result)

    async def _execute(self, batch: _Batch) -> list[Any]:
        commands = [
            ("EVALSHA", self.shas[name], len(keys), *keys, *_flat(calls))
            for name, keys, calls in batch
        ]
        if not self._direct:
            async with self.client.pipeline(transaction=False) as pipe:
                for command in commands:
                    pipe.execute_command(*command)
                return await pipe.execute(raise_on_error=False)
        try:
            return await self._write_and_read(commands)
        except (RedisConnectionError, RedisTimeoutError):
            # Once more on a fresh connection, as the layer's clients retry: a connection
            # left idle across a Redis restart fails on first use.
            return await self._write_and_read(commands)

    async def _write_and_read(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        connection = self._connection
        if connection is None:
            assert isinstance(self.client, Redis)  # noqa: S101  for mypy: see _direct
            connection = self._connection = await self.client.connection_pool.get_connection()
        replies: list[Any] = []
        try:
            if not connection.is_connected:  # within its own connect timeout
                await connection.connect()
            # One deadline for the whole batch, not one timer per write and per reply.
            async with asyncio.timeout(connection.socket_timeout):
                await _write(connection, [_pack(commands, connection)])
                for _ in commands:
                    try:
                        replies.append(await connection.read_response(timeout=math.inf))
                    except ResponseError as error:  # this command's error; the rest follow
                        replies.append(error)
        except BaseException as error:
            # Replies may be left unread on it: start afresh (it reconnects when used).
            await connection.disconnect(nowait=True)
            if isinstance(error, TimeoutError):
                raise RedisTimeoutError("Timeout reading from or writing to Redis") from None
            raise
        return replies


# redis-py's write without a deadline of its own (private; see ``_write``).
BARE_WRITE = "_send_packed_command"


async def _write(connection: AbstractConnection, packed: list[bytes]) -> None:
    """``connection.send_packed_command`` without its ``asyncio.wait_for``, which on Python
    3.11 runs the write as a task of its own: one more turn of the loop per batch. That
    takes redis-py's private write (redis-py 8); where it is gone, the public one."""
    bare_write = getattr(connection, BARE_WRITE, None)
    if bare_write is None:
        await connection.send_packed_command(packed, check_health=False)
        return
    try:
        await bare_write(packed)  # under the batch's deadline (``_write_and_read``)
    except OSError as error:
        raise RedisConnectionError(f"Error while writing to socket: {error}") from error


def _pack(commands: list[tuple[Any, ...]], connection: AbstractConnection) -> bytes:
    """The commands in RESP, as ``connection.pack_commands`` writes them but without its
    encoder's calls per argument: a batch has four arguments per message. Arguments other
    than bytes, str and int go through the connection's encoder."""
    encoder = connection.encoder
    encoding, errors = encoder.encoding, encoder.encoding_errors
    parts: list[bytes] = []
    for command in commands:
        parts.append(b"*%d\r\n" % len(command))
        for arg in command:
            if type(arg) is bytes:
                data = arg
            elif type(arg) is str:
                data = arg.encode(encoding, errors)
            elif type(arg) is int:
                data = b"%d" % arg
            else:
                data = bytes(encoder.encode(arg))
            parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


def _flat(calls: list[_Call]) -> list[Any]:
    return [arg for call_args, _, _ in calls for arg in call_args]


def _fail(calls: list[_Call], error: BaseException) -> None:
    for _, future, _ in calls:
        if not future.done():
            future.set_exception(error)


def _sha(source: str) -> str:
    # The name Redis gives a script (EVALSHA), not a security hash.
    return hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
