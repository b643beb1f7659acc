"""A page that reconnects to a room gets the posts it missed, once each, in order, instead
of the room's last posts from the database; when they are no longer kept, the database's."""

from __future__ import annotations

import json
from urllib.parse import quote

from channels_layer import get_channel_layer
from chat.consumers import typing_group
from consumers.testing import WebsocketCommunicator
from project.asgi import application
from tests.chat.conftest import ORIGIN, enter, next_of


async def resume(user, room: str, position: dict) -> WebsocketCommunicator:
    """A communicator that re-enters ``room`` asking to resume from ``position``."""
    asked = quote(json.dumps({position["group"]: position}))
    socket = WebsocketCommunicator(application, f"/ws/chat/{room}/?recover={asked}", headers=ORIGIN)
    await socket.force_login(user)
    assert (await socket.connect())[0]
    assert (await socket.receive_json_from())["type"] == "welcome"
    return socket


async def until(socket, kind: str) -> list[dict]:
    """Every event up to and including the first of type ``kind``."""
    events = []
    while not events or events[-1]["type"] != kind:
        events.append(await socket.receive_json_from(timeout=2))
    return events


async def test_a_returning_page_gets_exactly_the_posts_it_missed(make_user, make_room):
    ada, bob = await make_user("ada"), await make_user("bob")
    room = await make_room("lobby")
    a, b = await enter(ada), await enter(bob)
    joined = await next_of(b, "consumers.joined")
    await a.send_json_to({"type": "message", "text": "before"})
    posted = await next_of(b, "message")
    assert posted["__position__"]["offset"] == joined["position"]["offset"] + 1
    seen = await next_of(b, "moderated")  # the last thing the page saw: the post's verdict
    await next_of(a, "moderated")  # so each wait below is for the verdict of its own post
    await b.disconnect()

    for number in range(5):
        await a.send_json_to({"type": "message", "text": f"while away {number}"})
        await next_of(a, "moderated")  # the post, then its verdict, are in the history

    b = await resume(bob, "lobby", seen["__position__"])
    events = await until(b, "consumers.recovered")
    texts = [event["text"] for event in events if event["type"] == "message"]
    assert texts == [f"while away {number}" for number in range(5)]
    assert "history" not in [event["type"] for event in events]  # no reload from the database
    # Each post's moderation verdict was missed too, and comes with it.
    assert [event["type"] for event in events].count("moderated") == 5
    recovered = events[-1]
    assert recovered["count"] == 10 and recovered["group"] == room.group_name
    # Live again: the next post arrives once.
    await a.send_json_to({"type": "message", "text": "welcome back"})
    assert (await next_of(b, "message"))["text"] == "welcome back"
    await a.disconnect()
    await b.disconnect()


async def test_when_recovery_fails_the_page_gets_the_room_from_the_database(make_user, make_room):
    ada = await make_user("ada")
    await make_room("lobby")
    a = await enter(ada)
    await a.send_json_to({"type": "message", "text": "kept in the database"})
    posted = await next_of(a, "message")
    stale = {**posted["__position__"], "epoch": "an-epoch-long-gone"}
    await a.disconnect()

    socket = await resume(ada, "lobby", stale)
    history = await socket.receive_json_from()
    assert history["type"] == "history"
    assert [event["text"] for event in history["messages"]] == ["kept in the database"]
    failed = await socket.receive_json_from()
    assert failed["type"] == "consumers.recovery_failed"
    assert failed["position"]["epoch"] == posted["__position__"]["epoch"]
    await socket.disconnect()


async def test_typing_notices_stay_out_of_the_rooms_history(make_user, make_room):
    ada = await make_user("ada")
    room = await make_room("lobby")
    a = await enter(ada)
    layer = get_channel_layer()
    before = await layer.group_position(room.group_name)
    await a.send_json_to({"type": "typing"})
    await a.send_json_to({"type": "message", "text": "typed"})
    await next_of(a, "moderated")
    kept = await layer.group_history(room.group_name, before)
    assert [message["type"] for message in kept] == ["chat.message", "chat.moderated"]
    assert typing_group(room) != room.group_name
    await a.disconnect()
