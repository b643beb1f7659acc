"""Metrics scraped over HTTP from a real Daphne, after traffic whose every figure is known.

One Daphne serves ``tests/e2e/metrics_app.py`` on a private redis-server (so it can be
restarted); each test scrapes ``/metrics`` before and after its traffic and asserts the
exact differences.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import sys
import time
import urllib.request

import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from tests.redis_servers import RedisServer
from tests.reliability.test_slow_client import connection_dropped, send_frame
from testsupport.processes import ManagePy, Process
from testsupport.system import free_port

ECHO = "tests.e2e.metrics_app.Echo"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def redis_server():
    server = RedisServer().start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def daphne(redis_server):
    port = free_port()
    process = Process(
        sys.executable,
        *("-m", "daphne", "-b", "127.0.0.1", "-p", str(port)),
        "tests.e2e.metrics_app:application",
        settings="tests.e2e.settings_metrics",
        env={"REDIS_URL": redis_server.url, "REDIS_PREFIX": f"metrics-{secrets.token_hex(4)}"},
    ).ready("Listening on TCP address")
    yield process, port
    process.stop()
    # The one traceback is the crash test's, logged once by the consumer.
    assert process.output.count("Traceback") <= 1, process.output


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


class Scraper:
    """Differences between the scrape taken at creation and later ones."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.before = scrape(port)

    def delta(self, name: str, **labels: str) -> float:
        return value(scrape(self.port), name, **labels) - value(self.before, name, **labels)

    async def until(self, name: str, expected: float, timeout: float = 10, **labels: str) -> None:
        """Wait for a difference to reach ``expected`` (state the server updates after a
        client's close); fail with the last figure."""
        deadline = time.monotonic() + timeout
        while (found := self.delta(name, **labels)) != expected:
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}{labels}: {found}, expected {expected}")
            await asyncio.sleep(0.05)


def connect(port: int, path: str, origin: str | None = None):
    return websockets.connect(
        f"ws://127.0.0.1:{port}/{path}", origin=origin or f"http://127.0.0.1:{port}"
    )


async def test_connections_frames_bytes_closes_and_handlers_are_counted_exactly(daphne):
    _, port = daphne
    scraper = Scraper(port)
    clients, messages = 5, 4
    sockets = [await connect(port, "echo/") for _ in range(clients)]
    assert scraper.delta("consumers_websocket_connections") == clients
    texts = [f"message {n} from {i}, é" for i in range(clients) for n in range(messages)]
    for index, client in enumerate(sockets):
        for text in texts[index * messages : (index + 1) * messages]:
            await client.send(text)
            assert await client.recv() == text
    size = sum(len(text.encode()) for text in texts)
    for direction in ("in", "out"):
        assert scraper.delta("consumers_websocket_frames_total", direction=direction) == len(texts)
        assert scraper.delta("consumers_websocket_bytes_total", direction=direction) == size
    for client in sockets:
        await client.close()
    await scraper.until("consumers_websocket_connections", 0)
    assert scraper.delta("consumers_websocket_accepted_total") == clients
    assert scraper.delta("consumers_websocket_closes_total", code="1000") == clients
    # connect, each message, disconnect: one handler call each.
    calls = clients * (messages + 2)
    assert scraper.delta("consumers_handler_seconds_count", consumer=ECHO) == calls


async def test_a_sync_consumer_counts_its_pool_waits_and_handlers(daphne):
    _, port = daphne
    scraper = Scraper(port)
    async with connect(port, "sync/") as client:
        for n in range(3):
            await client.send(str(n))
            assert await client.recv() == str(n)
    await scraper.until("consumers_websocket_connections", 0)
    sync = "tests.e2e.metrics_app.SyncEcho"
    assert scraper.delta("consumers_handler_seconds_count", consumer=sync) == 5
    assert scraper.delta("consumers_sync_queue_wait_seconds_count") == 5
    assert value(scrape(port), "consumers_sync_threads") >= 1
    assert value(scrape(port), "consumers_sync_threads_max") == 20


async def test_refused_handshakes_are_counted_by_reason(daphne):
    _, port = daphne
    scraper = Scraper(port)
    for path, origin in (
        ("echo/", "http://evil.example"),
        ("no-such-route/", None),
        ("denied/", None),
        ("refused/", None),
    ):
        with pytest.raises(websockets.InvalidStatus):
            await connect(port, path, origin)
    for reason in ("origin", "route", "auth", "application"):
        assert scraper.delta("consumers_websocket_refused_total", reason=reason) == 1, reason
    assert scraper.delta("consumers_websocket_accepted_total") == 0
    assert scraper.delta("consumers_websocket_connections") == 0


async def test_a_crash_counts_an_error_and_its_close_code(daphne):
    _, port = daphne
    scraper = Scraper(port)
    async with connect(port, "crash/") as client:
        await client.send("boom")
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await client.recv()
    assert closed.value.rcvd.code == 1011
    await scraper.until("consumers_websocket_connections", 0)
    assert scraper.delta("consumers_websocket_closes_total", code="1011") == 1
    crash = "tests.e2e.metrics_app.Crash"
    assert scraper.delta("consumers_handler_errors_total", consumer=crash) == 1


def stalled_client(port: int) -> socket.socket:
    """A WebSocket with a small receive buffer that asks for 128 MiB and never reads."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", port))
    raw.sendall(
        b"GET /flood/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1\r\n\r\n"
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += raw.recv(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    send_frame(raw, b"2000 65536")
    return raw


async def test_a_client_that_stops_reading_is_counted_as_dropped(daphne):
    _, port = daphne
    scraper = Scraper(port)
    stalled = await asyncio.to_thread(stalled_client, port)
    try:
        assert await asyncio.to_thread(connection_dropped, stalled, 10)
    finally:
        stalled.close()
    await scraper.until("consumers_websocket_slow_clients_dropped_total", 1)
    await scraper.until("consumers_websocket_connections", 0)
    assert scraper.delta("consumers_websocket_accepted_total") == 1


async def test_sends_to_a_full_channel_are_counted_as_dropped(daphne):
    _, port = daphne
    scraper = Scraper(port)
    async with connect(port, "fill/") as client:
        await client.send("8")  # capacity 5 (tests/e2e/settings_metrics.py)
        full = int(await client.recv())
    # Its layer reader holds one message, waiting for its turn: 6 or 5 fit.
    assert full in (2, 3)
    labels = {"backend": "redis"}
    assert (
        scraper.delta("consumers_layer_messages_dropped_total", reason="capacity", **labels) == full
    )
    assert scraper.delta("consumers_layer_call_seconds_count", call="send", **labels) == 8


async def room_round(sockets, text: str) -> None:
    await sockets[0].send(text)
    for client in sockets:
        assert await asyncio.wait_for(client.recv(), 10) == text


async def test_a_redis_restart_is_counted_with_its_downtime(daphne, redis_server):
    _, port = daphne
    sockets = [await connect(port, "room/") for _ in range(2)]
    try:
        await room_round(sockets, "before")
        scraper = Scraper(port)
        assert value(scraper.before, "consumers_layer_groups", backend="redis") == 1
        redis_server.kill()
        killed = time.monotonic()
        await asyncio.sleep(1.5)
        assert value(scrape(port), "consumers_redis_hosts_unreachable") == 1
        redis_server.start()
        down = time.monotonic() - killed
        await scraper.until("consumers_redis_reconnects_total", 1, timeout=15)
        await scraper.until("consumers_redis_hosts_unreachable", 0)
        unavailable = scraper.delta("consumers_redis_unavailable_seconds_total")
        assert 1.5 <= unavailable <= down + 3, (unavailable, down)
        await room_round(sockets, "after")
        labels = {"backend": "redis"}
        assert scraper.delta("consumers_layer_call_seconds_count", call="group_send", **labels) == 1
        # The broadcast reached this process once, for both members.
        assert scraper.delta("consumers_layer_receive_seconds_count", **labels) == 1
    finally:
        for client in sockets:
            await client.close()


def test_the_scrape_carries_the_process_figures_too(daphne):
    """prometheus_client's own process metrics come with ours (tests/test_metrics_view.py
    checks who may read them)."""
    _, port = daphne
    samples = scrape(port)
    assert value(samples, "process_resident_memory_bytes") > 10 * 1024 * 1024
    assert value(samples, "consumers_sync_threads_max") == 20


async def test_consumers_top_shows_each_process_live(daphne):
    _, port = daphne
    dead = free_port()
    async with connect(port, "room/") as client:
        top = ManagePy("consumers_top", f"127.0.0.1:{port}", f"127.0.0.1:{dead}", "--once")
        deadline = time.monotonic() + 30
        while top.alive() and time.monotonic() < deadline:  # frames between its two scrapes
            await client.send("ping")
            assert await client.recv() == "ping"
            await asyncio.sleep(0.05)
        assert await asyncio.to_thread(top.finish, 5) == 0, top.output
    header, alive, unreachable = top.output.strip().splitlines()
    assert header.split()[:4] == ["process", "conns", "groups", "in/s"]
    cells = alive.split()
    assert cells[:3] == [f"127.0.0.1:{port}", "1", "1"]
    assert float(cells[3]) > 0 and float(cells[4]) > 0  # frames in and out per second
    assert cells[-1] == "ok"
    assert unreachable.startswith(f"127.0.0.1:{dead}") and "unreachable" in unreachable
