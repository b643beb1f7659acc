"""Daphne started as a user would, spoken to over real sockets: the reference project, and
a probe app for protocol details Daphne itself gets wrong (see consumers.daphne).

No cookies are sent, so nothing reads the session and the server needs no database.
"""

from __future__ import annotations

import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Close
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"Listening on TCP address 127\.0\.0\.1:(\d+)")
START_TIMEOUT = 20
TIMEOUT = 5


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    """The reference project's port."""
    yield from serve("project.asgi:application")


@pytest.fixture(scope="module")
def probe_port() -> Iterator[int]:
    """The protocol probe's port."""
    yield from serve("tests.e2e.protocol_app:application")


def serve(application: str) -> Iterator[int]:
    """Run Daphne for the module; it is always stopped and reaped."""
    process = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-e", "tcp:port=0:interface=127.0.0.1", application],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log: list[str] = []
    ports: queue.Queue[int | None] = queue.Queue()

    def pump() -> None:
        # Keeps draining after startup: a full pipe would block the server.
        assert process.stdout is not None
        for line in process.stdout:
            log.append(line)
            if match := LISTENING.search(line):
                ports.put(int(match[1]))
        ports.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        try:
            bound = ports.get(timeout=START_TIMEOUT)
        except queue.Empty:
            bound = None
        if bound is None:
            pytest.fail(f"Daphne did not start listening:\n{''.join(log)}")
        socket.create_connection(("127.0.0.1", bound), timeout=TIMEOUT).close()
        yield bound
    finally:
        process.terminate()
        try:
            process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(TIMEOUT)
        assert process.stdout is not None
        process.stdout.close()
        # pytest shows this with a failing test only.
        sys.stderr.write("".join(log))


def open_echo(port: int, path: str = "/ws/echo/", origin: str | None = None) -> ClientConnection:
    return connect(
        f"ws://127.0.0.1:{port}{path}",
        origin=Origin(origin or f"http://127.0.0.1:{port}"),
        open_timeout=TIMEOUT,
        close_timeout=TIMEOUT,
        proxy=None,
    )


def receive(websocket: ClientConnection) -> Any:
    return json.loads(websocket.recv(timeout=TIMEOUT))


def assert_echoes(websocket: ClientConnection, content: Any) -> None:
    websocket.send(json.dumps(content))
    assert receive(websocket) == {"type": "echo", "message": content}


def test_echo_round_trip(port: int) -> None:
    with open_echo(port) as websocket:
        assert receive(websocket) == {"type": "welcome", "user": None}
        assert_echoes(websocket, {"text": "hi"})
        assert_echoes(websocket, [1, "two", None])


def test_a_foreign_origin_is_refused_at_the_handshake(port: int) -> None:
    with pytest.raises(InvalidStatus) as refused:
        open_echo(port, origin="http://evil.example")
    assert refused.value.response.status_code == 403


def test_an_unknown_path_is_refused_and_the_server_keeps_serving(port: int) -> None:
    with pytest.raises(InvalidStatus) as refused:
        open_echo(port, path="/ws/nope/")
    assert refused.value.response.status_code == 403

    with open_echo(port) as websocket:
        assert receive(websocket) == {"type": "welcome", "user": None}
        assert_echoes(websocket, {"text": "still here"})


def test_invalid_json_closes_only_its_own_connection_with_1007(port: int) -> None:
    with open_echo(port) as bystander, open_echo(port) as offender:
        assert receive(bystander)["type"] == "welcome"
        assert receive(offender)["type"] == "welcome"

        closed = close_after(offender, "{not json")
        assert closed.code == 1007
        assert closed.reason.startswith("invalid JSON")
        assert_echoes(bystander, {"text": "unaffected"})


def close_after(websocket: ClientConnection, frame: str) -> Close:
    """Send a frame and return the close frame the server answers with."""
    websocket.send(frame)
    with pytest.raises(ConnectionClosed) as closed:
        websocket.recv(timeout=TIMEOUT)
    assert closed.value.rcvd is not None, "the server dropped the connection without a close frame"
    return closed.value.rcvd


def open_probe(port: int) -> ClientConnection:
    return open_echo(port, path="/probe/")


def test_accept_headers_reach_the_client(probe_port: int) -> None:
    with open_probe(probe_port) as websocket:
        assert websocket.response.headers["x-probe"] == "yes"
        assert websocket.response.headers["set-cookie"] == "probe=1; Path=/"


def test_empty_frames_are_sent(probe_port: int) -> None:
    with open_probe(probe_port) as websocket:
        websocket.send("")
        assert websocket.recv(timeout=TIMEOUT) == ""
        websocket.send(b"")
        assert websocket.recv(timeout=TIMEOUT) == b""


def test_close_code_and_reason_reach_the_client(probe_port: int) -> None:
    with open_probe(probe_port) as websocket:
        closed = close_after(websocket, "close 4001 room is full")
        assert (closed.code, closed.reason) == (4001, "room is full")


def test_a_crashing_handler_closes_with_1011_at_once(probe_port: int) -> None:
    with open_probe(probe_port) as websocket:
        assert close_after(websocket, "crash").code == 1011
