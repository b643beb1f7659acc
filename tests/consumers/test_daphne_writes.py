"""On Daphne, a frame goes to a plain TCP socket in the application's send when nothing
waits before it (``consumers.daphne.write_now``): Twisted's own write waits for the
reactor's next turn, with an ``addWriter``/``removeWriter`` per frame. Anything already
buffered, TLS, a closing connection or a full socket keeps Twisted's path, in order."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from autobahn.websocket.protocol import TrafficStats
from twisted.internet import tcp

from consumers import daphne as adaptation


class Reactor:
    """What a transport asks of its reactor here: the writers it registers (once each,
    as a reactor does)."""

    def __init__(self) -> None:
        self.writers: list[Any] = []

    def addWriter(self, writer: Any) -> None:
        if writer not in self.writers:
            self.writers.append(writer)


@pytest.fixture
def pair() -> Iterator[tuple[tcp.Connection, socket.socket, Reactor]]:
    """A Twisted TCP connection over one end of a socket pair, the other end, its reactor."""
    ours, theirs = socket.socketpair()
    reactor = Reactor()
    connection = tcp.Connection(ours, None, reactor=reactor)  # type: ignore[arg-type]
    connection.connected = 1
    theirs.settimeout(0.5)
    yield connection, theirs, reactor
    ours.close()
    theirs.close()


def protocol_on(transport: Any) -> adaptation.WebSocketProtocol:
    """Our protocol in the open state on ``transport``, without a server around it."""
    protocol = adaptation.WebSocketProtocol.__new__(adaptation.WebSocketProtocol)
    protocol.transport = transport
    protocol.state = protocol.STATE_OPEN
    protocol.send_queue = []
    protocol.logOctets = False
    protocol.trafficStats = TrafficStats()
    return protocol


def test_a_frame_is_on_the_socket_when_the_send_returns(pair: Any) -> None:
    connection, theirs, reactor = pair
    protocol = protocol_on(connection)
    protocol.sendData(b"frame")
    assert theirs.recv(100) == b"frame"
    assert reactor.writers == []  # no turn of the reactor needed
    assert connection._tempDataBuffer == []
    assert protocol.trafficStats.outgoingOctetsWireLevel == 5


def test_a_frame_after_unsent_bytes_waits_behind_them(pair: Any) -> None:
    connection, theirs, reactor = pair
    connection.write(b"earlier")
    protocol_on(connection).sendData(b"later")
    assert connection._tempDataBuffer == [b"earlier", b"later"]
    assert reactor.writers == [connection]
    theirs.setblocking(False)
    with pytest.raises(BlockingIOError):
        theirs.recv(100)


def test_what_a_full_socket_does_not_take_is_buffered(pair: Any) -> None:
    connection, _, reactor = pair
    data = b"x" * (4 * 1024 * 1024)  # more than a socket pair's buffers hold
    protocol = protocol_on(connection)
    protocol.sendData(data)
    left = connection._tempDataLen
    assert 0 < left < len(data)
    assert reactor.writers == [connection]  # Twisted writes the rest
    assert protocol.trafficStats.outgoingOctetsWireLevel == len(data)


@pytest.mark.parametrize("state", ["disconnecting", "_writeDisconnected", "TLS"])
def test_a_closing_or_tls_connection_keeps_twisteds_write(pair: Any, state: str) -> None:
    connection, theirs, _ = pair
    setattr(connection, state, True)
    assert adaptation.write_now(connection, b"frame") == 0
    theirs.setblocking(False)
    with pytest.raises(BlockingIOError):
        theirs.recv(100)


def test_a_transport_that_proxies_a_tcp_connection_is_not_written_through(pair: Any) -> None:
    """TLS over an endpoint wraps the connection in a protocol whose unknown attributes
    are the connection's (``ProtocolWrapper.__getattr__``): writing to that socket would
    send cleartext."""
    connection, theirs, _ = pair

    class Wrapper:
        def __getattr__(self, name: str) -> Any:
            return getattr(connection, name)

    assert adaptation.write_now(Wrapper(), b"frame") == 0
    theirs.setblocking(False)
    with pytest.raises(BlockingIOError):
        theirs.recv(100)
