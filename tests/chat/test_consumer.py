"""The chat consumer through the project's whole ASGI stack, on the in-memory layer."""

import asyncio

import pytest

from chat.consumers import CLOSE_FORBIDDEN, CLOSE_NO_SUCH_ROOM, CLOSE_RATE_LIMITED
from chat.models import Message
from consumers.presence import apply_diff
from consumers.testing import WebsocketCommunicator
from project.asgi import application

from .conftest import ORIGIN, enter, next_of


async def test_a_message_reaches_everyone_in_the_room_and_is_saved(make_user, make_room):
    await make_room()
    ada, bob = await make_user("ada"), await make_user("bob")
    a, b = await enter(ada), await enter(bob)
    await a.send_json_to({"type": "message", "text": "  hello <b>bob</b>  "})
    for socket in (a, b):
        event = await next_of(socket, "message")
        assert event["user"] == "ada"
        # Stored and sent as the text typed (trimmed); the page shows it as text, not HTML.
        assert event["text"] == "hello <b>bob</b>"
    saved = await Message.objects.aget(pk=event["id"])
    assert saved.text == "hello <b>bob</b>"
    await a.disconnect()
    await b.disconnect()


async def test_joining_shows_the_last_fifty_messages_oldest_first(make_user, make_room):
    room = await make_room()
    ada = await make_user("ada")
    for number in range(60):
        await Message.objects.acreate(room=room, author=ada, text=f"m{number}")
    socket = await enter(ada)
    assert [message["text"] for message in socket.history] == [f"m{n}" for n in range(10, 60)]
    await socket.disconnect()


async def listed(socket, members=None, until=None):
    """The member names ``socket``'s page shows: the list on entering (when ``members`` is
    None), then each diff applied, until ``until(names)``."""
    if members is None:
        members = (await next_of(socket, "presence"))["members"]
    while until is not None and not until(sorted(members)):
        apply_diff(members, await next_of(socket, "presence"))
    return members


async def test_the_member_list_follows_joins_and_leaves(make_user, make_room):
    await make_room()
    a = await enter(await make_user("ada"))
    ada_sees = await listed(a)
    assert sorted(ada_sees) == ["ada"]
    b = await enter(await make_user("bob"))
    bob_sees = await listed(b)
    assert sorted(bob_sees) == ["ada", "bob"]
    await listed(a, ada_sees, until=lambda names: names == ["ada", "bob"])
    await b.disconnect()
    await listed(a, ada_sees, until=lambda names: names == ["ada"])
    await a.disconnect()


async def test_a_change_is_a_diff_not_the_whole_list(make_user, make_room):
    await make_room()
    a = await enter(await make_user("ada"))
    await listed(a)
    b = await enter(await make_user("bob"))
    diff = await next_of(a, "presence")
    while "bob" not in diff["joins"]:
        diff = await next_of(a, "presence")
    assert list(diff["joins"]) == ["bob"] and diff["leaves"] == {}
    await b.disconnect()
    diff = await next_of(a, "presence")
    assert list(diff["leaves"]) == ["bob"] and diff["joins"] == {}
    await a.disconnect()


async def test_two_tabs_of_one_user_count_once_until_both_close(make_user, make_room):
    await make_room()
    ada, bob = await make_user("ada"), await make_user("bob")
    watcher = await enter(bob)
    seen = await listed(watcher)
    first, second = await enter(ada), await enter(ada)
    tabs = lambda: len(seen.get("ada", {"metas": []})["metas"])  # noqa: E731
    await listed(watcher, seen, until=lambda names: tabs() == 2)
    assert sorted(seen) == ["ada", "bob"]
    await second.disconnect()
    await listed(watcher, seen, until=lambda names: tabs() == 1)
    assert sorted(seen) == ["ada", "bob"]  # one tab still open
    await first.disconnect()
    await listed(watcher, seen, until=lambda names: names == ["bob"])
    await watcher.disconnect()


async def test_anonymous_visitors_see_the_list_without_being_on_it(make_user, make_room):
    await make_room()
    ada = await enter(await make_user("ada"))
    visitor = await enter(None)
    assert sorted(await listed(visitor)) == ["ada"]
    await visitor.disconnect()
    await ada.disconnect()


async def test_typing_reaches_the_others_but_not_the_typist(make_user, make_room):
    await make_room()
    a, b = await enter(await make_user("ada")), await enter(await make_user("bob"))
    await a.send_json_to({"type": "typing"})
    assert await next_of(b, "typing") == {"type": "typing", "user": "ada"}
    await a.send_json_to({"type": "message", "text": "done"})
    # ada's own stream has her message and no typing event before it.
    while (event := await a.receive_json_from())["type"] != "message":
        assert event["type"] != "typing"
    await a.disconnect()
    await b.disconnect()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "message", "text": "   "}, "empty"),
        ({"type": "message", "text": "x" * 2001}, "too_long"),
        ({"type": "message", "text": 42}, "bad_request"),
        ({"type": "message"}, "bad_request"),
        ({"type": "shout", "text": "hi"}, "bad_request"),
        (["message", "hi"], "bad_request"),
        ("message", "bad_request"),
    ],
)
async def test_bad_input_gets_a_clear_error_and_the_connection_stays(
    make_user, make_room, frame, code
):
    await make_room()
    socket = await enter(await make_user("ada"))
    await socket.send_json_to(frame)
    error = await next_of(socket, "error")
    assert error["code"] == code and error["detail"]
    await socket.send_json_to({"type": "message", "text": "still here"})
    assert (await next_of(socket, "message"))["text"] == "still here"
    assert await Message.objects.acount() == 1
    await socket.disconnect()


async def test_an_anonymous_visitor_may_read_a_public_room_but_not_post(make_user, make_room):
    await make_room()
    ada = await enter(await make_user("ada"))
    guest = await enter(None)
    await guest.send_json_to({"type": "message", "text": "hi"})
    assert (await next_of(guest, "error"))["code"] == "login_required"
    await ada.send_json_to({"type": "message", "text": "welcome"})
    assert (await next_of(guest, "message"))["text"] == "welcome"
    await ada.disconnect()
    await guest.disconnect()


async def closed_with(user, room):
    socket = WebsocketCommunicator(application, f"/ws/chat/{room}/", headers=ORIGIN)
    if user is not None:
        await socket.force_login(user)
    assert (await socket.connect())[0]
    close = await socket.receive_output()
    assert close["type"] == "websocket.close"
    return close["code"]


async def test_a_private_room_admits_its_members_only(make_user, make_room):
    ada, eve = await make_user("ada"), await make_user("eve")
    await make_room("secret", private=True, members=[ada])
    assert await closed_with(eve, "secret") == CLOSE_FORBIDDEN
    # Anonymous visitors cannot tell a private room from a missing one.
    assert await closed_with(None, "secret") == CLOSE_NO_SUCH_ROOM
    assert await closed_with(None, "nowhere") == CLOSE_NO_SUCH_ROOM
    member = await enter(ada, "secret")
    await member.disconnect()


async def test_an_unknown_room_is_refused_and_not_created(make_user, make_room):
    assert await closed_with(await make_user("ada"), "nowhere") == CLOSE_NO_SUCH_ROOM


async def test_room_names_that_are_not_slugs_do_not_route(make_user, make_room):
    await make_room()
    for path in ["/ws/chat/lobby!x/", "/ws/chat/*/", "/ws/chat/../lobby/", "/ws/chat/LOBBY/"]:
        socket = WebsocketCommunicator(application, path, headers=ORIGIN)
        assert await socket.connect() == (False, 1000), path


async def test_a_flood_is_refused_then_closed_while_others_chat_on(make_user, make_room, settings):
    settings.CHAT_MESSAGES_PER_SECOND = 1
    settings.CHAT_MESSAGE_BURST = 3
    settings.CHAT_STRIKES_BEFORE_CLOSE = 5
    await make_room()
    flooder, calm = await enter(await make_user("eve")), await enter(await make_user("ada"))
    for number in range(8):
        await flooder.send_json_to({"type": "message", "text": f"flood {number}"})
    events = []
    while (event := await flooder.receive_output())["type"] != "websocket.close":
        events.append(event)
    assert event["code"] == CLOSE_RATE_LIMITED
    texts = [e["text"] for e in events if "text" in e]
    refusals = [t for t in texts if '"rate_limited"' in t]
    assert len(refusals) == 4  # strikes one to four are told; the fifth closes
    assert await Message.objects.acount() == 3  # the burst got through
    await calm.send_json_to({"type": "message", "text": "calm"})
    received = [(await next_of(calm, "message"))["text"] for _ in range(4)]
    assert received == ["flood 0", "flood 1", "flood 2", "calm"]
    await calm.disconnect()


async def test_moderation_removes_a_banned_message_for_everyone(make_user, make_room):
    await make_room()
    a, b = await enter(await make_user("ada")), await enter(await make_user("bob"))
    await a.send_json_to({"type": "message", "text": "buy SPAM now"})
    await a.send_json_to({"type": "message", "text": "spammer is fine"})
    for socket in (a, b):
        removed = await next_of(socket, "moderated")
        assert removed["status"] == Message.REMOVED and removed["text"] == ""
        kept = await next_of(socket, "moderated")
        assert kept["status"] == Message.VISIBLE and kept["text"] == "spammer is fine"
    later = await enter(await make_user("cy"))
    assert [(m["text"], m["status"]) for m in later.history] == [
        ("", "removed"),
        ("spammer is fine", "visible"),
    ]
    for socket in (a, b, later):
        await socket.disconnect()


async def test_moderation_runs_in_a_worker_when_not_inline(make_user, make_room, settings):
    from channels_layer import get_channel_layer
    from chat.moderation import MODERATION_CHANNEL
    from consumers.routing import get_default_application
    from consumers.worker import Worker

    settings.CHAT_MODERATION_INLINE = False
    await make_room()
    worker = Worker(get_default_application(), [MODERATION_CHANNEL], get_channel_layer())
    running = asyncio.create_task(worker.arun())
    try:
        socket = await enter(await make_user("ada"))
        await socket.send_json_to({"type": "message", "text": "reviewed elsewhere"})
        message = await next_of(socket, "message")
        assert message["status"] == Message.PENDING
        verdict = await next_of(socket, "moderated")
        assert (verdict["id"], verdict["status"]) == (message["id"], Message.VISIBLE)
        await socket.disconnect()
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
