"""How what sync handlers do gets back to the loop: sends while the handler runs, sends from
the application's own threads, the send deadline, cancelled handlers, batched wake-ups, and
Django's stale-connection check only where a connection was opened."""

import asyncio
import logging
import threading

import pytest
from django.contrib.auth import get_user_model
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.backends.signals import connection_created

from consumers import threads
from consumers.consumer import SyncConsumer
from consumers.generic.websocket import WebsocketConsumer
from consumers.outbox import Outbox
from consumers.testing import ApplicationCommunicator
from consumers.threads import SyncPool, close_old_connections_here, hand_back


def websocket_scope():
    return {"type": "websocket", "path": "/ws/", "headers": [], "query_string": b""}


async def connected(consumer):
    app = ApplicationCommunicator(consumer.as_asgi(), websocket_scope())
    await app.send_input({"type": "websocket.connect"})
    assert (await app.receive_output())["type"] == "websocket.accept"
    return app


class SendsThenWaits(SyncConsumer):
    """Sends one frame, waits until the test has it, sends another."""

    first_arrived = threading.Event()
    waited: list[bool] = []

    def websocket_connect(self, message):
        self.send({"type": "websocket.accept"})

    def websocket_receive(self, message):
        self.send({"type": "websocket.send", "text": "first"})
        self.waited.append(self.first_arrived.wait(5))
        self.send({"type": "websocket.send", "text": "second"})


async def test_a_sync_handlers_sends_go_out_while_it_is_still_running():
    SendsThenWaits.first_arrived.clear()
    SendsThenWaits.waited.clear()
    app = await connected(SendsThenWaits)
    await app.send_input({"type": "websocket.receive", "text": "go"})
    assert (await app.receive_output(timeout=3))["text"] == "first"
    SendsThenWaits.first_arrived.set()
    assert (await app.receive_output(timeout=3))["text"] == "second"
    assert SendsThenWaits.waited == [True]


class SendsFromItsOwnThread(SyncConsumer):
    """Starts a thread of its own at connect, which sends once told to."""

    go = threading.Event()

    def websocket_connect(self, message):
        self.send({"type": "websocket.accept"})
        threading.Thread(target=self._later, daemon=True).start()

    def _later(self):
        if self.go.wait(5):
            self.send({"type": "websocket.send", "text": "from my thread"})

    def websocket_receive(self, message):
        self.send({"type": "websocket.send", "text": message["text"]})


async def test_a_thread_of_the_applications_own_sends_between_handlers():
    SendsFromItsOwnThread.go.clear()
    app = await connected(SendsFromItsOwnThread)
    await app.send_input({"type": "websocket.receive", "text": "echo"})
    assert (await app.receive_output(timeout=3))["text"] == "echo"
    SendsFromItsOwnThread.go.set()  # no handler runs now: nobody waits on the outbox
    assert (await app.receive_output(timeout=3))["text"] == "from my thread"
    await app.send_input({"type": "websocket.receive", "text": "again"})
    assert (await app.receive_output(timeout=3))["text"] == "again"


class Echo(WebsocketConsumer):
    disconnects: list[int] = []

    def receive(self, text_data=None, bytes_data=None):
        self.send(text_data=text_data)

    def disconnect(self, code):
        self.disconnects.append(code)


async def test_a_sync_consumers_sends_wait_no_longer_than_the_send_deadline(settings, caplog):
    """Uvicorn and Hypercorn make a send wait on a client that stopped reading: a sync
    consumer gives up on it after CONSUMERS_WEBSOCKET_SEND_TIMEOUT, as an async one does."""
    settings.CONSUMERS_WEBSOCKET_SEND_TIMEOUT = 0.2
    Echo.disconnects.clear()
    inbox: asyncio.Queue = asyncio.Queue()
    never = asyncio.Event()
    accepted = asyncio.Event()

    async def send(message):
        if message["type"] == "websocket.accept":
            accepted.set()
        elif message["type"] == "websocket.send":
            await never.wait()  # the client stopped reading

    app = asyncio.ensure_future(Echo.as_asgi()(websocket_scope(), inbox.get, send))
    inbox.put_nowait({"type": "websocket.connect"})
    await asyncio.wait_for(accepted.wait(), 3)
    started = asyncio.get_running_loop().time()
    with caplog.at_level(logging.WARNING, "consumers.consumer"):
        inbox.put_nowait({"type": "websocket.receive", "text": "stuck"})
        await asyncio.wait_for(app, 5)
    assert 0.2 <= asyncio.get_running_loop().time() - started < 4
    assert Echo.disconnects == [1006]
    assert "Giving up on the WebSocket" in caplog.text


async def test_a_cancelled_run_leaves_what_its_handler_sends_later_to_a_drain():
    sent = []
    released = threading.Event()

    async def send(message):
        sent.append(message["n"])

    outbox = Outbox(send)
    pool = SyncPool(1)

    def handler():
        outbox.put({"n": 1})
        released.wait(5)
        outbox.put({"n": 2})
        return "done"

    run = asyncio.ensure_future(outbox.run(pool, handler))
    async with asyncio.timeout(3):
        while sent != [1]:
            await asyncio.sleep(0.01)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    released.set()
    async with asyncio.timeout(3):
        while sent != [1, 2]:
            await asyncio.sleep(0.01)
    # The next run still gets its handler's result and sends.
    assert await outbox.run(pool, lambda: outbox.put({"n": 3}) or "next") == "next"
    assert sent == [1, 2, 3]


async def test_a_handlers_exception_comes_back_after_what_it_sent():
    sent = []

    async def send(message):
        await asyncio.sleep(0)
        sent.append(message["n"])

    outbox = Outbox(send)

    def failing():
        for n in range(3):
            outbox.put({"n": n})
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        await outbox.run(SyncPool(1), failing)
    assert sent == [0, 1, 2]


def test_what_threads_hand_back_while_the_loop_is_busy_costs_one_wake_up(monkeypatch):
    wake_ups = []
    real = threads.call_soon_on

    def counting(loop, callback, *args):
        wake_ups.append(callback)
        return real(loop, callback, *args)

    monkeypatch.setattr(threads, "call_soon_on", counting)
    ran = []

    async def main():
        loop = asyncio.get_running_loop()
        handers = [
            threading.Thread(target=hand_back, args=(loop, lambda t, v: ran.append((t, v)), n, -n))
            for n in range(5)
        ]
        for thread in handers:  # the loop is busy here (this code does not yield)
            thread.start()
            thread.join(5)
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(main())
    assert ran == [(n, -n) for n in range(5)]
    assert len(wake_ups) == 1
    assert not threads._pending


def test_database_connections_are_checked_only_in_threads_that_opened_one(monkeypatch):
    checks = []
    monkeypatch.setattr(threads, "close_old_connections", lambda: checks.append(1))

    def in_a_new_thread(func):
        thread = threading.Thread(target=func)
        thread.start()
        thread.join(5)

    in_a_new_thread(close_old_connections_here)
    assert checks == []

    def opens_then_checks():
        connection_created.send(sender=type(connection), connection=connection)
        close_old_connections_here()

    in_a_new_thread(opens_then_checks)
    assert checks == [1]
    in_a_new_thread(close_old_connections_here)  # another thread: nothing opened there
    assert checks == [1]


class CountsUsers(SyncConsumer):
    used: list = []

    def websocket_connect(self, message):
        self.send({"type": "websocket.accept"})

    def websocket_receive(self, message):
        count = get_user_model().objects.count()
        self.used.append(connections[DEFAULT_DB_ALIAS])  # this thread's own
        self.send({"type": "websocket.send", "text": str(count)})


@pytest.mark.django_db(transaction=True)
async def test_a_sync_handlers_database_connection_past_its_age_is_closed_after_it():
    # CONN_MAX_AGE is 0 in the project settings: a connection is done after each handler.
    CountsUsers.used.clear()
    app = await connected(CountsUsers)
    for _ in range(2):
        await app.send_input({"type": "websocket.receive", "text": "?"})
        assert (await app.receive_output(timeout=3))["text"] == "0"
    async with asyncio.timeout(3):
        while any(used.connection is not None for used in CountsUsers.used):
            await asyncio.sleep(0.01)
    assert len(CountsUsers.used) == 2


def test_a_batch_for_a_loop_that_closed_before_running_it_is_dropped():
    # The batch is handed over, then the loop closes without ever running it.
    gone = asyncio.new_event_loop()
    assert hand_back(gone, lambda t, v: None, "lost", 1)
    gone.close()
    assert not hand_back(gone, lambda t, v: None, "lost", 2)  # nobody will take it
    ran = []

    async def main():
        assert hand_back(asyncio.get_running_loop(), lambda t, v: ran.append(t), "kept", 3)
        await asyncio.sleep(0)

    asyncio.run(main())
    assert ran == ["kept"]
    assert gone not in threads._pending  # dropped when the next batch started
