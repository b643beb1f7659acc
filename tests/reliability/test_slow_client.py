"""A client that stops reading: its unsent bytes are bounded, it is closed, and everyone
else keeps their latency. Daphne alone buffers without limit until the ping timeout."""

import asyncio
import os
import socket
import ssl
import statistics
import time

import websockets

from tests.reliability.test_shutdown import start_daphne
from testsupport.system import rss_kib

MAX_BUFFER = 256 * 1024
FLOOD_FRAMES, FRAME_SIZE = 2000, 64 * 1024  # 128 MiB offered to the stalled client


def raw_websocket(
    port: int,
    path: str = "/flood/",
    receive_buffer: int = 4096,
    tls: ssl.SSLContext | None = None,
) -> socket.socket:
    """A WebSocket opened over a plain socket (with a small receive buffer), for frames
    and behaviour a client library would not produce; over TLS with ``tls``."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    raw.connect(("127.0.0.1", port))
    if tls is not None:
        raw = tls.wrap_socket(raw, server_hostname="127.0.0.1")
    raw.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n".encode()
        + b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += raw.recv(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    return raw


def send_frame(raw: socket.socket, payload: bytes, opcode: int = 0x1) -> None:
    """One final, masked frame (payloads under 64 KiB)."""
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    length = (
        bytes([0x80 | len(payload)])
        if len(payload) < 126
        else b"\xfe" + len(payload).to_bytes(2, "big")
    )
    raw.sendall(bytes([0x80 | opcode]) + length + mask + masked)


def stalled_client(
    port: int, path: str = "/flood/", tls: ssl.SSLContext | None = None
) -> socket.socket:
    """A WebSocket client that asks for a flood and then never reads again."""
    raw = raw_websocket(port, path, tls=tls)
    send_frame(raw, f"{FLOOD_FRAMES} {FRAME_SIZE}".encode())
    return raw


def connection_dropped(raw: socket.socket, timeout: float) -> bool:
    """Read the backlog until the server's reset or end of stream."""
    raw.settimeout(timeout)
    try:
        while raw.recv(1 << 20):
            pass
    except (ConnectionResetError, ssl.SSLError):
        return True
    except TimeoutError:
        return False
    return True


async def test_a_stalled_client_is_closed_while_others_keep_their_latency():
    daphne, port = start_daphne("slow", MAX_BUFFER=str(MAX_BUFFER))
    stalled = None
    try:
        healthy = await websockets.connect(f"ws://127.0.0.1:{port}/flood/")
        for _ in range(50):  # warm up
            await healthy.send("ping")
            await healthy.recv()
        before = rss_kib(daphne.process.pid) / 1024
        stalled = await asyncio.to_thread(stalled_client, port)
        latencies = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            sent = time.perf_counter()
            await healthy.send("ping")
            assert await healthy.recv() == "ping"
            latencies.append(time.perf_counter() - sent)
        after = rss_kib(daphne.process.pid) / 1024
        p99 = statistics.quantiles(latencies, n=100)[98] * 1000
        print(
            f"stalled client offered {FLOOD_FRAMES * FRAME_SIZE >> 20} MiB: server RSS "
            f"{before:.1f} -> {after:.1f} MiB; others' echo p99 {p99:.1f} ms "
            f"over {len(latencies)} round trips"
        )
        assert "it stopped reading" in daphne.output, daphne.output
        assert daphne.output.count("it stopped reading") == 1
        assert await asyncio.to_thread(connection_dropped, stalled, 5)
        assert after - before < 32
        assert p99 < 50
        await healthy.send("still here")
        assert await healthy.recv() == "still here"
        await healthy.close()
        assert "Traceback" not in daphne.output, daphne.output
    finally:
        if stalled is not None:
            stalled.close()
        daphne.stop()
