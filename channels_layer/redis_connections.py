"""The Redis layer's connections: which event loop does its Redis work, the clients and
reader tasks of that loop, and the health of each host.

All Redis I/O runs on one event loop, the "home" loop: the main thread's loop when it is
running (Daphne, Uvicorn, ``runworker``), else a background thread of the layer. Calls from
other threads and loops (``async_to_sync`` in a view, a management command, a Celery task)
are handed to it, so they reuse its connections and never meet "Event loop is closed".
When the home loop changes (a new test's loop), a new ``LoopState`` is made, the old one is
shut on its own loop, and the readers resubscribe before any work runs.

The readers (this process's inbox, one pub/sub connection per host; on a Redis Cluster one
sharded pub/sub client, which keeps a connection to each shard it needs and follows its
slots through failovers and migrations) hand what they read
back to the layer through ``LayerCallbacks``; nothing here knows the layer's class.
A Redis that goes away is retried with backoff (see ``redis_health``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from redis.asyncio.client import PubSub

from . import redis_cluster, stopping
from .exceptions import LayerUnavailable
from .inbox_order import SEQ_FIELD, InboxProgress, split_marks
from .mailbox import call_soon_on
from .redis_health import UNAVAILABLE, Health
from .redis_hosts import Client, RedisHost, ShardRing
from .script_batcher import ScriptBatcher

logger = logging.getLogger("channels_layer.redis")

T = TypeVar("T")

INBOX_BATCH = 500
BLOCK_SECONDS = 1


@dataclass(frozen=True)
class ProcessInbox:
    """Where this process's inbox lives (see the key table in ``channels_layer.redis``)."""

    owner: str  # the process id, ``client_prefix``
    key: str  # the inbox list
    pending: str  # its per-channel counts and sequence number
    shard: int
    broadcast_prefix: str  # topics whose messages carry inbox marks (inbox_order)
    sweep_every: float  # seconds between sweeps of expired mailbox entries


@dataclass(frozen=True)
class LayerCallbacks:
    """What the readers hand back to the layer."""

    topics: Callable[[], list[str]]  # the topics a new home loop must subscribe to
    deliver: Callable[[str, bytes], None]  # a pub/sub message: topic, data
    deliver_from_inbox: Callable[[bytes, InboxProgress], None]  # an inbox entry
    sweep: Callable[[], None]  # drop expired messages from the mailboxes
    unavailable: Callable[[int, BaseException], Awaitable[None]]  # wait before a retry


class LoopState:
    """The clients, scripts and reader tasks of one home loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        hosts: list[RedisHost],
        name: str,
        scripts: dict[str, str],
    ) -> None:
        self.loop = loop
        self.clients = [host.client(name) for host in hosts]
        self.scripts = [ScriptBatcher(client, scripts) for client in self.clients]
        self.inbox_reader: asyncio.Task[None] | None = None
        self.inbox_client: Client | None = None
        self.inbox_client_id: int | None = None
        self.inbox_progress = InboxProgress()
        # Set when this state is closed or replaced (a new home loop): its readers stop
        # at their next turn and deliver nothing more, even if their loop runs again.
        self.closing = False
        self.pubsubs: dict[int, PubSub] = {}
        # Every pub/sub connection a reader opened and has not closed itself.
        self.open_pubsubs: set[PubSub] = set()
        self.subscription_readers: dict[int, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        # pub/sub topic -> resolved when Redis confirms the SUBSCRIBE
        self.subscribed: dict[str, asyncio.Future[None]] = {}
        # What a new home loop waits for before working: its topics subscribed again,
        # and the replaced loop's inbox reader unblocked.
        self.resubscribing: list[asyncio.Future[None]] = []

    def reading(self) -> bool:
        """Whether readers (inbox or pub/sub) run in this state."""
        return self.inbox_reader is not None or bool(self.subscribed)

    async def shut(self) -> None:
        """Stop every task of this state and close every connection, in bounded time."""
        self.closing = True
        tasks = [self.inbox_reader, *self.subscription_readers.values(), *self._background]
        await stopping.stop([task for task in tasks if task], self._close_connections, "layer")

    async def _close_connections(self) -> None:
        # Pools too: disconnecting a connection ends a read a cancellation did not end.
        clients = [*self.clients, *([self.inbox_client] if self.inbox_client else [])]
        await asyncio.gather(
            *(quietly(pubsub.aclose()) for pubsub in self.open_pubsubs),
            *(quietly(redis_cluster.close(client)) for client in clients),
        )

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run a fire-and-forget coroutine, keeping a reference so it is not collected."""
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


class RedisConnections:
    """Runs the layer's Redis work on its home loop (see the module docstring) and owns
    that loop's ``LoopState``: clients, scripts, readers and subscriptions."""

    def __init__(
        self,
        hosts: list[RedisHost],
        ring: ShardRing,
        connection_name: str,
        retry_timeout: float,
        scripts: dict[str, str],
        cluster: bool,
        inbox: ProcessInbox,
        callbacks: LayerCallbacks,
    ) -> None:
        self.hosts = hosts
        self.cluster = cluster  # hosts[0] is a Redis Cluster: sharded pub/sub
        self.ring = ring
        self.connection_name = connection_name
        self.retry_timeout = retry_timeout
        self.scripts = scripts
        self.inbox = inbox
        self.callbacks = callbacks
        self.health = [Health.of_host(host.label, host.cluster) for host in hosts]
        self._lock = threading.Lock()
        self._main_loop: asyncio.AbstractEventLoop | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._state: LoopState | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._spawned: set[asyncio.Task[Any]] = set()

    # Choosing the loop -------------------------------------------------------------

    async def run(self, function: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """Await ``function(*args)`` on the home loop, from whatever loop calls."""
        running = asyncio.get_running_loop()
        if threading.current_thread() is threading.main_thread():
            self._main_loop = running
        home = self._home_loop()
        if home is running:
            state = self._state
            if state is not None and state.loop is running and not state.resubscribing:
                return await function(*args)  # the usual case, kept short
            return await self._settled(function(*args))
        future = asyncio.run_coroutine_threadsafe(self._settled(function(*args)), home)
        return await asyncio.wrap_future(future)

    async def _settled(self, work: Coroutine[Any, Any, T]) -> T:
        """Await ``work`` once a new home loop has its subscriptions back, so nothing this
        process publishes (to itself, or to a group it is in) goes to a connection that
        is not subscribed yet."""
        state = self.state()
        if state.resubscribing:
            pending = [confirmed for confirmed in state.resubscribing if not confirmed.done()]
            if pending:
                await asyncio.wait(pending, timeout=self.retry_timeout)
            else:
                state.resubscribing = []
        return await work

    def _home_loop(self) -> asyncio.AbstractEventLoop:
        main, state = self._main_loop, self._state
        # Readers already running on this layer's thread stay there: moving them to the
        # main loop could lose what is in flight to the old connections.
        if (
            main is not None
            and main.is_running()
            and (state is None or state.loop is not self._thread_loop or not state.reading())
        ):
            return main
        with self._lock:
            if self._thread_loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(
                    target=loop.run_forever, name="channels-layer-redis", daemon=True
                ).start()
                self._thread_loop = loop
            return self._thread_loop

    def state(self) -> LoopState:
        """This loop's state, made anew when the home loop changed (a new test's loop).
        Call it on the home loop only (``run`` and ``call`` get there)."""
        loop = asyncio.get_running_loop()
        state = self._state
        if state is None or state.loop is not loop:
            old = state
            state = self._state = LoopState(loop, self.hosts, self.connection_name, self.scripts)
            state.resubscribing = [
                self._start_subscription(state, topic) for topic in self.callbacks.topics()
            ]
            if old is not None:
                self._retire(old)
                if old.inbox_reader is not None:  # this process's channels still receive
                    state.inbox_reader = asyncio.ensure_future(self._read_inbox(state))
                if old.inbox_client_id is not None:
                    # Its BLMPOP would take entries it cannot deliver while its loop waits.
                    unblock = self._unblock(state, old.inbox_client_id)
                    state.resubscribing.append(asyncio.ensure_future(unblock))
        return state

    async def _unblock(self, state: LoopState, client_id: int) -> None:
        client = state.clients[self.inbox.shard]
        with contextlib.suppress(*UNAVAILABLE):  # on a Cluster: the inbox's node
            node = await redis_cluster.node_of(client, self.inbox.key)
            await quietly(client.client_unblock(client_id, **node))

    def _retire(self, old: LoopState) -> None:
        """The home loop changed: the old state's readers must not deliver too (that
        would duplicate broadcasts); shut it on its own loop, now or when it runs again."""
        old.closing = True

        def shut() -> None:
            task = asyncio.ensure_future(old.shut())
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

        call_soon_on(old.loop, shut)  # a loop that has closed runs nothing more anyway

    async def call(self, shard: int, operation: Callable[[LoopState], Awaitable[T]]) -> T:
        """Run ``operation`` against one shard, retrying with backoff while it is
        unreachable, for at most ``retry_timeout`` seconds."""
        if asyncio.get_running_loop() is not self._home_loop():
            # Work begun on a loop that has stopped being home (a task left on a loop
            # that runs again later) goes home: here, state() would take the readers away.
            return await self.run(self.call, shard, operation)
        deadline = time.monotonic() + self.retry_timeout
        while True:
            try:
                result = await operation(self.state())
            except UNAVAILABLE as error:
                if time.monotonic() >= deadline:
                    label = self.hosts[shard].label
                    raise LayerUnavailable(
                        f"Redis {label} unreachable for {self.retry_timeout} s: {error}"
                    ) from error
                await self.callbacks.unavailable(shard, error)
                continue
            self.health[shard].up()
            return result

    async def script(self, shard: int, name: str, keys: list[str], args: list[Any]) -> Any:
        """Run a Lua script by SHA, batched with the other calls of this loop turn."""
        return await self.call(shard, lambda state: state.scripts[shard].call(name, keys, args))

    # The process inbox ---------------------------------------------------------------

    def inbox_reader_runs_here(self) -> bool:
        """Whether the calling loop is the home loop and its inbox reader runs, so
        ``start_inbox_reader`` would do nothing."""
        state = self._state
        if state is None or state.closing or state.loop is not asyncio.get_running_loop():
            return False
        return state.inbox_reader is not None and not state.inbox_reader.done()

    def subscribed_here(self, topic: str) -> bool:
        """Whether the calling loop is the home loop and Redis confirmed ``topic``."""
        state = self._state
        if state is None or state.closing or state.loop is not asyncio.get_running_loop():
            return False
        confirmed = state.subscribed.get(topic)
        return confirmed is not None and confirmed.done() and not confirmed.cancelled()

    async def start_inbox_reader(self) -> None:
        state = self.state()
        if state.inbox_reader is None or state.inbox_reader.done():
            state.inbox_reader = asyncio.ensure_future(self._read_inbox(state))

    async def _read_inbox(self, state: LoopState) -> None:
        inbox, shard = self.inbox, self.inbox.shard
        # A connection of its own, which BLMPOP holds while waiting; the state closes it.
        client = state.inbox_client = self.hosts[shard].client(self.connection_name, dedicated=True)
        with contextlib.suppress(*UNAVAILABLE):  # for a later home loop to unblock it
            node = await redis_cluster.node_of(client, inbox.key)  # where BLMPOP blocks
            state.inbox_client_id = await client.client_id(**node)
        next_sweep = time.monotonic() + inbox.sweep_every
        while not state.closing:
            stopping.raise_if_cancelled()
            try:
                popped = await client.blmpop(
                    BLOCK_SECONDS, 1, inbox.key, direction="LEFT", count=INBOX_BATCH
                )
            except UNAVAILABLE as error:
                if not state.closing:
                    await self.callbacks.unavailable(shard, error)
                continue
            self.health[shard].up()
            # Delivered even when closing: they have left Redis, and would be lost.
            for entry in cast(list[bytes], popped[1]) if popped else ():
                self.callbacks.deliver_from_inbox(entry, state.inbox_progress)
            if not popped:
                state.inbox_progress.drained()
            if time.monotonic() >= next_sweep:
                self.callbacks.sweep()
                next_sweep = time.monotonic() + inbox.sweep_every

    def spawn_soon(self, work: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        """Start ``work()`` on the home loop, from any thread, without waiting for it
        (through ``run``, in case that loop is no longer home when it gets to it)."""

        def start() -> None:
            task = asyncio.ensure_future(self.run(work))
            self._spawned.add(task)
            task.add_done_callback(self._spawned.discard)

        call_soon_on(self._home_loop(), start)

    # Broadcast subscriptions ---------------------------------------------------------

    async def subscribe(self, topic: str) -> None:
        """Subscribe to a pub/sub ``topic``; returns once Redis confirms, so a message
        published after that is never missed."""
        state = self.state()
        confirmed = state.subscribed.get(topic) or self._start_subscription(state, topic)
        try:
            await asyncio.wait_for(asyncio.shield(confirmed), self.retry_timeout)
        except TimeoutError:
            label = self.hosts[self._shard(topic)].label
            raise LayerUnavailable(
                f"Redis {label} did not confirm the subscription to {topic!r} within "
                f"{self.retry_timeout} s; it will be made when Redis is reachable"
            ) from None

    def _start_subscription(self, state: LoopState, topic: str) -> asyncio.Future[None]:
        shard = self._shard(topic)
        confirmed = state.subscribed[topic] = state.loop.create_future()
        reader = state.subscription_readers.get(shard)
        if reader is None or reader.done():
            state.subscription_readers[shard] = asyncio.ensure_future(
                self._read_subscriptions(state, shard)
            )
        elif shard in state.pubsubs:
            state.spawn(quietly(redis_cluster.subscribe(state.pubsubs[shard], topic)))
        # else: the reader is reconnecting and subscribes to everything in state.subscribed
        return confirmed

    async def unsubscribe(self, topic: str) -> None:
        state = self.state()
        if state.subscribed.pop(topic, None) is not None:
            pubsub = state.pubsubs.get(self._shard(topic))
            if pubsub is not None:
                await quietly(redis_cluster.unsubscribe(pubsub, topic))

    def topics(self) -> list[str]:
        return list(self._state.subscribed) if self._state else []

    def _shard(self, topic: str) -> int:
        """Topics are ``{prefix}:{kind}:{name}`` and live on the shard of ``name``."""
        return self.ring.shard(topic.split(":", 2)[2])

    async def _read_subscriptions(self, state: LoopState, shard: int) -> None:
        """Keep one pub/sub connection to ``shard`` subscribed to each of its topics and
        hand messages to the layer; reconnect when it drops, stop when no topic is left."""
        while not state.closing:
            stopping.raise_if_cancelled()
            wanted = [topic for topic in state.subscribed if self._shard(topic) == shard]
            if not wanted:
                return
            pubsub = state.clients[shard].pubsub()
            state.open_pubsubs.add(pubsub)  # closed by the state if this task is cancelled
            try:
                # Shared only once connected: a second subscribe during the first would
                # open a second connection that nobody reads.
                await redis_cluster.subscribe(pubsub, *wanted)
                state.pubsubs[shard] = pubsub
                late = [t for t in state.subscribed if self._shard(t) == shard and t not in wanted]
                if late:
                    await redis_cluster.subscribe(pubsub, *late)
                while not state.closing and any(self._shard(t) == shard for t in state.subscribed):
                    stopping.raise_if_cancelled()
                    message = await redis_cluster.next_message(pubsub, BLOCK_SECONDS)
                    self.health[shard].up()
                    unmarked = []
                    while message is not None and not state.closing:  # else the new state's
                        topic = message["channel"].decode()
                        if message["type"] in ("message", "smessage"):
                            held = self._hold(state, shard, topic, message["data"])
                            unmarked += [held] if held else []
                        elif message["type"] in ("subscribe", "ssubscribe"):
                            confirmed = state.subscribed.get(topic)
                            if confirmed is not None and not confirmed.done():
                                confirmed.set_result(None)
                        # Whatever else has arrived joins this batch (no waiting).
                        more = len(unmarked) < INBOX_BATCH
                        message = await redis_cluster.next_message(pubsub, 0) if more else None
                    if unmarked:
                        state.inbox_progress.settle(unmarked, await self._inbox_latest(state))
            except UNAVAILABLE as error:
                if not state.closing:
                    await self.callbacks.unavailable(shard, error)
                    await quietly(redis_cluster.refresh_slots(state.clients[shard]))
            finally:
                state.pubsubs.pop(shard, None)
            # Not in ``finally``: a cancelled reader awaits nothing (its loop may be ending).
            state.open_pubsubs.discard(pubsub)
            await quietly(pubsub.aclose())

    def _hold(self, state: LoopState, shard: int, topic: str, data: bytes) -> list[Any] | None:
        """Hold a pub/sub message for delivery in order with the inbox (see inbox_order);
        the held item if the inbox's number must still be read, else None."""
        mark: int | None = None
        if topic.startswith(self.inbox.broadcast_prefix):
            with contextlib.suppress(ValueError):  # unmarked: from an older version
                marks, data = split_marks(data)
                if shard == self.inbox.shard:  # else another server's number
                    mark = marks.get(self.inbox.owner)
        if state.inbox_reader is None or state.inbox_reader.done():
            mark = 0  # no consumer channel receives here
        deliver = functools.partial(self.callbacks.deliver, topic, data)
        held = state.inbox_progress.hold(mark, deliver)
        return held if mark is None else None

    async def _inbox_latest(self, state: LoopState) -> int | None:
        """The sequence number of the latest entry queued in this process's inbox."""
        if state.inbox_reader is None or state.inbox_reader.done():
            return None  # no consumer channel receives here
        client = state.clients[self.inbox.shard]
        try:
            latest = await client.hget(self.inbox.pending, SEQ_FIELD)
        except UNAVAILABLE:
            return None  # the inbox is unreachable too: nothing can come from it now
        return int(latest) if latest else None

    async def close(self) -> None:
        state = self._state
        if state is None or state.loop is not asyncio.get_running_loop():
            return
        self._state = None
        await state.shut()


async def quietly(awaitable: Awaitable[Any]) -> None:
    try:
        await awaitable
    except Exception as error:  # best effort: the connection is going away anyway
        logger.debug("Ignoring %r while tidying a Redis connection", error)
