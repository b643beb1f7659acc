"""SIGTERM drains a Daphne process: sockets closed with 1012, disconnect() run for each,
groups left, and the process gone within the shutdown timeout. How the closes are batched is
decided in-process and tested there (tests/consumers/test_shutdown.py)."""

import asyncio
import secrets
import signal
import sys
import time

import redis
import websockets

from channels_layer.redis import RedisChannelLayer
from tests.redis_servers import REDIS_URL
from testsupport.processes import Process
from testsupport.system import free_port

CLIENTS = 200


def start_daphne(prefix: str, **env: str) -> tuple[Process, int]:
    port = free_port()
    daphne = Process(
        sys.executable,
        *("-m", "daphne", "-b", "127.0.0.1", "-p", str(port)),
        "tests.reliability.server_app:application",
        env={"REDIS_URL": REDIS_URL, "REDIS_PREFIX": prefix, **env},
    )
    return daphne.ready("Listening on TCP address"), port


async def open_clients(port: int, count: int, path: str = "drain/") -> list:
    gate = asyncio.Semaphore(50)

    async def one():
        async with gate:
            return await websockets.connect(f"ws://127.0.0.1:{port}/{path}")

    return await asyncio.gather(*(one() for _ in range(count)))


async def close_codes(clients) -> list[tuple[int | None, float]]:
    async def one(client):
        await client.wait_closed()
        return client.close_code, time.monotonic()

    return await asyncio.gather(*(one(client) for client in clients))


async def reports(layer, count: int, timeout: float) -> list[int]:
    codes = []
    async with asyncio.timeout(timeout):
        while len(codes) < count:
            codes.append((await layer.receive("drain-probe"))["code"])
    return codes


def subscribers(prefix: str) -> int:
    with redis.Redis.from_url(REDIS_URL) as raw:
        [(_, count)] = raw.pubsub_numsub(f"{prefix}:broadcast:drain")
    return count


async def test_sigterm_closes_every_socket_with_1012_and_runs_disconnect():
    prefix = f"drain-{secrets.token_hex(4)}"
    daphne, port = start_daphne(prefix, SHUTDOWN_BATCH="50")
    layer = RedisChannelLayer(hosts=[REDIS_URL], prefix=prefix)
    try:
        clients = await open_clients(port, CLIENTS)
        assert subscribers(prefix) == 1
        signalled = time.monotonic()
        daphne.process.send_signal(signal.SIGTERM)
        closed = await asyncio.wait_for(close_codes(clients), 10)
        exit_code = await asyncio.to_thread(daphne.process.wait, 10)
        exited = time.monotonic() - signalled
        disconnects = await reports(layer, CLIENTS, 5)
        spread = max(at for _, at in closed) - min(at for _, at in closed)
        print(
            f"SIGTERM drain of {CLIENTS} sockets: closed over {spread * 1000:.0f} ms, "
            f"process exited after {exited:.2f} s with {exit_code}"
        )
        assert {code for code, _ in closed} == {1012}, daphne.output
        assert sorted(disconnects) == [1012] * CLIENTS
        # What the drain decided (its batches: tests/consumers/test_shutdown.py); the spread
        # of the closes above is how long this machine took, so it is printed, not asserted.
        assert f"Shutting down: closing {CLIENTS} WebSockets with 1012" in daphne.output
        assert exited < 10
        assert subscribers(prefix) == 0
        assert "Traceback" not in daphne.output, daphne.output
    finally:
        daphne.stop()
        await layer.flush()
        await layer.close()


async def test_a_stuck_disconnect_cannot_hold_the_process_past_the_timeout():
    prefix = f"drain-{secrets.token_hex(4)}"
    daphne, port = start_daphne(prefix, SHUTDOWN_TIMEOUT="2")
    layer = RedisChannelLayer(hosts=[REDIS_URL], prefix=prefix)
    try:
        stuck = await open_clients(port, 1, "drain/stuck/")
        clients = await open_clients(port, 20)
        signalled = time.monotonic()
        daphne.process.send_signal(signal.SIGTERM)
        closed = await asyncio.wait_for(close_codes([*stuck, *clients]), 10)
        await asyncio.to_thread(daphne.process.wait, 10)
        exited = time.monotonic() - signalled
        print(f"with one stuck disconnect(): exited after {exited:.2f} s (timeout 2 s)")
        assert {code for code, _ in closed} == {1012}
        assert sorted(await reports(layer, 20, 5)) == [1012] * 20
        assert 2 <= exited < 5
        assert "1 applications still running are cancelled" in daphne.output, daphne.output
    finally:
        daphne.stop()
        await layer.flush()
        await layer.close()
