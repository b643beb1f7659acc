"""The reference project served unmodified by Uvicorn and Hypercorn, not only by Daphne.

Each test starts the server as a user would (``python -m uvicorn project.asgi:application``
or ``python -m hypercorn ...``) in another process that shares the test database, then
talks to it over real sockets: a Django view over HTTP and a chat exchange between two
logged-in users over WebSockets. The server has no REDIS_URL, so it uses the in-memory
channel layer: both users reach the same single process.

Where the servers differ: after a client has closed, Daphne and Hypercorn drop what the
application still sends, while Uvicorn raises an OSError (ASGI 2.4 allows both); the last
test covers the consumer's side of that.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from websockets.asyncio.client import ClientConnection

from chat.models import Message, Room
from consumers.presence import apply_diff
from tests.reliability.cluster import Node, connect_chat
from testsupport.processes import Process, wait_for_port
from testsupport.system import free_port

HOST = "127.0.0.1"
START_TIMEOUT = 20.0  # seconds for the server to accept connections (imports Django first)
STOP_TIMEOUT = 5.0
TIMEOUT = 5.0  # any one network step

# Loopback only: never through a proxy from the environment.
http = urllib.request.build_opener(urllib.request.ProxyHandler({}))

#: The command line after ``python`` for each server, given the port.
SERVERS: dict[str, Callable[[int], list[str]]] = {
    "uvicorn": lambda port: [
        *("-m", "uvicorn", "project.asgi:application"),
        *("--host", HOST, "--port", str(port)),
    ],
    "hypercorn": lambda port: [
        *("-m", "hypercorn", "project.asgi:application"),
        *("--bind", f"{HOST}:{port}"),
    ],
}

pytestmark = pytest.mark.django_db(transaction=True)


def database_url() -> str:
    """A DATABASE_URL naming the test database this process uses, for the server process."""
    db = connection.settings_dict
    engine = db["ENGINE"].rsplit(".", 1)[-1]
    if engine == "sqlite3":
        name = str(db["NAME"])
        if name == ":memory:" or "mode=memory" in name:
            pytest.skip("the test database is in memory: another process cannot open it")
        return f"sqlite:///{Path(name).resolve()}"
    schemes = {"postgresql": "postgres", "mysql": "mysql"}
    if engine not in schemes:
        pytest.skip(f"no DATABASE_URL scheme known for the {engine} backend")
    credentials = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        credentials += ":" + quote(db["PASSWORD"], safe="")
    address = db["HOST"] or "localhost"
    if db["PORT"]:
        address += f":{db['PORT']}"
    return f"{schemes[engine]}://{credentials}@{address}/{quote(db['NAME'], safe='')}"


@pytest.fixture
def server(request: pytest.FixtureRequest, transactional_db: None) -> Iterator[Node]:
    """The server named by the (indirect) parameter, on a free port, sharing the test database.

    It depends on ``transactional_db`` so that it stops before the tables are flushed.
    """
    name = request.param
    env = {
        "DATABASE_URL": database_url(),
        "SERVER_NAME": f"e2e-{name}",
        "PYTHONUNBUFFERED": "1",
        # The in-memory layer: everyone in one process, nothing shared on Redis.
        "REDIS_URL": None,
        "REDIS_PREFIX": None,
    }
    port = free_port()
    # A group of its own: Hypercorn serves from a child process, stopped with it.
    process = Process(sys.executable, *SERVERS[name](port), env=env, name=name, own_group=True)
    running = Node(name, port, process)
    try:
        wait_for_port(process, port, START_TIMEOUT)
        yield running
    finally:
        process.stop(STOP_TIMEOUT)
        # pytest shows this with a failing test only.
        sys.stderr.write(f"--- {name} output ---\n{running.output or '(nothing)'}\n--- end ---\n")


def session_cookie(username: str) -> str:
    user = get_user_model().objects.create_user(username, password="not-used-here")
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


@pytest.mark.parametrize("server", sorted(SERVERS), indirect=True)
def test_serves_a_django_view_over_http(server: Node) -> None:
    try:
        with http.open(server.url + "/accounts/login/", timeout=TIMEOUT) as response:
            status = response.status
            html = response.read().decode()
    except Exception as error:
        pytest.fail(
            f"GET /accounts/login/ through {server.name} failed: {error!r}\n{server.output}"
        )
    assert status == 200, server.output
    assert 'name="username"' in html, server.output


@pytest.mark.parametrize("server", sorted(SERVERS), indirect=True)
def test_two_users_chat_over_websockets(server: Node) -> None:
    room = Room.objects.create(name="lobby")
    cookies = {"ada": session_cookie("ada"), "bob": session_cookie("bob")}
    text = f"hello from ada via {server.name}"

    try:
        seen = asyncio.run(chat_exchange(server, room.name, cookies, text))
    except Exception as error:
        pytest.fail(f"chat exchange through {server.name} failed: {error!r}\n{server.output}")

    context = f"events: {seen}\n{server.output}"
    assert seen["ada"]["welcome"]["user"] == "ada", context
    assert seen["bob"]["welcome"]["user"] == "bob", context
    assert seen["bob"]["welcome"]["server"] == f"e2e-{server.name}", context
    for user in ("ada", "bob"):
        assert seen[user]["message"]["text"] == text, context
        assert seen[user]["message"]["user"] == "ada", context
        assert seen[user]["moderated"]["status"] == Message.VISIBLE, context
    saved = Message.objects.get(room=room, author__username="ada", text=text)
    assert saved.pk == seen["bob"]["message"]["id"], context
    assert saved.status == Message.VISIBLE, context


async def chat_exchange(
    server: Node, room: str, cookies: dict[str, str], text: str
) -> dict[str, dict[str, Any]]:
    """Ada and Bob join ``room``; Ada posts ``text``; each one's welcome, the message and
    its moderation verdict (waited for, so nothing is still on its way when they leave)."""
    seen: dict[str, dict[str, Any]] = {"ada": {}, "bob": {}}
    async with asyncio.timeout(3 * TIMEOUT):
        async with connect_chat(server, room, cookies["ada"]) as ada:
            seen["ada"]["welcome"] = await joined(ada)
            async with connect_chat(server, room, cookies["bob"]) as bob:
                seen["bob"]["welcome"] = await joined(bob)
                await ada.send(json.dumps({"type": "message", "text": text}))
                for user, websocket in (("bob", bob), ("ada", ada)):
                    seen[user]["message"] = await next_event(websocket, "message")
                    seen[user]["moderated"] = await next_event(websocket, "moderated")
    return seen


@pytest.mark.parametrize(
    "server",
    ["hypercorn", "uvicorn"],
    indirect=True,
)
def test_a_member_leaving_with_a_message_in_flight_leaves_the_presence_list(
    server: Node,
) -> None:
    room = Room.objects.create(name="lobby")
    cookies = {"ada": session_cookie("ada"), "bob": session_cookie("bob")}

    async def leave_mid_message() -> list[list[str]]:
        """The presence lists Bob sees after Ada posts and leaves before her own message
        comes back to her (so her consumer has a group message to send to a closed socket)."""
        async with asyncio.timeout(3 * TIMEOUT):
            async with connect_chat(server, room.name, cookies["bob"]) as bob:
                await joined(bob)
                async with connect_chat(server, room.name, cookies["ada"]) as ada:
                    await joined(ada)
                    await ada.send(json.dumps({"type": "message", "text": "bye"}))
                lists: list[list[str]] = []
                # Both listed (joined() saw it); from here on the room sends changes only.
                members: dict = {"ada": {"metas": []}, "bob": {"metas": []}}
                with contextlib.suppress(TimeoutError):
                    while not lists or lists[-1] != ["bob"]:
                        apply_diff(members, await next_event(bob, "presence"))
                        lists.append(sorted(members))
                return lists

    lists = asyncio.run(leave_mid_message())
    assert lists and lists[-1] == ["bob"], f"presence lists Bob saw: {lists}\n{server.output}"


async def joined(websocket: ClientConnection) -> dict[str, Any]:
    """Check the opening (welcome, history, presence) and return the welcome."""
    welcome = await next_event(websocket)
    assert welcome["type"] == "welcome", welcome
    history = await next_event(websocket)
    assert history["type"] == "history", history
    await next_event(websocket, "presence")
    return welcome


async def next_event(websocket: ClientConnection, kind: str | None = None) -> dict[str, Any]:
    """The next event, or the next one of type ``kind`` (skipping others)."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            event = json.loads(await websocket.recv())
            if kind is None or event.get("type") == kind:
                return event
