"""Real deployments of the reference chat for the reliability drills.

- ``chat_database()``: a PostgreSQL database of its own (or an SQLite file), migrated,
  dropped afterwards; ``seed_chat()`` puts a room and logged-in users in it and returns
  their session cookies.
- ``cluster()``: N Daphne processes (and optionally a ``runworker``) of the reference
  project against a given Redis and database; yields a ``Cluster`` with their ports and
  process handles, and stops everything it started, even when the test fails.
- ``open_chat_clients()``/``ChatClient``: many ``websockets`` connections to a chat room,
  each recording what it received, in the test's one event loop.

Everything runs on loopback; every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import re
import secrets
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin

from consumers.presence import apply_diff
from testsupport.chat import ChatSeed, manage_seed_chat
from testsupport.databases import temporary_database
from testsupport.processes import ManagePy, Process, run_manage_py, stop_all
from testsupport.system import free_port, rss_kib

HOST = "127.0.0.1"
START_TIMEOUT = 30.0  # seconds for a process to be ready (Django imports on 2 busy cores)
STOP_TIMEOUT = 15.0  # SIGTERM drains sockets first (consumers/shutdown.py)
WARNING_LINE = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b")


# The database ---------------------------------------------------------------------------


@contextlib.contextmanager
def chat_database(engine: str = "postgres", directory: Path | None = None) -> Iterator[str]:
    """A migrated database of its own; yields its DATABASE_URL and drops it afterwards.

    ``engine="postgres"`` (the default, safe for several processes writing at once) makes
    one on the machine's PostgreSQL (``E2E_POSTGRES_URL``); ``engine="sqlite"`` a file in
    ``directory``."""
    if engine == "sqlite":
        assert directory is not None, "an SQLite database needs a directory"
        path = directory / f"reliability_{secrets.token_hex(4)}.sqlite3"
        url = f"sqlite:///{path}"
        try:
            _migrate(url)
            yield url
        finally:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    if engine != "postgres":
        raise ValueError(f"engine must be 'postgres' or 'sqlite', not {engine!r}")
    with temporary_database("reliability", migrated=True) as url:
        yield url


def _migrate(database_url: str) -> None:
    run_manage_py("migrate", "--noinput", env={"DATABASE_URL": database_url})


def seed_chat(database_url: str, room: str = "drill", users: int = 20) -> ChatSeed:
    """A public room and ``users`` users (``ROOM-user-NN``) with a session each, made by
    ``manage.py seed_chat`` (so the test process needs no database connection)."""
    names = [f"{room}-user-{n:02d}" for n in range(users)]
    return manage_seed_chat({"DATABASE_URL": database_url}, [room], names)


# The processes --------------------------------------------------------------------------


@dataclass
class Node:
    """One server process: a Daphne of a cluster, or another ASGI server (tests/e2e)."""

    name: str
    port: int
    process: Process

    @property
    def pid(self) -> int:
        return self.process.process.pid

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def ws_url(self, path: str) -> str:
        return f"ws://{HOST}:{self.port}/{path.lstrip('/')}"

    @property
    def output(self) -> str:
        return self.process.output

    def alive(self) -> bool:
        return self.process.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would, and reap it."""
        self.process.process.kill()
        self.process.process.wait(10)

    def rss(self) -> int:
        """Resident memory in bytes (from /proc)."""
        return rss_kib(self.pid) * 1024


@dataclass
class Cluster:
    """What ``cluster()`` started. ``env`` is the environment every process got."""

    daphnes: list[Node]
    worker: Process | None
    env: dict[str, str]
    prefix: str
    redis_url: str
    started: list[Process] = field(default_factory=list)

    @property
    def processes(self) -> list[Process]:
        """Every process started, Daphnes first, then the worker."""
        return list(self.started)

    def named(self) -> dict[str, Process]:
        """Every process started, by name (``daphne-1``..., ``worker``)."""
        named = {node.name: node.process for node in self.daphnes}
        if self.worker is not None:
            named["worker"] = self.worker
        return named

    def outputs(self) -> dict[str, str]:
        """Each process's output so far, by name."""
        return {name: process.output for name, process in self.named().items()}

    def exited(self) -> dict[str, int]:
        """The processes that have exited, by name, with their exit codes."""
        codes = {name: process.process.poll() for name, process in self.named().items()}
        return {name: code for name, code in codes.items() if code is not None}

    def topic(self, group: str) -> str:
        """The Redis pub/sub channel of a layer group (see channels_layer/redis.py)."""
        return f"{self.prefix}:broadcast:{group}"

    def subscribers(self, group: str) -> int:
        """How many processes subscribe to ``group``'s topic (PUBSUB NUMSUB)."""
        with redis.Redis.from_url(self.redis_url, socket_timeout=5) as raw:
            [(_, count)] = raw.pubsub_numsub(self.topic(group))
        return int(count)


@contextlib.contextmanager
def cluster(
    redis_url: str,
    database_url: str,
    daphnes: int = 2,
    worker: bool = True,
    prefix: str | None = None,
    env: dict[str, str] | None = None,
    application: str = "project.asgi:application",
    worker_channels: Sequence[str] = ("chat-moderation",),
) -> Iterator[Cluster]:
    """Start ``daphnes`` Daphne processes serving ``application`` on free loopback ports
    (named ``daphne-1``...) and, with ``worker``, one ``manage.py runworker`` for
    ``worker_channels``, all with REDIS_URL, REDIS_PREFIX (``prefix`` or a random one) and
    DATABASE_URL; wait until each is ready and yield the ``Cluster``. Afterwards every one
    of them still running is stopped (SIGTERM, then SIGKILL)."""
    prefix = prefix or f"reliability-{secrets.token_hex(4)}"
    common = {
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": prefix,
        "DATABASE_URL": database_url,
        "PYTHONUNBUFFERED": "1",
        # The drills are load from one address with shared accounts: no per-user or
        # per-address caps or rate limits unless a test sets its own.
        "CHAT_MAX_SOCKETS_PER_USER": "0",
        "CHAT_MAX_SOCKETS_PER_ADDRESS": "0",
        "CHAT_MESSAGES_PER_SECOND": "1000000",
        "CHAT_MESSAGE_BURST": "1000000",
        **(env or {}),
    }
    started: list[Process] = []
    nodes: list[Node] = []
    worker_process = None
    try:
        for number in range(1, daphnes + 1):
            port = free_port()
            name = f"daphne-{number}"
            process = Process(
                sys.executable,
                *("-m", "daphne", "-b", HOST, "-p", str(port), application),
                env={**common, "SERVER_NAME": name},
            )
            started.append(process)
            nodes.append(Node(name, port, process))
        if worker:
            worker_process = ManagePy("runworker", *worker_channels, env=common)
            started.append(worker_process)
        for node in nodes:
            node.process.wait_for("Listening on TCP address", START_TIMEOUT)
        if worker_process is not None:
            worker_process.wait_for("Worker listening on", START_TIMEOUT)
        yield Cluster(nodes, worker_process, common, prefix, redis_url, started)
    finally:
        stop_all(started, STOP_TIMEOUT)


def warning_lines(output: str) -> list[str]:
    """The log lines at WARNING or above."""
    return [line for line in output.splitlines() if WARNING_LINE.search(line)]


def tracebacks(output: str) -> int:
    return output.count("Traceback (most recent call last)")


# The clients ----------------------------------------------------------------------------


class ChatClient:
    """One WebSocket in a chat room. A reader task records, with ``time.monotonic()``,
    the text of every ``message`` event, every ``presence`` and ``error`` event, and how
    the connection ended."""

    def __init__(self, index: int, node: Node, user: str, websocket: ClientConnection) -> None:
        self.index = index
        self.node = node
        self.user = user
        self.websocket = websocket
        self.received: dict[str, float] = {}
        self.presence: list[tuple[float, dict[str, Any]]] = []
        self.errors: list[dict[str, Any]] = []
        self.welcome: dict[str, Any] | None = None
        self.closed_at: float | None = None
        self.close_code: int | None = None
        self.close_reason: str = ""
        self._joined = asyncio.get_running_loop().create_future()
        self._reader = asyncio.ensure_future(self._read())

    @property
    def open(self) -> bool:
        return self.closed_at is None

    async def joined(self, timeout: float = 30) -> None:
        """Wait for the welcome and history events."""
        await asyncio.wait_for(asyncio.shield(self._joined), timeout)

    async def post(self, text: str) -> bool:
        """Post a message; False if the connection is already closed."""
        try:
            await self.websocket.send(json.dumps({"type": "message", "text": text}))
        except ConnectionClosed:
            return False
        return True

    async def close(self) -> None:
        """A clean close (the closing handshake)."""
        with contextlib.suppress(ConnectionClosed, OSError):
            await self.websocket.close()
        await self.ended()

    async def abort(self) -> None:
        """Drop the TCP connection without a closing handshake (RST), as a dead network."""
        transport = self.websocket.transport
        if transport is not None:
            transport.abort()
        await self.ended()

    async def ended(self) -> None:
        await asyncio.gather(self._reader, return_exceptions=True)

    async def _read(self) -> None:
        try:
            async for raw in self.websocket:
                now = time.monotonic()
                event = json.loads(raw)
                kind = event.get("type")
                if kind == "message":
                    self.received.setdefault(event["text"], now)
                elif kind == "presence":
                    self.presence.append((now, event))
                elif kind == "error":
                    self.errors.append(event)
                elif kind == "welcome":
                    self.welcome = event
                elif kind == "history" and not self._joined.done():
                    self._joined.set_result(None)
        except ConnectionClosed:
            pass
        finally:
            self.closed_at = time.monotonic()
            self.close_code = self.websocket.close_code
            self.close_reason = self.websocket.close_reason or ""
            if not self._joined.done():
                self._joined.set_exception(
                    ConnectionError(f"closed before joining: {self.close_code}")
                )


def connect_chat(node: Node, room: str, cookie: str, timeout: float = 30) -> connect:
    """A ``websockets`` connection to ``room`` on ``node`` with a session cookie, from a
    page of the node's origin, never through a proxy."""
    return connect(
        node.ws_url(f"ws/chat/{room}/"),
        origin=Origin(node.url),
        additional_headers={"Cookie": cookie},
        open_timeout=timeout,
        close_timeout=10,
        ping_interval=None,  # the server pings; the test loop may be too busy to answer ours
        max_queue=None,
        proxy=None,
    )


async def open_chat_clients(
    nodes: Sequence[Node],
    seed: ChatSeed,
    count: int,
    concurrency: int = 50,
    timeout: float = 60,
) -> list[ChatClient]:
    """Open ``count`` clients, client ``i`` to ``nodes[i % len(nodes)]`` as user ``i %
    users``, ``concurrency`` handshakes at a time, and wait until each has joined."""
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> ChatClient:
        node = nodes[index % len(nodes)]
        async with gate:
            websocket = await connect_chat(node, seed.room, seed.cookie(index))
            client = ChatClient(index, node, seed.user(index), websocket)
            await client.joined()
            return client

    async with asyncio.timeout(timeout):
        return list(await asyncio.gather(*(one(index) for index in range(count))))


async def post_timed(poster: ChatClient, text: str, sent: dict[str, float]) -> None:
    """Post ``text``; once the server took it, ``sent[text]`` is when it was sent."""
    sent_at = time.monotonic()
    if await poster.post(text):
        sent[text] = sent_at


def first_arrival(clients: Sequence[ChatClient], sent: dict[str, float], after: float) -> float:
    """When the first post sent after ``after`` reached any client; 0.0 while none has."""
    return min(
        (
            client.received[text]
            for text, at in sent.items()
            if at > after
            for client in clients
            if text in client.received
        ),
        default=0.0,
    )


async def close_all(clients: Sequence[ChatClient], timeout: float = 30) -> None:
    """Close every client still open (best effort, bounded)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(client.close() for client in clients if client.open))
    for client in clients:
        if client.open:
            await client.abort()


async def wait_until(condition, timeout: float, step: float = 0.02) -> float:
    """Poll ``condition`` (sync) until true; the monotonic time it became true."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(step)
    return time.monotonic()


def merged_presence(client: ChatClient, at: float) -> set[str]:
    """The members a browser shows at ``at`` (monotonic), from the presence events this
    client received, as chat.js merges them: the list on entering, then joins and leaves."""
    members: dict = {}
    for received, event in client.presence:
        if received > at:
            break
        if "members" in event:
            members = copy.deepcopy(event["members"])
        else:
            apply_diff(members, event)
    return set(members)
