"""A project without ``"consumers"`` in INSTALLED_APPS (and one with nothing installed at
all) served by real Daphne, Uvicorn and Hypercorn processes: the protections hold.

Each bad frame gets its RFC 6455 close code and short reason, with one log line and no
traceback; ``disconnect()`` runs and the group is left; another client's echo is
unaffected, even while a client floods the worst JSON frames a 64 KiB limit lets through;
a client that stops reading is dropped within 30 s with the server's memory bounded. One
server process per parameter, for the whole module.

What bounds a stalled reader on each server: Daphne, ``CONSUMERS_WEBSOCKET_MAX_BUFFER``
(applied by ``consumers.daphne``). Uvicorn and Hypercorn make the application's send wait
while the client does not read (so memory stays flat) but never give up on it, pings or
``read_timeout`` set or not (neither dropped such a client within 60 s): the consumer's
``CONSUMERS_WEBSOCKET_SEND_TIMEOUT`` (5 s in these settings) ends it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.redis_servers import free_port
from tests.reliability.test_slow_client import (
    connection_dropped,
    raw_websocket,
    send_frame,
    stalled_client,
)
from testsupport.processes import Process
from testsupport.system import rss_kib

APP = "tests.e2e.bare_app:application"
WITHOUT_CONSUMERS = "tests.e2e.settings_without_consumers"
MINIMAL = "tests.e2e.settings_minimal"
TIMEOUT = 5.0
SERVER_LIMIT = 1024 * 1024  # each server's own frame limit, as configured below

#: name: (command after ``python -m``, the line it prints once listening, settings module)
SERVERS = {
    "daphne-minimal": (["daphne", "-b", "127.0.0.1", "-p", "{port}", APP], "Listening", MINIMAL),
    "daphne-without-consumers": (
        ["daphne", "-b", "127.0.0.1", "-p", "{port}", APP],
        "Listening",
        WITHOUT_CONSUMERS,
    ),
    "uvicorn": (
        [
            *("uvicorn", APP, "--host", "127.0.0.1", "--port", "{port}"),
            # Its default implementation logs a traceback for invalid UTF-8.
            *("--ws-max-size", str(SERVER_LIMIT), "--ws", "websockets"),
        ],
        "Uvicorn running",
        WITHOUT_CONSUMERS,
    ),
    "hypercorn": (
        [
            *("hypercorn", APP, "--bind", "127.0.0.1:{port}"),
            *("--config", "python:tests.e2e.hypercorn_config"),
        ],
        "Running on",
        MINIMAL,
    ),
}


@dataclass
class Server:
    name: str
    port: int
    process: Process
    tls: ssl.SSLContext | None = None

    def url(self, path: str) -> str:
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.port}{path}"

    def connect(self, path: str) -> websockets.connect:
        return websockets.connect(self.url(path), ssl=self.tls)


@pytest.fixture(scope="module", params=sorted(SERVERS))
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    command, listening, settings = SERVERS[request.param]
    port = free_port()
    argv = [part.replace("{port}", str(port)) for part in command]
    process = Process(
        sys.executable,
        "-m",
        *argv,
        env={"DJANGO_SETTINGS_MODULE": settings, "PYTHONUNBUFFERED": "1"},
        own_group=True,  # Hypercorn serves from a child process, stopped with it
    ).ready(listening)
    try:
        yield Server(request.param, port, process)
    finally:
        process.stop()
        sys.stderr.write(f"--- {request.param} ---\n{process.output}")


# (path, frame, close code, what the reason says, a log line the server writes)
BAD_FRAMES = {
    "invalid JSON": ("/json/", "{nope", 1007, "invalid JSON", "with 1007"),
    "nesting past the limit": ("/json/", "[" * 129 + "]" * 129, 1007, "nested", "with 1007"),
    "integer past the digit limit": ("/json/", "1" * 5000, 1007, "integer too long", "with 1007"),
    "binary frame": ("/json/", b"\x00\x01", 1003, "binary frame", "with 1003"),
    "frame over max_frame_size": (
        "/json-64k/",
        json.dumps("x" * 70_000),
        1009,
        "frame over 65536 bytes",
        "with 1009",
    ),
    "frame over the server's limit": ("/json/", "[" + "1," * SERVER_LIMIT + "1]", 1009, "", ""),
}


async def close_after(server: Server, path: str, frame: str | bytes) -> tuple[int, str]:
    async with websockets.connect(server.url(path), max_size=None) as websocket:
        await websocket.send(frame)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(websocket.recv(), TIMEOUT)
    assert closed.value.rcvd is not None, "dropped without a close frame"
    return closed.value.rcvd.code, closed.value.rcvd.reason


def close_after_invalid_utf8(port: int) -> tuple[int, bytes]:
    """Send a text frame that is not UTF-8 (no client library would) and return the
    server's close frame, skipping pings."""
    raw = raw_websocket(port, "/json/")
    try:
        send_frame(raw, b'"\xff\xfe"')
        raw.settimeout(TIMEOUT)
        while True:
            header = raw.recv(2, socket.MSG_WAITALL)
            assert header, "dropped without a close frame"
            opcode, length = header
            payload = raw.recv(length & 0x7F, socket.MSG_WAITALL) if length & 0x7F else b""
            if opcode != 0x89:  # a ping
                break
        assert opcode == 0x88, f"not a close frame: {opcode:#x} {payload!r}"
        return int.from_bytes(payload[:2], "big"), payload[2:]
    finally:
        raw.close()


async def stats(websocket: websockets.ClientConnection) -> dict[str, int]:
    await websocket.send(json.dumps({"stats": True}))
    return json.loads(await asyncio.wait_for(websocket.recv(), TIMEOUT))


@pytest.mark.parametrize("case", sorted(BAD_FRAMES))
async def test_a_bad_frame_gets_its_close_code_and_one_log_line(server: Server, case: str) -> None:
    path, frame, code, reason, logged = BAD_FRAMES[case]
    async with websockets.connect(server.url("/json/")) as bystander:
        before = await stats(bystander)
        log_lines = len(server.process.lines)
        closed = await close_after(server, path, frame)
        assert closed[0] == code, (closed, server.process.output)
        assert reason in closed[1]
        assert len(closed[1].encode()) <= 123
        await bystander.send(json.dumps({"still": "here"}))
        assert json.loads(await asyncio.wait_for(bystander.recv(), TIMEOUT)) == {"still": "here"}
        await asyncio.sleep(0.2)  # the disconnect reaches the application
        after = await stats(bystander)
    assert after == {"disconnects": before["disconnects"] + 1, "members": 1}
    new = server.process.lines[log_lines:]
    assert not any("Traceback" in line for line in new), "".join(new)
    if logged:
        assert sum(logged in line for line in new) == 1, "".join(new)


async def test_invalid_utf8_closes_with_1007(
    server: Server, request: pytest.FixtureRequest
) -> None:
    if server.name == "hypercorn":
        # wsproto reports the bad frame as a close with 1007, which Hypercorn 0.18 does not
        # answer: it drops the connection. Nothing reaches the application to act on.
        request.applymarker(pytest.mark.xfail(strict=True, reason="Hypercorn drops instead"))
    code, reason = await asyncio.to_thread(close_after_invalid_utf8, server.port)
    assert code == 1007, reason
    async with websockets.connect(server.url("/json/")) as websocket:
        await websocket.send("[1]")
        assert await asyncio.wait_for(websocket.recv(), TIMEOUT) == "[1]"
    assert "Traceback" not in server.process.output


def worst_json(size: int) -> str:
    """Valid JSON of as many containers as ``size`` characters hold: ``[[],[],...]``."""
    return "[" + ",".join(["[]"] * ((size - 2) // 3)) + "]"


#: Another process: sends ``argv[2]`` characters of ``[[],[],...]`` to ``argv[1]``, 200
#: frames a second (12.5 MiB/s, more than a server decodes for one connection; faster
#: would only burn this machine's two cores, as Daphne reads without limit).
FLOODER = """
import sys, time
from websockets.sync.client import connect
size = int(sys.argv[2])
frame = "[" + ",".join(["[]"] * ((size - 2) // 3)) + "]"
with connect(sys.argv[1], max_size=None) as websocket:
    print("flooding", flush=True)
    next_at = time.monotonic()
    while True:
        websocket.send(frame)
        next_at += 1 / 200
        time.sleep(max(0, next_at - time.monotonic()))
"""


async def echo_p99(server: Server, seconds: float) -> tuple[float, int]:
    latencies = []
    async with websockets.connect(server.url("/json/")) as healthy:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            started = time.perf_counter()
            await healthy.send("[1]")
            assert await asyncio.wait_for(healthy.recv(), TIMEOUT) == "[1]"
            latencies.append(time.perf_counter() - started)
    return statistics.quantiles(latencies, n=100)[98] * 1000, len(latencies)


async def test_a_client_flooding_worst_case_frames_leaves_others_their_echo(
    server: Server,
) -> None:
    """The worst JSON a 64 KiB limit lets through: as many containers as fit. The p99 must
    stay under 10 ms; on a machine so busy that it is over 5 ms with no flood at all
    (two shared cores here), within 5 ms of that instead. Measured twice at most: one
    stall elsewhere on the machine is not the server's."""
    quiet, _ = await echo_p99(server, 1)
    flooder = Process(sys.executable, "-c", FLOODER, server.url("/sink-64k/"), str(64 * 1024))
    bound = max(10.0, quiet + 5)
    try:
        flooder.ready("flooding")
        await asyncio.sleep(0.3)
        for _ in range(2):
            p99, count = await echo_p99(server, 2)
            if p99 < bound:
                break
    finally:
        flooder.stop()
    print(
        f"{server.name}: echo p99 {p99:.1f} ms over {count} round trips while another "
        f"client floods 64 KiB frames of 21,844 lists ({quiet:.1f} ms without)"
    )
    assert p99 < bound
    assert "Traceback" not in server.process.output


async def drops_a_stalled_reader(server: Server) -> None:
    """A client asks for 125 MiB and never reads: the application sees its disconnect
    within 30 s (found out without reading a byte of its socket), memory stays flat, and
    another client's echo works throughout."""
    pid = server.process.process.pid
    async with server.connect("/json/") as healthy:
        disconnects = (await stats(healthy))["disconnects"]
        before = rss_kib(pid) / 1024
        started = time.monotonic()
        stalled = await asyncio.to_thread(stalled_client, server.port, tls=server.tls)
        try:
            while (await stats(healthy))["disconnects"] == disconnects:
                assert time.monotonic() - started < 30, server.process.output
                await asyncio.sleep(0.25)
            took = time.monotonic() - started
            after = rss_kib(pid) / 1024
            assert await asyncio.to_thread(connection_dropped, stalled, TIMEOUT)
        finally:
            stalled.close()
    print(
        f"{server.name}: stalled reader dropped after {took:.1f} s; "
        f"RSS {before:.1f} -> {after:.1f} MiB"
    )
    assert after - before < 32
    assert "Traceback" not in server.process.output


async def test_a_stalled_reader_is_dropped_within_30_s_with_bounded_memory(
    server: Server,
) -> None:
    await drops_a_stalled_reader(server)


@pytest.fixture(scope="module")
def daphne_over_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Daphne terminating TLS itself (a self-signed certificate)."""
    directory = tmp_path_factory.mktemp("tls")
    key, certificate = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(certificate)),
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    endpoint = f"ssl:port={port}:interface=127.0.0.1:privateKey={key}:certKey={certificate}"
    process = Process(
        *(sys.executable, "-m", "daphne", "-e", endpoint, APP),
        env={"DJANGO_SETTINGS_MODULE": MINIMAL, "PYTHONUNBUFFERED": "1"},
    ).ready("Listening")
    try:
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
        yield Server("daphne-tls", port, process, tls)
    finally:
        process.stop()
        sys.stderr.write(f"--- daphne over TLS ---\n{process.output}")


async def test_a_stalled_reader_over_tls_is_dropped_by_daphne(daphne_over_tls: Server) -> None:
    await drops_a_stalled_reader(daphne_over_tls)
