"""The chat's sockets end with the session: logging out in one tab closes the room in the
others (4401), and the people still in the room see the user leave once."""

import asyncio

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from chat.consumers import CLOSE_LOGGED_OUT
from consumers.db import database_sync_to_async
from consumers.presence import apply_diff
from consumers.testing import WebsocketCommunicator
from project.asgi import application

from .conftest import ORIGIN, next_of


@database_sync_to_async
def logged_in_browser(name: str) -> Client:
    user = get_user_model().objects.create_user(username=name, password="pw")
    browser = Client()
    browser.force_login(user)
    return browser


async def tab(browser: Client) -> WebsocketCommunicator:
    """A room page's socket in ``browser`` (its session cookie), past welcome and history."""
    cookie = f"sessionid={browser.cookies['sessionid'].value}".encode()
    socket = WebsocketCommunicator(
        application, "/ws/chat/lobby/", headers=[*ORIGIN.items(), ("cookie", cookie)]
    )
    assert (await socket.connect())[0]
    assert (await socket.receive_json_from())["type"] == "welcome"
    assert (await socket.receive_json_from())["type"] == "history"
    return socket


async def closed(socket: WebsocketCommunicator, within: float = 1.0) -> tuple:
    """The close code and reason, skipping the events still queued before it."""
    async with asyncio.timeout(within):
        while (output := await socket.receive_output(within))["type"] != "websocket.close":
            pass
    return output["code"], output.get("reason")


@pytest.mark.usefixtures("chat_db")
async def test_logging_out_in_one_tab_closes_the_room_in_the_other(make_room, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    await make_room()
    ada, bob = await logged_in_browser("ada"), await logged_in_browser("bob")
    first, second = await tab(ada), await tab(ada)
    watcher = await tab(bob)
    seen = (await next_of(watcher, "presence"))["members"]
    assert sorted(seen) == ["ada", "bob"] and len(seen["ada"]["metas"]) == 2

    await database_sync_to_async(ada.post)("/accounts/logout/")
    for socket in (first, second):
        assert await closed(socket) == (CLOSE_LOGGED_OUT, "session ended")
        await socket.disconnect()
    # Bob's list loses ada, by two leaves (one per tab), and nothing else happens.
    leaves = []
    while "ada" in seen:
        diff = await next_of(watcher, "presence")
        leaves += [meta["ref"] for meta in diff["leaves"].get("ada", {"metas": []})["metas"]]
        assert not diff["joins"]
        apply_diff(seen, diff)
    assert len(leaves) == len(set(leaves)) == 2
    assert await watcher.receive_nothing(0.5)
    await watcher.disconnect()
