"""The Redis layer's connections: which event loop does its Redis work, the clients and
reader tasks of that loop, and the health of each host.

All Redis I/O runs on one event loop, the "home" loop: the main thread's loop when it is
running (Daphne, Uvicorn, ``runworker``), else a background thread of the layer. Calls from
other threads and loops (``async_to_sync`` in a view, a management command, a Celery task)
are handed to it, so they reuse its connections and never meet "Event loop is closed".
When the home loop changes (a new test's loop), a new ``LoopState`` is made, the old one is
shut on its own loop, and the readers resubscribe before any work runs.

The readers (this process's inbox, read here; the pub/sub topics, read by
``redis_subscriptions``) hand what they read back to the layer through ``LayerCallbacks``;
nothing here knows the layer's class. Scripts go out through each host's ``ScriptBatcher``.
A Redis that goes away is retried with backoff (see ``redis_health``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from redis.asyncio.client import PubSub

from . import redis_cluster, stopping
from .exceptions import LayerUnavailable
from .inbox_order import InboxProgress
from .redis_health import UNAVAILABLE, Health
from .redis_hosts import Client, RedisHost, ShardRing
from .redis_subscriptions import BLOCK_SECONDS, SubscriptionReaders, quietly
from .script_batcher import BeforeSend, ScriptBatcher
from .wakeups import call_soon_on

logger = logging.getLogger("channels_layer.redis")

T = TypeVar("T")

INBOX_BATCH = 500


@dataclass(frozen=True)
class ProcessInbox:
    """Where this process's inbox lives (see the key table in ``redis_hosts``)."""

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
        before_send: Mapping[int, Sequence[BeforeSend]],
    ) -> None:
        self.loop = loop
        self.clients = [host.client(name) for host in hosts]
        self.scripts = [
            ScriptBatcher(client, scripts, before_send.get(shard, ()))
            for shard, client in enumerate(self.clients)
        ]
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
        self.subscriptions = SubscriptionReaders(
            hosts, ring, retry_timeout, inbox, callbacks, self.health
        )
        self._lock = threading.Lock()
        self._main_loop: asyncio.AbstractEventLoop | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._state: LoopState | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._spawned: set[asyncio.Task[Any]] = set()
        self._before_send: dict[int, list[BeforeSend]] = {}

    def before_batch(self, shard: int, add: BeforeSend) -> None:
        """Have ``add(batcher)`` called before each batch of scripts leaves for ``shard``,
        to put in calls that may as well ride along (see ``script_batcher``)."""
        self._before_send.setdefault(shard, []).append(add)

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
        try:
            state = self.state()
            if state.resubscribing:
                pending = [confirmed for confirmed in state.resubscribing if not confirmed.done()]
                if pending:
                    await asyncio.wait(pending, timeout=self.retry_timeout)
                else:
                    state.resubscribing = []
        except BaseException:  # cancelled while waiting: the work never starts
            work.close()
            raise
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
            state = self._state = LoopState(
                loop, self.hosts, self.connection_name, self.scripts, self._before_send
            )
            state.resubscribing = [
                self.subscriptions.start(state, topic) for topic in self.callbacks.topics()
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
        return await self._attempt(shard, operation, time.monotonic() + self.retry_timeout)

    async def _attempt(
        self,
        shard: int,
        operation: Callable[[LoopState], Awaitable[T]],
        deadline: float,
        error: BaseException | None = None,
    ) -> T:
        """``call``'s attempts until ``deadline``; ``error``: the first one's, if made."""
        while True:
            if error is not None:
                if time.monotonic() >= deadline:
                    label = self.hosts[shard].label
                    raise LayerUnavailable(
                        f"Redis {label} unreachable for {self.retry_timeout} s: {error}"
                    ) from error
                await self.callbacks.unavailable(shard, error)
            try:
                result = await operation(self.state())
            except UNAVAILABLE as failed:
                error = failed
                continue
            self.health[shard].up()
            return result

    async def run_script(self, shard: int, name: str, keys: list[str], args: list[Any]) -> Any:
        """``run(script, shard, name, keys, args)`` from any loop, in one step when called
        on the home loop with its subscriptions settled (a sender awaiting each send):
        its batcher's call is awaited at once, without the hops of ``run``, ``call`` and
        ``script``; a first attempt Redis does not answer is retried as ``call`` would."""
        running = asyncio.get_running_loop()
        if threading.current_thread() is threading.main_thread():
            self._main_loop = running
        state = self._state
        if (
            state is None
            or state.loop is not running
            or state.resubscribing
            or self._home_loop() is not running
        ):
            return await self.run(self.script, shard, name, keys, args)
        deadline = time.monotonic() + self.retry_timeout
        try:
            result = await state.scripts[shard].call(name, keys, args)
        except UNAVAILABLE as error:

            def operation(state: LoopState) -> asyncio.Future[Any]:
                return state.scripts[shard].call(name, keys, args)

            return await self._attempt(shard, operation, deadline, error)
        self.health[shard].up()
        return result

    async def script(
        self,
        shard: int,
        name: str,
        keys: list[str],
        args: list[Any],
        on_result: Callable[[Any], None] | None = None,
    ) -> Any:
        """Run a Lua script by SHA, batched with the other calls made meanwhile (see
        ``script_batcher``). ``on_result`` is called with the result as it arrives, before
        the caller resumes, and even if the caller was cancelled meanwhile."""

        def operation(state: LoopState) -> asyncio.Future[Any]:
            return state.scripts[shard].call(name, keys, args, on_result)

        return await self.call(shard, operation)

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

    # Broadcast subscriptions (read by ``redis_subscriptions``) ------------------------

    async def subscribe(self, topic: str) -> None:
        """Subscribe to a pub/sub ``topic``; returns once Redis confirms, so a message
        published after that is never missed."""
        await self.subscriptions.subscribe(self.state(), topic)

    async def unsubscribe(self, topic: str) -> None:
        await self.subscriptions.unsubscribe(self.state(), topic)

    def topics(self) -> list[str]:
        return list(self._state.subscribed) if self._state else []

    async def close(self) -> None:
        state = self._state
        if state is None or state.loop is not asyncio.get_running_loop():
            return
        self._state = None
        await state.shut()
