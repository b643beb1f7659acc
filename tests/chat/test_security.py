"""Security drills against the chat: cross-site WebSocket hijacking, private rooms, session
cookies, names and fields taken from client input, a forged broadcast on an encrypted layer,
and no pickle/eval/exec on the path a message travels, at run time.

Every test has a positive control where a negative result could be vacuous: the socket that
receives nothing from an attack receives a message sent to its group, the cookie that is
refused is accepted when signed or stored properly, the audit hook that sees no exec sees
one on purpose. Encryption on Redis is tests/channels_layer/test_encryption.py; the rate
limit under a flood tests/chat/test_flood.py; the static rules (ruff's S rules and banned
modules) tests/test_security_rules.py.

The chat runs in-process on the in-memory layer; the Redis tests use ``make_layer``'s unique
prefix on the shared Redis and touch no other key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import sys
import time
from unittest import mock
from urllib.parse import quote

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore as DbSessionStore
from django.contrib.sessions.backends.signed_cookies import SessionStore as SignedSessionStore
from django.core import signing
from django.test import AsyncClient

from channels_layer import get_channel_layer
from chat.consumers import CLOSE_FORBIDDEN, CLOSE_NO_SUCH_ROOM
from chat.models import Message, Room
from tests.chat.conftest import enter, new_room, new_user, next_of, outputs, socket_to
from tests.redis_servers import REDIS_URL

MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"


async def hang_up(socket) -> None:
    """Disconnect from the client side, unless the application has already finished."""
    if not socket.future.done():
        await socket.send_input({"type": "websocket.disconnect", "code": 1000})
    await socket.wait()


async def login_cookie(user) -> str:
    """A Cookie header value with a real session of ``user``, for many handshakes."""
    return "sessionid=" + await sync_to_async(db_session)(user)


def members_of(group: str) -> list[str]:
    """The channels in a group of the in-memory layer (it has no public listing)."""
    return get_channel_layer()._groups.live_members(group)


# Cross-site WebSocket hijacking ------------------------------------------------------------

# The project allows localhost, 127.0.0.1 and [::1] (settings.ALLOWED_HOSTS), on any port.
FOREIGN_ORIGINS = [
    None,  # no Origin header at all
    "null",  # sandboxed iframes, file:// pages, some redirects
    "http://evil.com",
    "http://localhost.evil.com",
    "http://evil.com/localhost",
    "http://localhost@evil.com",
    "http://evil.com#localhost",
    "http://evil.com?localhost",
    "http://evil-localhost",
    "http://sub.localhost",  # ALLOWED_HOSTS says "localhost", not ".localhost"
    "http://127.0.0.1.evil.com",
    "http://127.0.0.2",
    "http://[::1].evil.com",
    "http://[::2]",
    "http://l\u043ecalhost",  # a Cyrillic o (U+043E): a look-alike
    "http://xn--lcalhost-nbh",  # a look-alike as the browser spells it (punycode)
    "http://localhost:99999",
    "http://localhost, http://evil.com",  # two Origin headers, as servers join them
    "localhost",
    "",
]


ALLOWED_ORIGINS = [
    "http://localhost",
    "http://localhost:8000",  # ALLOWED_HOSTS has no port: any port, as in Django
    "https://localhost:8443",
    "http://LOCALHOST:8000",
    "http://localhost.:8000",
    "http://127.0.0.1:3000",
    "http://[::1]:8000",
]


async def test_a_foreign_or_missing_origin_is_refused_before_the_chat_runs(quiet_chat, caplog):
    """The handshake is closed before it is accepted (servers answer HTTP 403), with one
    warning: the session cookie the browser attached is never used, no one joins the room.
    The same logged-in handshake from an allowed host, on any port, gets in."""
    ada = await new_user("ada")
    room = await new_room("lobby")
    cookie = await login_cookie(ada)
    for origin in FOREIGN_ORIGINS:
        caplog.clear()
        socket = socket_to("/ws/chat/lobby/", origin, cookie)
        with caplog.at_level(logging.INFO, logger="consumers.security"):
            assert await socket.connect() == (False, 1000), origin
        assert members_of(room.group_name) == [], origin
        refusals = [r for r in caplog.records if r.name == "consumers.security"]
        assert [r.levelno for r in refusals] == [logging.WARNING], origin
        assert "/ws/chat/lobby/" in refusals[0].getMessage(), origin
        await socket.disconnect()
    for origin in ALLOWED_ORIGINS:
        socket = await enter(ada, "lobby", origin, past_presence=True)
        assert socket.welcome["user"] == "ada", origin
        await socket.disconnect()


# Private rooms, anonymous and guessing users -----------------------------------------------


async def test_without_cookies_a_private_room_can_be_neither_read_nor_posted_to(quiet_chat):
    ada = await new_user("ada")
    secret = await new_room("secret", private=True, members=[ada])
    await Message.objects.acreate(room=secret, author=ada, text="the old secret")
    member = await enter(ada, "secret", past_presence=True)
    assert [m["text"] for m in member.history] == ["the old secret"]
    stranger = socket_to("/ws/chat/secret/")  # the right Origin, no cookie at all
    assert await stranger.connect() == (True, None)
    # Accepted only so that the close code reaches the browser: no welcome, no history;
    # to an anonymous visitor a private room looks like a missing one.
    assert await stranger.receive_output() == {
        "type": "websocket.close",
        "code": CLOSE_NO_SUCH_ROOM,
        "reason": "no such room",
    }
    [member_channel] = members_of(secret.group_name)
    await member.send_json_to({"type": "message", "text": "the new secret"})
    assert (await next_of(member, "message"))["text"] == "the new secret"
    assert await next_of(member, "moderated")
    sent_to_stranger = [a for a in await outputs(stranger) if a["type"] == "websocket.send"]
    assert sent_to_stranger == []  # neither the message nor its moderation
    # Posting anyway, on the refused socket, reaches no one and stores nothing (how the
    # consumer copes with such frames is test_frames_on_a_refused_connection_...).
    await stranger.send_json_to({"type": "message", "text": "from outside"})
    await stranger.send_json_to({"type": "typing"})
    assert await outputs(member) == []
    await hang_up(stranger)
    assert members_of(secret.group_name) == [member_channel]
    assert [m.text async for m in Message.objects.order_by("pk")] == [
        "the old secret",
        "the new secret",
    ]
    await member.disconnect()


@pytest.mark.parametrize(
    ("room", "code"), [("secret", CLOSE_NO_SUCH_ROOM), ("gone", CLOSE_NO_SUCH_ROOM)]
)
async def test_frames_on_a_refused_connection_are_ignored_without_a_crash(
    quiet_chat, room, code, caplog
):
    """A client may send frames before it reads the close (autobahn still reads data frames
    while closing, and Daphne forwards them): they must be ignored, not crash the consumer
    with a traceback (and a 1011 instead of the 4003/4004 already sent)."""
    await new_room("secret", private=True)
    socket = socket_to(f"/ws/chat/{room}/")
    assert await socket.connect() == (True, None)
    assert (await socket.receive_output())["code"] == code
    await socket.send_json_to({"type": "message", "text": "let me in"})
    await socket.send_json_to({"type": "typing"})
    assert await outputs(socket) == []
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert await Message.objects.acount() == 0
    await socket.disconnect()


async def test_guessing_a_private_rooms_name_gets_nothing_anywhere(quiet_chat):
    ada, eve = await new_user("ada"), await new_user("eve")
    secret = await new_room("secret", private=True, members=[ada])
    await Message.objects.acreate(room=secret, author=ada, text="for members only")
    # The socket: closed 4003, before any welcome or history.
    socket = socket_to("/ws/chat/secret/")
    await socket.force_login(eve)
    assert await socket.connect() == (True, None)
    assert await socket.receive_output() == {
        "type": "websocket.close",
        "code": CLOSE_FORBIDDEN,
        "reason": "this room is private",
    }
    assert await outputs(socket) == []
    await socket.disconnect()
    assert members_of(secret.group_name) == []
    # The pages.
    client = AsyncClient()
    await client.aforce_login(eve)
    page = await client.get("/chat/secret/")  # as if there were no such room
    assert page.status_code == 404 and b"for members only" not in page.content
    invite = await client.post("/chat/secret/invite/", {"username": "eve"})
    assert invite.status_code == 404
    lobby = await client.get("/")
    assert lobby.status_code == 200 and b"secret" not in lobby.content
    # Opening it by name from the lobby form only says the name is taken, and changes nothing.
    opened = await client.post("/", {"name": "secret"})
    assert opened.status_code == 200 and b"That name is taken" in opened.content
    await secret.arefresh_from_db()
    assert secret.private
    assert [user.username async for user in secret.members.all()] == ["ada"]
    # Control: a member gets the page, and sees the room listed.
    await client.aforce_login(ada)
    assert (await client.get("/chat/secret/")).status_code == 200
    assert b"secret" in (await client.get("/")).content


def db_session(user, *, expired=False, hash_of=None) -> str:
    session = DbSessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = MODEL_BACKEND
    session[HASH_SESSION_KEY] = hash_of or user.get_session_auth_hash()
    session.set_expiry(-60 if expired else 3600)
    session.save()
    return session.session_key


def signed_session(user, *, key=None, age=0, tamper=False) -> str:
    data = {
        SESSION_KEY: str(user.pk),
        BACKEND_SESSION_KEY: MODEL_BACKEND,
        HASH_SESSION_KEY: user.get_session_auth_hash(),
    }
    stamp = signing.b62_encode(int(time.time() - age))
    with mock.patch.object(signing.TimestampSigner, "timestamp", return_value=stamp):
        value = signing.dumps(
            data,
            key=key,
            salt="django.contrib.sessions.backends.signed_cookies",
            serializer=SignedSessionStore().serializer,
            compress=True,
        )
    if tamper:  # one character of the signature changed
        value = value[:-1] + ("A" if value[-1] != "A" else "B")
    return value


DB = "django.contrib.sessions.backends.db"
SIGNED = "django.contrib.sessions.backends.signed_cookies"
# (what it is, session engine, how the cookie is made, who the socket should be: None for
# anonymous). Each forgery has a control made the same way with the right ingredient.
COOKIES = [
    ("control: a stored session", DB, lambda ada: db_session(ada), "ada"),
    ("expired", DB, lambda ada: db_session(ada, expired=True), None),
    ("forged auth hash", DB, lambda ada: db_session(ada, hash_of="0" * 64), None),
    ("well-formed key never issued", DB, lambda ada: secrets.token_hex(16), None),
    ("garbage", DB, lambda ada: "garbage", None),
    ("over-long", DB, lambda ada: "x" * 5000, None),
    ("SQL", DB, lambda ada: '"; DROP TABLE django_session; --', None),
    ("path", DB, lambda ada: "../../etc/passwd", None),
    ("non-ASCII", DB, lambda ada: "\u00e9\u00ff\u00fe", None),
    ("empty", DB, lambda ada: "", None),
    ("control: signed with SECRET_KEY", SIGNED, lambda ada: signed_session(ada), "ada"),
    ("signed with another key", SIGNED, lambda ada: signed_session(ada, key="guess"), None),
    ("signature altered", SIGNED, lambda ada: signed_session(ada, tamper=True), None),
    ("signed 3 weeks ago", SIGNED, lambda ada: signed_session(ada, age=21 * 86400), None),
    ("signed garbage", SIGNED, lambda ada: "garbage:with:colons", None),
]


async def test_a_forged_expired_or_garbage_session_cookie_is_anonymous(quiet_chat, settings):
    """Anonymous: welcomed without a name, refused when posting, kept out of a private room
    its user is a member of. The controls get in as ada, so the forgeries differ from a
    working cookie only by what makes them forged."""
    ada = await new_user("ada")
    await new_room("lobby")
    await new_room("secret", private=True, members=[ada])
    # Every anonymous socket here is one client address, which shares one rate limit.
    settings.CHAT_MESSAGE_BURST = 2 * len(COOKIES)
    for label, engine, make_cookie, expected in COOKIES:
        settings.SESSION_ENGINE = engine
        cookie = "sessionid=" + await sync_to_async(make_cookie)(ada)
        socket = socket_to("/ws/chat/lobby/", cookie=cookie)
        assert await socket.connect() == (True, None), label
        welcome = await socket.receive_json_from()
        assert (welcome["user"], welcome["can_post"]) == (expected, expected is not None), label
        await socket.receive_json_from()  # history
        await socket.send_json_to({"type": "message", "text": label})
        if expected is None:
            assert (await next_of(socket, "error"))["code"] == "login_required", label
            assert not await Message.objects.filter(text=label).aexists(), label
        else:
            assert (await next_of(socket, "message"))["user"] == expected, label
        await socket.disconnect()
        private = socket_to("/ws/chat/secret/", cookie=cookie)
        assert await private.connect() == (True, None), label
        first = await private.receive_output()
        if expected is None:
            assert first.get("code") == CLOSE_NO_SUCH_ROOM, label
            await private.send_input({"type": "websocket.disconnect", "code": 1000})
            await private.wait()
        else:
            assert json.loads(first["text"])["type"] == "welcome", label
            await private.disconnect()


# Names and fields from client input --------------------------------------------------------

# Room names a client might type in the URL or the lobby form to reach another group or
# channel ({pk} is the target room's id); none is a room name, so none routes.
EVIL_NAMES = [
    "*",
    "?",
    "chat.room.{pk}",
    "chat.room.*",
    "chat.room.{pk}.presence",
    "specific.abc!def",
    "specific.inmemory!",
    "lobby!x",
    "bravo!",
    "..",
    ".",
    "alpha/../bravo",
    "bravo/",
    "bravo\\",
    "br\u0430vo",  # a Cyrillic a (U+0430)
    "\uff42\uff52\uff41\uff56\uff4f",  # fullwidth "bravo"
    "bravo\u200b",  # zero-width space
    "BRAVO",
    "bravo\x00",
    "bravo\n",
    "bravo x",
    "%",
    "a" * 51,
    "b" * 5000,
]
# Already percent-encoded paths: separators and dots a client might hide from a filter.
ENCODED_PATHS = [
    "/ws/chat/bravo%2F/",
    "/ws/chat/alpha%2F..%2Fbravo/",
    "/ws/chat/%2E%2E/",
    "/ws/chat/%2e%2e%2fbravo/",
    "/ws/chat/%252E%252E/",
    "/ws/chat/bravo%00/",
    "/ws/chat/bravo%0A/",
    "/ws/chat/lobby%21x/",
    "/ws/chat/%2A/",
    "/ws/chat/alpha/../bravo/",
    "/ws/chat//bravo/",
    "/ws/chat/bravo/%2E/",
]
# Slugs that look like group or channel names: valid room names, so they are rooms of
# their own (or no room), never another room's group.
SLUG_LOOKALIKES = ["{pk}", "chat-room-{pk}", "chat_room_{pk}", "specific-abc-def"]


async def test_room_names_from_the_url_or_the_lobby_form_cannot_address_other_groups(
    quiet_chat, settings
):
    eve, bob = await new_user("eve"), await new_user("bob")
    await new_room("alpha")
    bravo = await new_room("bravo")
    listener = await enter(bob, "bravo", past_presence=True)
    layer = get_channel_layer()
    spy = await layer.new_channel()
    await layer.group_add(bravo.group_name, spy)
    members = sorted(members_of(bravo.group_name))
    evil = [name.format(pk=bravo.pk) for name in EVIL_NAMES]
    slugs = [name.format(pk=bravo.pk) for name in SLUG_LOOKALIKES]
    paths = [f"/ws/chat/{quote(name, safe='')}/" for name in evil] + ENCODED_PATHS
    cookie = await login_cookie(eve)
    for path in paths:
        socket = socket_to(path, cookie=cookie)
        assert await socket.connect() == (False, 1000), path  # not routed: no consumer
        await socket.wait()
    for name in slugs:  # routed, but no such room, and the socket does not create it
        socket = socket_to(f"/ws/chat/{name}/", cookie=cookie)
        assert await socket.connect() == (True, None), name
        assert (await socket.receive_output())["code"] == CLOSE_NO_SUCH_ROOM, name
        await socket.send_input({"type": "websocket.disconnect", "code": 1000})
        await socket.wait()
    client = AsyncClient()
    await client.aforce_login(eve)
    for name in evil:
        url = f"/chat/{quote(name, safe='')}/"
        assert (await client.get(url)).status_code == 404, name
        assert (await client.post(url + "invite/", {"username": "eve"})).status_code == 404, name
        response = await client.post("/", {"name": name})
        if name.strip() == "bravo":  # the form trims spaces: bravo itself, by its name
            assert response["Location"] == "/chat/bravo/", name
            continue
        assert response.status_code == 200 and b"errorlist" in response.content, name
    assert [room.name async for room in Room.objects.order_by("pk")] == ["alpha", "bravo"]
    for name in slugs:  # a room of its own, whose group is built from its own id
        response = await client.post("/", {"name": name})
        assert response.status_code == 302, name
        room = await Room.objects.aget(name=name)
        assert room.group_name == f"chat.room.{room.pk}" != bravo.group_name
    assert sorted(members_of(bravo.group_name)) == members  # no one joined bravo's group
    assert await outputs(listener) == []
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(layer.receive(spy), 0.05)
    # Control: what is sent to the room's group does reach the listener and the spy.
    await layer.group_send(bravo.group_name, {"type": "chat.message", "text": "control"})
    assert (await next_of(listener, "message"))["text"] == "control"
    assert (await layer.receive(spy))["text"] == "control"
    await listener.disconnect()


async def test_client_frames_cannot_redirect_forge_or_relay_server_events(quiet_chat, settings):
    """The chat reads only "type" (message or typing) and "text" from a client frame: fields
    naming a group, a channel, a user or an id change nothing, and frames typed like the
    server's own events (chat.message, presence.sync, chat.moderated...) go to no one."""
    settings.CHAT_MESSAGE_BURST = 100
    eve, ann, bob = await new_user("eve"), await new_user("ann"), await new_user("bob")
    await new_room("alpha")
    bravo = await new_room("bravo")
    target = await Message.objects.acreate(room=bravo, author=bob, text="bob's", status="visible")
    listener = await enter(bob, "bravo", past_presence=True)
    [bob_channel] = members_of(bravo.group_name)
    attacker = await enter(eve, "alpha", past_presence=True)
    neighbour = await enter(ann, "alpha", past_presence=True)
    await next_of(attacker, "presence")  # ann's arrival
    bravo_group = bravo.group_name
    redirect = {"group": bravo_group, "channel": bob_channel, "room": "bravo", "room_id": bravo.pk}
    server_events = [
        {"type": "chat.message", "text": "forged", "user": "bob", "id": target.pk, **redirect},
        {"type": "chat_message", "text": "forged", **redirect},
        {"type": "presence.sync", "source": bob_channel, "members": ["mallory"], "ttl": 1e9},
        {"type": "presence_sync", "members": ["mallory"], **redirect},
        {"type": "presence.ask", "source": bob_channel, **redirect},
        {"type": "chat.moderated", "id": target.pk, "status": "removed", "text": "", **redirect},
        {"type": "chat.typing", "user": "bob", **redirect},
        {"type": "moderate", "id": target.pk},
        {"type": "websocket.send", "text": "raw frame", **redirect},
        {"type": "websocket.close", "code": 4003},
        {"type": "websocket.disconnect", "code": 1000},
        {"type": "send", "message": {"type": "chat.message", "text": "x"}, **redirect},
        {"type": "group_send", "message": {"type": "chat.message", "text": "x"}, **redirect},
        {"type": "message.send", "text": "x", **redirect},
        {"type": "Message", "text": "x"},
        {"type": "_handler", "text": "x"},
        {"type": ["message"], "text": "x"},
        {"type": None, "text": "x"},
        {"text": "x", **redirect},
    ]
    for frame in server_events:
        await attacker.send_json_to(frame)
        error = await attacker.receive_json_from()
        assert (error.get("type"), error.get("code")) == ("error", "bad_request"), frame
    assert await outputs(neighbour) == []
    # A real post and a real typing notice, carrying the same redirections.
    await attacker.send_json_to({"type": "message", "text": "hi", "user": "bob", "id": 1,
                                 "status": "visible", **redirect})  # fmt: skip
    await attacker.send_json_to({"type": "typing", "user": "bob", **redirect})
    seen = [json.loads(frame["text"]) for frame in await outputs(neighbour)]
    assert [event["type"] for event in seen] == ["message", "moderated", "typing"]
    message, moderated, typing = seen
    assert set(message) == {"type", "id", "user", "text", "status", "created"}
    assert (message["user"], message["text"], message["status"]) == ("eve", "hi", "pending")
    assert (moderated["id"], moderated["user"]) == (message["id"], "eve")
    assert typing == {"type": "typing", "user": "eve"}
    saved = await Message.objects.select_related("room").aget(pk=message["id"])
    assert saved.room.name == "alpha"
    # Room B heard nothing and its message is untouched.
    assert await outputs(listener) == []
    await target.arefresh_from_db()
    assert (target.text, target.status) == ("bob's", "visible")
    assert await Message.objects.filter(room=bravo).acount() == 1
    # Control: bob's channel, as the attack named it, does reach bob.
    await get_channel_layer().send(bob_channel, {"type": "chat.message", "text": "control"})
    assert (await next_of(listener, "message"))["text"] == "control"
    for socket in (attacker, neighbour, listener):
        await socket.disconnect()


async def test_a_forged_broadcast_leaves_an_encrypted_chat_room_working(
    quiet_chat, settings, make_layer, caplog
):
    """The chat on an encrypted Redis layer: a broadcast sealed with another key reaches the
    room's group, is dropped with one log line, and the sockets in the room carry on."""
    prefix = f"test-{secrets.token_hex(6)}"
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_layer.redis.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "prefix": prefix, "symmetric_encryption_keys": ["k"]},
        }
    }
    stranger = make_layer(symmetric_encryption_keys=["not-k"], prefix=prefix)
    room = await new_room("lobby")
    ada = await new_user("ada")
    layer = get_channel_layer()
    try:
        socket = await enter(ada, "lobby", past_presence=True)
        with caplog.at_level(logging.INFO):
            await stranger.group_send(room.group_name, {"type": "chat.message", "text": "forged"})
            await socket.send_json_to({"type": "message", "text": "still here"})
            message = await next_of(socket, "message")
        assert message["text"] == "still here"
        loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert [r.name for r in loud] == ["channels_layer.redis"], [r.getMessage() for r in loud]
        assert "cannot be decrypted" in loud[0].getMessage()
        await socket.disconnect()
    finally:
        await layer.flush()
        await layer.close()


AUDITED = {"exec", "compile", "pickle.find_class", "marshal.loads", "marshal.load"}
_audit: list[tuple[str, str]] | None = None
_hooked = False


def _audit_hook(event: str, args: tuple) -> None:
    if _audit is not None and event in AUDITED:
        _audit.append((event, repr(args)[:200]))


async def test_a_message_travels_the_chat_and_redis_without_pickle_eval_or_exec(
    quiet_chat, make_layer
):
    """At run time, not only in our source: a chat post through the whole ASGI stack, and a
    send, group_send and receive on an encrypted Redis layer, raise none of the audit events
    of eval/exec/compile, unpickling or marshal. A first pass warms up (imports compile and
    exec module code); the second is watched. The hook, once added, stays for the process
    (Python cannot remove one), so it does nothing unless a test switches it on."""
    global _audit, _hooked
    if not _hooked:
        sys.addaudithook(_audit_hook)
        _hooked = True
    await new_room("lobby")
    ada = await new_user("ada")
    layer = make_layer(symmetric_encryption_keys=["k"])

    async def journey(number: int) -> None:
        socket = await enter(ada, "lobby", past_presence=True)
        await socket.send_json_to({"type": "message", "text": f"journey {number}"})
        assert (await next_of(socket, "message"))["text"] == f"journey {number}"
        assert (await next_of(socket, "moderated"))["status"] == "visible"
        await socket.disconnect()
        channel = await layer.new_channel()
        await layer.group_add("journey", channel)
        await layer.send(channel, {"type": "direct", "n": number})
        await layer.group_send("journey", {"type": "broadcast", "n": number})
        await layer.send("journey-jobs", {"type": "named", "n": number})
        # Two routes (the process inbox, the broadcast): either may arrive first.
        both = [await asyncio.wait_for(layer.receive(channel), 2) for _ in range(2)]
        assert sorted(message["type"] for message in both) == ["broadcast", "direct"]
        assert (await asyncio.wait_for(layer.receive("journey-jobs"), 2))["type"] == "named"

    await journey(1)
    _audit = []
    try:
        # Control: the hook does see compile and exec (and so eval, which raises "exec").
        exec(compile("control = 1", "<control>", "exec"), {})  # noqa: S102  the control
        assert [event for event, _ in _audit] == ["compile", "exec"]
        _audit.clear()
        await journey(2)
        seen = list(_audit)
    finally:
        _audit = None
    assert seen == []
