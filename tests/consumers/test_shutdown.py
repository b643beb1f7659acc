"""What ``consumers.shutdown.drain`` decides, in-process: which WebSockets it closes, with
which code, in batches of what size and in what order. The batches are told apart by the
event loop, not by a clock: a ticker task counts the loop's turns, and every close of one
batch is sent in one turn. The drill with a real Daphne and SIGTERM is
tests/reliability/test_shutdown.py."""

from __future__ import annotations

import asyncio
from itertools import groupby

import pytest
from daphne.ws_protocol import WebSocketProtocol

from consumers.shutdown import drain


class Turns:
    """Counts the event loop's turns while it runs."""

    def __init__(self) -> None:
        self.count = 0

    async def run(self) -> None:
        while True:
            self.count += 1
            await asyncio.sleep(0)


class RecordingProtocol(WebSocketProtocol):
    """A Daphne WebSocket with no connection under it: a close frame is recorded (with
    the loop turn it was sent in) and ends its application, as the client's answer would."""

    def __init__(self, number: int, turns: Turns, sent: list, state: int) -> None:
        # Daphne's constructor wants a live server factory; drain reads only these.
        self.number, self.turns, self.sent, self.state = number, turns, sent, state
        self.application = asyncio.get_running_loop().create_future()

    def sendCloseFrame(self, code=None, reasonUtf8=None, isReply=False):
        self.sent.append((self.turns.count, self.number, code, reasonUtf8))
        self.application.set_result(None)


class FakeServer:
    """What drain reads of Daphne's Server: its connections and their applications."""

    def __init__(self, protocols: list[RecordingProtocol]) -> None:
        self.connections = {p: {"application_instance": p.application} for p in protocols}


async def drained(count: int, closing: set[int] = frozenset()) -> list[tuple]:
    """Drain ``count`` WebSockets (those numbered in ``closing`` already closing); the close
    frames sent, as (loop turn, socket number, code, reason)."""
    turns, sent = Turns(), []
    protocols = [
        RecordingProtocol(
            number,
            turns,
            sent,
            WebSocketProtocol.STATE_CLOSING if number in closing else WebSocketProtocol.STATE_OPEN,
        )
        for number in range(count)
    ]
    for protocol in protocols:
        if protocol.number in closing:
            protocol.application.set_result(None)
    ticker = asyncio.create_task(turns.run())
    try:
        await asyncio.wait_for(drain(FakeServer(protocols)), 10)
    finally:
        ticker.cancel()
    return sent


def batch_sizes(sent: list[tuple]) -> list[int]:
    return [len(list(batch)) for _, batch in groupby(sent, key=lambda close: close[0])]


@pytest.mark.parametrize(
    ("sockets", "batch", "sizes"),
    [(200, 50, [50, 50, 50, 50]), (120, 50, [50, 50, 20]), (30, 100, [30]), (3, 1, [1, 1, 1])],
)
async def test_drain_closes_every_open_websocket_in_batches_in_connection_order(
    settings, sockets, batch, sizes
):
    settings.CONSUMERS_SHUTDOWN_BATCH = batch
    sent = await drained(sockets)
    assert batch_sizes(sent) == sizes
    assert [number for _, number, _, _ in sent] == list(range(sockets))
    assert {(code, reason) for _, _, code, reason in sent} == {(1012, b"server shutting down")}


async def test_drain_skips_websockets_already_closing_and_uses_the_configured_code(settings):
    settings.CONSUMERS_SHUTDOWN_BATCH = 4
    settings.CONSUMERS_SHUTDOWN_CLOSE_CODE = 4000
    sent = await drained(10, closing={1, 2, 7})
    # Batches are cut from the open sockets only, so none is smaller for the skipped ones.
    assert batch_sizes(sent) == [4, 3]
    assert [number for _, number, _, _ in sent] == [0, 3, 4, 5, 6, 8, 9]
    assert {code for _, _, code, _ in sent} == {4000}
