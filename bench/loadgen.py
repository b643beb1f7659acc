"""The load generator: one asyncio process (on uvloop when installed), loopback only.

``python -m bench.loadgen '<json spec>'`` runs one measurement and prints its result as one JSON
line. The same file drives every implementation, so the client side costs the same for all.

The WebSocket and HTTP/1.1 clients are minimal ``asyncio.Protocol`` implementations driven
by callbacks (no task per message): a closed-loop client sends its next frame from the
callback that received the previous reply. Frames are masked as RFC 6455 requires.

Every mode is bounded: a fixed number of connections, a warm-up and a measurement window
in seconds, and an overall deadline (``spec["deadline"]``) after which the process exits.
CPU time of this process and of the server processes (``server_pids``) is read from
``/proc/<pid>/stat`` at the edges of the measurement window.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TypedDict, TypeVar, cast

from testsupport.system import cpu_seconds, raise_open_files_limit, rss_kib

HOST = "127.0.0.1"


# Measurement helpers ----------------------------------------------------------------------


class CpuFigures(TypedDict):
    """CPU use (% of one core) of the load generator and the servers over a window of
    ``window_s`` seconds; None when the window was too short to say."""

    lg_cpu: float | None
    srv_cpu: float | None
    window_s: float


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants: Hypercorn and Granian serve from a worker child, whose
    CPU and memory are the server's."""
    found, index = [pid], 0
    while index < len(found):
        current = found[index]
        index += 1
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    found += [int(child) for child in children.read().split()]
        except OSError:
            continue  # gone meanwhile
    return found


def tree_cpu_seconds(pid: int) -> float:
    total = 0.0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            total += cpu_seconds(member)
    return total


def tree_rss_kib(pid: int) -> int:
    total = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError, RuntimeError):
            total += rss_kib(member)
    return total


class CpuWindow:
    """CPU use of this process and the servers over a window, as % of one core."""

    def __init__(self, server_pids: list[int]) -> None:
        self.server_pids = server_pids

    def _sample(self) -> tuple[float, float, float]:
        servers = sum(tree_cpu_seconds(pid) for pid in self.server_pids)
        return time.monotonic(), cpu_seconds(os.getpid()), servers

    def start(self) -> None:
        self._start = self._sample()

    def stop(self) -> CpuFigures:
        end = self._sample()
        wall = end[0] - self._start[0]
        if wall < 0.5:  # /proc counts 10 ms ticks: a shorter window would be mostly rounding
            return {"lg_cpu": None, "srv_cpu": None, "window_s": round(wall, 3)}
        return {
            "lg_cpu": round(100 * (end[1] - self._start[1]) / wall, 1),
            "srv_cpu": round(100 * (end[2] - self._start[2]) / wall, 1),
            "window_s": round(wall, 3),
        }


class ClosedLoop:
    """The phases of a closed-loop measurement, read by the clients' callbacks: ``warmup``,
    ``measure`` (latencies count), ``stop`` (send nothing more)."""

    def __init__(self, server_pids: list[int]) -> None:
        self.phase = "warmup"
        self.cpu = CpuWindow(server_pids)

    async def run(
        self, warmup: float, duration: float, busy: Callable[[], bool], drain: float
    ) -> CpuFigures:
        """Warm up, measure for ``duration`` seconds, then stop and wait (at most ``drain``
        seconds) until nothing is ``busy``; the CPU window of the measurement."""
        await asyncio.sleep(warmup)
        self.phase = "measure"
        self.cpu.start()
        await asyncio.sleep(duration)
        window = self.cpu.stop()
        self.phase = "stop"
        drain_until = time.monotonic() + drain
        while busy() and time.monotonic() < drain_until:
            await asyncio.sleep(0.01)
        return window


def percentiles(samples_s: list[float]) -> dict[str, float | None]:
    """p50/p99/max in milliseconds (nearest-rank), None without samples."""
    if not samples_s:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(samples_s)
    last = len(ordered) - 1

    def rank(q: float) -> float:
        return round(1000 * ordered[min(last, int(q * len(ordered)))], 3)

    return {"p50_ms": rank(0.50), "p99_ms": rank(0.99), "max_ms": round(1000 * ordered[-1], 3)}


# A minimal WebSocket client ---------------------------------------------------------------

OnMessage = Callable[["WebSocket", bytes], None]


class WebSocket(asyncio.Protocol):
    """Client side of RFC 6455 for text frames: handshake, masking, ping/pong, close."""

    def __init__(self, path: str, port: int, on_message: OnMessage) -> None:
        self.path, self.port, self.on_message = path, port, on_message
        self.opened: asyncio.Future[WebSocket] = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._handshaken = False
        self._fragments: list[bytes] = []
        self._mask = os.urandom(4)
        # More handshake header lines ("Name: value\r\n" each), e.g. a session cookie.
        self.extra_headers = ""
        # Per-client state the scenario may use.
        self.sent_at = 0.0
        self.inflight = False
        self.message = b""
        self.received = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A TCP connection's transport (create_connection) is always a Transport.
        self.transport = cast(asyncio.Transport, transport)
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(
            (
                f"GET {self.path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Origin: http://{HOST}:{self.port}\r\n{self.extra_headers}\r\n"
            ).encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"connection lost during handshake: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        if not self._handshaken:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buffer[: buffer.find(b"\r\n")])
            if b" 101 " not in status:
                self.opened.set_exception(ConnectionError(f"handshake refused: {status!r}"))
                assert self.transport is not None
                self.transport.close()
                return
            del buffer[: end + 4]
            self._handshaken = True
            self._upgraded()
        while len(buffer) >= 2:
            first, second = buffer[0], buffer[1]
            length, position = second & 0x7F, 2
            if length == 126:
                if len(buffer) < 4:
                    return
                length, position = int.from_bytes(buffer[2:4], "big"), 4
            elif length == 127:
                if len(buffer) < 10:
                    return
                length, position = int.from_bytes(buffer[2:10], "big"), 10
            key = None
            if second & 0x80:  # servers do not mask, but be lenient
                key, position = bytes(buffer[position : position + 4]), position + 4
            if len(buffer) < position + length:
                return
            payload = bytes(buffer[position : position + length])
            del buffer[: position + length]
            if key is not None:
                payload = _xor(payload, key)
            self._frame(first & 0x80, first & 0x0F, payload)

    def _frame(self, fin: int, opcode: int, payload: bytes) -> None:
        if opcode in (0, 1, 2):
            if not fin:
                self._fragments.append(payload)
                return
            if self._fragments:
                payload = b"".join([*self._fragments, payload])
                self._fragments.clear()
            self._deliver(payload)
        elif opcode == 8:
            self._write(0x88, payload[:2])
            assert self.transport is not None
            self.transport.close()
        elif opcode == 9:
            self._write(0x8A, payload)

    def _upgraded(self) -> None:
        """The server answered 101: the connection is open."""
        self.opened.set_result(self)

    def _deliver(self, payload: bytes) -> None:
        self.received += 1
        self.on_message(self, payload)

    def _write(self, first: int, payload: bytes) -> None:
        length = len(payload)
        if length < 126:
            header = bytes((first, 0x80 | length))
        elif length < 65536:
            header = bytes((first, 0xFE)) + length.to_bytes(2, "big")
        else:
            header = bytes((first, 0xFF)) + length.to_bytes(8, "big")
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(header + self._mask + _xor(payload, self._mask))

    def send(self, payload: bytes) -> None:
        """Send a text frame (``payload`` is UTF-8)."""
        self._write(0x81, payload)

    def close(self) -> None:
        self._write(0x88, (1000).to_bytes(2, "big"))
        if self.transport is not None:
            self.transport.close()


class SocketIO(WebSocket):
    """A Socket.IO client (Engine.IO 4) over the WebSocket transport alone, for the same
    modes: after the upgrade it reads Engine.IO's open packet (``0{...}``), connects to the
    default namespace (``40``) and is open once the server's ``40{...}`` arrives. ``send``
    emits the event ``event`` (``42["event",data]``); a received event's data goes to
    ``on_message`` as JSON text (a string's own characters). Engine.IO pings (``2``) get
    their pong (``3``); other packets are ignored.

    ``raw_json``: the payloads given to ``send`` are JSON already (sent as they are), not
    text to send as a JSON string.
    """

    def __init__(self, path: str, port: int, on_message: OnMessage) -> None:
        separator = "&" if "?" in path else "?"
        super().__init__(f"{path}{separator}EIO=4&transport=websocket", port, on_message)
        self.event = b"message"
        self.raw_json = False

    def _upgraded(self) -> None:
        pass  # open once the Socket.IO connect is acknowledged

    def _deliver(self, payload: bytes) -> None:
        if payload.startswith(b"42"):
            event = json.loads(payload[2:])
            data = event[1] if len(event) > 1 else None
            text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
            super()._deliver(text.encode())
        elif payload == b"2":
            super().send(b"3")
        elif payload.startswith(b"0{"):
            super().send(b"40")
        elif payload.startswith(b"40") and not self.opened.done():
            self.opened.set_result(self)
        elif payload.startswith(b"44") and not self.opened.done():
            self.opened.set_exception(ConnectionError(f"Socket.IO connect refused: {payload!r}"))

    def send(self, payload: bytes) -> None:
        data = payload if self.raw_json else json.dumps(payload.decode()).encode()
        super().send(b'42["' + self.event + b'",' + data + b"]")


def _xor(payload: bytes, key: bytes) -> bytes:
    length = len(payload)
    if not length:
        return payload
    repeated = (key * (length // 4 + 1))[:length]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        length, "big"
    )


P = TypeVar("P", bound=asyncio.Protocol)


def protocol_factory(protocol: P) -> Callable[[], P]:
    """For ``create_connection``: a factory handing over a protocol made beforehand."""
    return lambda: protocol


async def connect_all(
    ports: list[int],
    path: str,
    count: int,
    on_message: OnMessage,
    concurrency: int = 50,
    client_class: type[WebSocket] = WebSocket,
) -> list[WebSocket]:
    """Open ``count`` connections, spread round-robin over ``ports``, ``concurrency`` at a time."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> WebSocket:
        port = ports[index % len(ports)]
        async with gate:
            client = client_class(path, port, on_message)
            await loop.create_connection(protocol_factory(client), HOST, port)
            return await asyncio.wait_for(client.opened, 30)

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def open_clients(
    spec: dict[str, Any], path: str, count: int, on_message: OnMessage, event: str
) -> list[WebSocket]:
    """``connect_all`` for the spec's ``protocol``: ``websocket`` (default) or ``socketio``
    (its clients' ``send`` emits ``event``; ``raw_json``: the payloads are JSON already)."""
    if spec.get("protocol", "websocket") != "socketio":
        return await connect_all(spec["ports"], path, count, on_message)
    clients = await connect_all(spec["ports"], path, count, on_message, client_class=SocketIO)
    for client in clients:
        assert isinstance(client, SocketIO)
        client.event, client.raw_json = event.encode(), bool(spec.get("raw_json"))
    return clients


async def close_all(clients: list[WebSocket], wait: float = 2.0) -> None:
    for client in clients:
        client.close()
    if clients:
        await asyncio.wait([c.closed for c in clients], timeout=wait)


# Modes ------------------------------------------------------------------------------------


async def echo(spec: dict[str, Any]) -> dict[str, Any]:
    """Closed loop: each connection sends, waits for the echo, sends again.

    With ``blocker_path`` one extra connection sends ``blocker_message`` in the same way;
    its own round trips are reported apart (``blocker_round_trips``).
    """
    closed_loop = ClosedLoop(spec["server_pids"])
    latencies: list[float] = []
    message = spec.get("message", "x" * 32).encode()

    def on_message(client: WebSocket, payload: bytes) -> None:
        now = time.perf_counter()
        if closed_loop.phase == "measure":
            latencies.append(now - client.sent_at)
        client.inflight = False
        if closed_loop.phase != "stop":
            client.sent_at, client.inflight = now, True
            client.send(client.message)

    blocker_trips = 0

    def on_blocker(client: WebSocket, payload: bytes) -> None:
        nonlocal blocker_trips
        blocker_trips += closed_loop.phase == "measure"
        client.inflight = False
        if closed_loop.phase != "stop":
            client.inflight = True
            client.send(client.message)

    clients = await open_clients(spec, spec["path"], spec["connections"], on_message, "echo")
    blockers: list[WebSocket] = []
    if spec.get("blocker_path"):
        blockers = await open_clients(spec, spec["blocker_path"], 1, on_blocker, "echo")
    try:
        for client in clients:
            client.message = message
        for client in blockers:
            client.message = spec["blocker_message"].encode()
        start = time.perf_counter()
        for client in [*blockers, *clients]:
            client.sent_at, client.inflight = start, True
            client.send(client.message)
        window = await closed_loop.run(
            spec["warmup"],
            spec["duration"],
            lambda: any(c.inflight for c in [*clients, *blockers]),
            spec.get("drain", 3.0),
        )
    finally:
        await close_all([*clients, *blockers])
    result: dict[str, Any] = {
        "round_trips": len(latencies),
        "rps": round(len(latencies) / window["window_s"], 1),
        **percentiles(latencies),
        **window,
    }
    if blockers:
        result["blocker_round_trips"] = blocker_trips
    return result


async def broadcast(spec: dict[str, Any]) -> dict[str, Any]:
    """``connections`` clients in one group; client 0 sends ``messages`` frames one after
    another, each after every client received the previous one (or ``timeout`` passed)."""
    sent_at: dict[int, float] = {}
    pending: dict[int, int] = {}
    latencies: list[float] = []
    everyone = asyncio.Event()

    def on_message(client: WebSocket, payload: bytes) -> None:
        now = time.perf_counter()
        sequence = int(payload.split(b":", 1)[0])
        if sequence not in sent_at:
            return
        if sequence >= 0:  # negative: a warm-up message, waited for but not measured
            latencies.append(now - sent_at[sequence])
        pending[sequence] -= 1
        if pending[sequence] == 0:
            everyone.set()

    count = spec["connections"]
    clients = await open_clients(spec, spec["path"], count, on_message, "broadcast")
    cpu = CpuWindow(spec["server_pids"])
    padding = "x" * 32
    timed_out = 0
    try:
        sender = clients[0]
        for sequence in range(-spec.get("warmup_messages", 2), spec["messages"]):
            if sequence == 0:
                cpu.start()
            everyone.clear()
            pending[sequence] = count
            sent_at[sequence] = time.perf_counter()
            sender.send(f"{sequence}:{padding}".encode())
            try:
                await asyncio.wait_for(everyone.wait(), spec.get("timeout", 10))
            except TimeoutError:
                timed_out += sequence >= 0
            await asyncio.sleep(spec.get("gap", 0.02))
        window = cpu.stop()
        await asyncio.sleep(0.2)  # let late deliveries arrive before counting losses
    finally:
        await close_all(clients)
    expected = count * spec["messages"]
    return {
        "deliveries": len(latencies),
        "lost": expected - len(latencies),
        "timed_out_messages": timed_out,
        **percentiles(latencies),
        **window,
    }


async def idle_memory(spec: dict[str, Any]) -> dict[str, Any]:
    """Server RSS growth per open connection (connections stay idle after connecting)."""
    pid = spec["server_pids"][0]

    def ignore(client: WebSocket, payload: bytes) -> None:
        pass

    # Warm the server up with a few connections so lazy imports and caches are not counted.
    warm = await open_clients(spec, spec["path"], 10, ignore, "broadcast")
    await asyncio.sleep(0.3)
    await close_all(warm)
    await asyncio.sleep(spec.get("settle", 1.0))
    before = tree_rss_kib(pid)
    clients = await open_clients(spec, spec["path"], spec["connections"], ignore, "broadcast")
    try:
        await asyncio.sleep(spec.get("settle", 1.0))
        after = tree_rss_kib(pid)
    finally:
        await close_all(clients, wait=5)
    return {
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_conn": round((after - before) / spec["connections"], 2),
    }


async def storm(
    spec: dict[str, Any], count: int, on_message: OnMessage, limit: float
) -> tuple[list[WebSocket], list[str], float]:
    """Open ``count`` connections at once (``storm_concurrency`` handshakes in flight),
    each given until ``limit`` seconds after the start: the open ones, one error line per
    failed one, and the seconds until the last one opened."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(spec.get("storm_concurrency", 1000))
    deadline = loop.time() + limit
    ports, path = spec["ports"], spec["path"]
    client_class: type[WebSocket] = SocketIO if spec.get("protocol") == "socketio" else WebSocket
    opened_at: list[float] = []

    async def one(index: int) -> WebSocket:
        async with gate:
            client = client_class(path, ports[index % len(ports)], on_message)
            try:
                async with asyncio.timeout_at(deadline):
                    await loop.create_connection(protocol_factory(client), HOST, client.port)
                    await client.opened
            except BaseException:
                # Not open in time: drop it, or its handshake could still complete and
                # join the group with deliveries nobody counts.
                if client.transport is not None:
                    client.transport.abort()
                raise
            opened_at.append(loop.time())
            return client

    began = loop.time()
    outcomes = await asyncio.gather(*(one(i) for i in range(count)), return_exceptions=True)
    clients = [outcome for outcome in outcomes if isinstance(outcome, WebSocket)]
    errors = [
        f"{type(outcome).__name__}: {outcome}"
        for outcome in outcomes
        if isinstance(outcome, BaseException)
    ]
    return clients, errors, (max(opened_at) - began) if opened_at else 0.0


async def scale(spec: dict[str, Any]) -> dict[str, Any]:
    """``connections`` idle WebSockets on one server process (the broadcast route, so each
    is in the group): opened all at once within ``storm_s`` seconds (errors counted), the
    server's RSS growth per open connection, then ``messages`` broadcasts to all of them
    (p50/p99 over every delivery)."""
    pid = spec["server_pids"][0]
    count, messages = spec["connections"], spec.get("messages", 5)
    sent_at: dict[int, float] = {}
    pending: dict[int, int] = {}
    latencies: list[float] = []
    everyone = asyncio.Event()

    members: set[int] = set()  # the connections open after the storm, by id()

    def on_message(client: WebSocket, payload: bytes) -> None:
        now = time.perf_counter()
        sequence = int(payload.split(b":", 1)[0])
        if sequence not in pending or id(client) not in members:
            return
        if sequence >= 0:
            latencies.append(now - sent_at[sequence])
        pending[sequence] -= 1
        if pending[sequence] == 0:
            everyone.set()

    warm = await open_clients(spec, spec["path"], 10, on_message, "broadcast")
    await asyncio.sleep(0.3)
    await close_all(warm)
    await asyncio.sleep(spec.get("settle", 1.0))
    before = tree_rss_kib(pid)
    clients, errors, storm_s = await storm(spec, count, on_message, spec.get("storm_s", 10.0))
    members.update(id(client) for client in clients)
    timed_out = 0
    try:
        await asyncio.sleep(spec.get("settle", 1.0))
        after = tree_rss_kib(pid)
        for client in clients:
            if isinstance(client, SocketIO):
                client.event = b"broadcast"
        cpu_before = own_before = wall_before = 0.0
        for sequence in range(-1, messages if clients else -1):  # -1: unmeasured warm-up
            if sequence == 0:
                cpu_before = tree_cpu_seconds(pid)
                own_before, wall_before = time.process_time(), time.perf_counter()
            everyone.clear()
            pending[sequence] = len(clients)
            sent_at[sequence] = time.perf_counter()
            clients[0].send(f"{sequence}:{'x' * 32}".encode())
            try:
                await asyncio.wait_for(everyone.wait(), spec.get("timeout", 30))
            except TimeoutError:
                timed_out += sequence >= 0
        broadcasts_cpu = tree_cpu_seconds(pid) - cpu_before if clients else 0.0
        own_share = (
            (time.process_time() - own_before) / (time.perf_counter() - wall_before)
            if clients and messages
            else None
        )
        await asyncio.sleep(0.2)
    finally:
        await close_all(clients, wait=10)
    return {
        **scale_figures(
            len(clients), errors, storm_s, (before, after), messages, latencies, broadcasts_cpu
        ),
        "timed_out_messages": timed_out,
        # This load generator's CPU over the same broadcasts, % of its core: near 100, it
        # was the bottleneck; well under, it idled between frames, and on loopback waking
        # it again is part of the server's write.
        "lg_cpu_pct": round(own_share * 100, 1) if own_share is not None else None,
    }


def scale_figures(
    opened: int,
    errors: list[str],
    storm_s: float,
    rss_kib: tuple[int, int],
    messages: int,
    latencies: list[float],
    broadcasts_cpu: float,
) -> dict[str, Any]:
    """The scale scenario's result from what was measured: the storm, RSS before and after
    it, the broadcasts' latencies and the server's CPU over them."""
    before, after = rss_kib
    return {
        "connected": opened,
        "storm_errors": len(errors),
        "storm_error_sample": sorted(set(errors))[:3],
        "storm_s": round(storm_s, 3),
        "rss_before_kib": before,
        "kib_per_conn": round((after - before) / opened, 2) if opened else None,
        "lost": opened * messages - len(latencies) if opened else None,
        # The server's CPU per measured broadcast: steadier than the latencies.
        "srv_ms_per_broadcast": (
            round(broadcasts_cpu * 1e3 / messages, 2) if opened and messages else None
        ),
        **percentiles(latencies),
    }


class HttpClient(asyncio.Protocol):
    """HTTP/1.1 keep-alive client: one request in flight, Content-Length or chunked replies."""

    def __init__(self, request: bytes, on_response: Callable[[HttpClient], None]) -> None:
        self.request, self.on_response = request, on_response
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.sent_at = 0.0
        self.inflight = False
        self.statuses: dict[int, int] = {}
        self.ready = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.ready.set_result(None)

    def send(self) -> None:
        assert self.transport is not None
        self.sent_at, self.inflight = time.perf_counter(), True
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buffer[:end]).lower()
            status = int(head[9:12])
            body_start = end + 4
            marker = head.find(b"\ncontent-length:")
            if marker >= 0:
                line_end = head.find(b"\r", marker + 1)
                length = int(head[marker + 16 : line_end if line_end >= 0 else None])
                if len(buffer) < body_start + length:
                    return
                del buffer[: body_start + length]
            elif b"transfer-encoding: chunked" in head:
                finish = buffer.find(b"\r\n0\r\n\r\n", body_start - 2)
                if finish < 0:
                    return
                del buffer[: finish + 7]
            else:
                del buffer[:body_start]
            self.statuses[status] = self.statuses.get(status, 0) + 1
            self.inflight = False
            self.on_response(self)


async def http(spec: dict[str, Any]) -> dict[str, Any]:
    """Closed loop over ``connections`` keep-alive connections: GET, read reply, repeat."""
    closed_loop = ClosedLoop(spec["server_pids"])
    latencies: list[float] = []
    request = f"GET {spec['path']} HTTP/1.1\r\nHost: {HOST}:{spec['ports'][0]}\r\n\r\n".encode()

    def on_response(client: HttpClient) -> None:
        now = time.perf_counter()
        if closed_loop.phase == "measure":
            latencies.append(now - client.sent_at)
        if closed_loop.phase != "stop":
            client.send()

    clients = []
    for index in range(spec["connections"]):
        client = HttpClient(request, on_response)
        port = spec["ports"][index % len(spec["ports"])]
        await asyncio.get_running_loop().create_connection(protocol_factory(client), HOST, port)
        clients.append(client)
    try:
        for client in clients:
            client.send()
        window = await closed_loop.run(
            spec["warmup"], spec["duration"], lambda: any(c.inflight for c in clients), 3.0
        )
    finally:
        for client in clients:
            if client.transport is not None:
                client.transport.close()
    statuses: dict[str, int] = {}
    for client in clients:
        for status, seen in client.statuses.items():
            statuses[str(status)] = statuses.get(str(status), 0) + seen
    return {
        "requests": len(latencies),
        "rps": round(len(latencies) / window["window_s"], 1),
        "statuses": statuses,
        **percentiles(latencies),
        **window,
    }


MODES = {
    "echo": echo,
    "broadcast": broadcast,
    "idle_memory": idle_memory,
    "scale": scale,
    "http": http,
}


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    return await asyncio.wait_for(MODES[spec["mode"]](spec), spec.get("deadline", 120))


def _run(spec: dict[str, Any]) -> dict[str, Any]:
    """On uvloop when it is installed (Uvicorn's ``standard`` extra brings it): about half
    the CPU a frame of asyncio's loop, so the load generator is less often the limit."""
    if os.environ.get("BENCH_LG_LOOP") != "asyncio":
        with contextlib.suppress(ImportError):
            import uvloop

            return cast(dict[str, Any], uvloop.run(main(spec)))
    return asyncio.run(main(spec))


if __name__ == "__main__":
    raise_open_files_limit()
    print(json.dumps(_run(json.loads(sys.argv[1]))), flush=True)
