"""Open sockets lose a room the moment access to it ends, and one user's sockets share one
rate limit and one cap (in one process here; across processes in test_two_processes.py)."""

import asyncio
import socket as socket_module
import time

from chat.consumers import (
    CLOSE_RATE_LIMITED,
    CLOSE_REVOKED,
    CLOSE_TOO_MANY_SOCKETS,
)
from chat.models import Message
from consumers.testing import WebsocketCommunicator
from project.asgi import application

from .conftest import ORIGIN, enter, next_of


async def closed_within(socket, seconds: float) -> int:
    """The close code the socket gets within ``seconds``, skipping other events."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        message = await socket.receive_output(timeout=left)
        if message["type"] == "websocket.close":
            return message["code"]
    raise AssertionError(f"still open after {seconds} s")


async def test_a_member_removed_from_a_private_room_is_closed_out(make_user, make_room):
    ada, bob = await make_user("ada"), await make_user("bob")
    room = await make_room("secret", private=True, members=[ada, bob])
    a, b = await enter(ada, "secret"), await enter(bob, "secret")
    await room.members.aremove(bob)
    assert await closed_within(b, 1) == CLOSE_REVOKED
    # Nothing bob's socket might still send is taken, and ada's socket is untouched.
    await a.send_json_to({"type": "message", "text": "bob is gone"})
    assert (await next_of(a, "message"))["text"] == "bob is gone"
    assert await Message.objects.acount() == 1
    await a.disconnect()


async def test_removal_from_the_user_side_closes_too(make_user, make_room):
    bob = await make_user("bob")
    await make_room("secret", private=True, members=[bob])
    b = await enter(bob, "secret")
    await bob.rooms.aclear()
    assert await closed_within(b, 1) == CLOSE_REVOKED


async def test_a_deleted_room_closes_every_socket_in_it(make_user, make_room):
    room = await make_room("general")
    a, guest = await enter(await make_user("ada"), "general"), await enter(None, "general")
    await room.adelete()
    for socket in (a, guest):
        assert await closed_within(socket, 1) == CLOSE_REVOKED


async def test_a_deactivated_account_is_closed_out_of_every_room(make_user, make_room):
    eve = await make_user("eve")
    await make_room("general")
    await make_room("secret", private=True, members=[eve])
    sockets = [await enter(eve, "general"), await enter(eve, "secret")]
    eve.is_active = False
    await eve.asave()
    for socket in sockets:
        assert await closed_within(socket, 1) == CLOSE_REVOKED


async def test_changes_that_keep_access_keep_the_socket(make_user, make_room):
    ada, bob = await make_user("ada"), await make_user("bob")
    room = await make_room("secret", private=True, members=[ada, bob])
    a = await enter(ada, "secret")
    await room.members.aremove(bob)
    room.private = False
    await room.asave()
    await ada.asave()
    await asyncio.sleep(0.3)  # time for any re-check to run
    await a.send_json_to({"type": "message", "text": "still here"})
    assert (await next_of(a, "message"))["text"] == "still here"
    await a.disconnect()


async def answer_to(socket, text: str) -> str:
    """What became of the post ``text``: posted (it came back), or the error's code."""
    while True:
        event = await socket.receive_json_from(timeout=2)
        if event["type"] == "error":
            return event["code"]
        if event["type"] == "message" and event["text"] == text:
            return "posted"


async def test_one_users_parallel_sockets_share_one_rate_limit(make_user, make_room, settings):
    settings.CHAT_MESSAGES_PER_SECOND = 1e-9  # nothing refills during the test
    settings.CHAT_MESSAGE_BURST = 10
    settings.CHAT_STRIKES_BEFORE_CLOSE = 1000
    await make_room()
    eve = await make_user("eve")
    sockets = [await enter(eve) for _ in range(5)]
    answers = []
    for index, socket in enumerate(sockets):
        for number in range(10):
            text = f"flood {index}-{number}"
            await socket.send_json_to({"type": "message", "text": text})
            answers.append(await answer_to(socket, text))
    # Ten posts in all, not ten per socket.
    assert answers.count("posted") == 10 and answers.count("rate_limited") == 40
    assert await Message.objects.acount() == 10
    # Reconnecting does not refill it either.
    fresh = await enter(eve)
    await fresh.send_json_to({"type": "message", "text": "again"})
    refusal = await next_of(fresh, "error")
    assert refusal["code"] == "rate_limited"
    assert await Message.objects.acount() == 10


async def test_strikes_still_close_the_flooding_socket(make_user, make_room, settings):
    settings.CHAT_MESSAGES_PER_SECOND = 1e-9
    settings.CHAT_MESSAGE_BURST = 1
    settings.CHAT_STRIKES_BEFORE_CLOSE = 2
    await make_room()
    socket = await enter(await make_user("eve"))
    for number in range(3):
        await socket.send_json_to({"type": "message", "text": f"m{number}"})
    assert await closed_within(socket, 1) == CLOSE_RATE_LIMITED


async def connect_as(user, address: str = "203.0.113.7", room: str = "lobby"):
    socket = WebsocketCommunicator(application, f"/ws/chat/{room}/", headers=ORIGIN)
    socket.scope["client"] = (address, 40000)
    if user is not None:
        await socket.force_login(user)
    assert (await socket.connect())[0]
    first = await socket.receive_output()
    return socket, first


async def test_sockets_per_user_are_capped(make_user, make_room, settings):
    settings.CHAT_MAX_SOCKETS_PER_USER = 3
    await make_room()
    eve = await make_user("eve")
    open_ = []
    for number in range(3):
        socket, first = await connect_as(eve, f"198.51.100.{number}")
        assert first["type"] == "websocket.send"
        open_.append(socket)
    socket, refused = await connect_as(eve, "198.51.100.9")
    assert refused["type"] == "websocket.close"
    assert refused["code"] == CLOSE_TOO_MANY_SOCKETS
    # Another user from the same places is not affected; a closed socket frees its slot.
    _, first = await connect_as(await make_user("ada"), "198.51.100.0")
    assert first["type"] == "websocket.send"
    await open_[0].disconnect()
    socket, first = await connect_as(eve, "198.51.100.9")
    assert first["type"] == "websocket.send"


async def test_sockets_per_address_are_capped_for_anyone(make_user, make_room, settings):
    settings.CHAT_MAX_SOCKETS_PER_ADDRESS = 4
    await make_room()
    for _ in range(4):
        _, first = await connect_as(None)
        assert first["type"] == "websocket.send"
    _, refused = await connect_as(None)
    assert refused["code"] == CLOSE_TOO_MANY_SOCKETS
    _, refused = await connect_as(await make_user("ada"))
    assert refused["code"] == CLOSE_TOO_MANY_SOCKETS
    _, first = await connect_as(None, "192.0.2.1")
    assert first["type"] == "websocket.send"


async def test_the_welcome_does_not_name_the_server_unless_configured(
    make_user, make_room, settings
):
    await make_room()
    socket = WebsocketCommunicator(application, "/ws/chat/lobby/", headers=ORIGIN)
    await socket.connect()
    welcome = await socket.receive_json_from()
    assert welcome["type"] == "welcome" and welcome["server"] is None
    assert socket_module.gethostname() not in str(welcome)
