"""The chat's consumers: one WebSocket per person per room, and the moderation worker.

The browser speaks JSON: ``{"type": "message", "text": ...}`` to post and ``{"type":
"typing"}`` while typing. It gets ``welcome``, ``history``, ``message``, ``moderated``,
``presence`` (who is here: ``{"members": {name: {"metas": [...]}}}`` on entering, then
only changes, ``{"joins": ..., "leaves": ...}`` of the same shape), ``typing`` and
``error`` events back, and the recovery frames of consumers/history (``consumers.joined``,
``consumers.recovered``, ``consumers.recovery_failed``, ``consumers.ping``): a page that
reconnects with its last position gets the posts and verdicts it missed instead of
``history``. Every refused input is answered with an ``error`` event naming what was wrong
(``unavailable`` when the channel layer cannot be reached: the post was not sent); the
connection stays open unless the sender keeps flooding (close code 4029).

Limits hold per user (anonymous visitors: per client address) over all their sockets and
every server process (chat/limits.py): the frame rate, and the number of open sockets (4030
beyond it). Access is checked again whenever the room, its members or the account change
(consumers/revalidation.py): a socket that lost it is closed with 4403 within moments. A
logged-in socket ends with its session (consumers/users.py): logging out in one tab, or
changing the password, closes the others with 4401.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from typing import Any

from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured

from channels_layer import ChannelFull, LayerUnavailable
from channels_layer.base import CROSS_PROCESS, BaseChannelLayer
from chat import limits
from chat.conf import setting
from chat.models import Message, Room
from chat.moderation import MODERATION_CHANNEL, review
from consumers.consumer import SyncConsumer
from consumers.db import database_sync_to_async
from consumers.generic.websocket import AsyncJsonWebsocketConsumer
from consumers.history import Position, ResumableJsonMixin, SharedReads
from consumers.presence import PresenceMixin, tracker_for
from consumers.revalidation import CLOSE_ACCESS_REVOKED, subject_of
from consumers.users import CLOSE_SESSION_ENDED, UserSocketMixin

logger = logging.getLogger(__name__)

CLOSE_FORBIDDEN = 4003  # a private room the (logged-in) user is not a member of
CLOSE_NO_SUCH_ROOM = 4004  # no such room; also a private one, to anonymous visitors
CLOSE_RATE_LIMITED = 4029  # kept flooding after being told to slow down
CLOSE_TOO_MANY_SOCKETS = 4030  # this user or address has CHAT_MAX_SOCKETS_* open already
CLOSE_REVOKED = CLOSE_ACCESS_REVOKED  # 4403: removed from the room, room gone, account off
CLOSE_LOGGED_OUT = CLOSE_SESSION_ENDED  # 4401: logged out (another tab), password changed
TYPING_EVERY = 2.0  # seconds: at most one typing event per connection in that time
UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


@database_sync_to_async
def _enter(name: str, user: Any) -> tuple[Room | None, bool]:
    """The room, and whether ``user`` may be in it."""
    room = Room.objects.filter(name=name).first()
    return room, room is not None and room.admits(user)


@database_sync_to_async
def _recent(room: Room) -> list[dict]:
    """The room's last ``CHAT_HISTORY`` messages, oldest first."""
    recent = room.messages.select_related("author").order_by("-created", "-pk")
    return [message.as_event() for message in recent[: setting("CHAT_HISTORY")]][::-1]


@database_sync_to_async
def _still_admitted(room_id: int, user: Any) -> bool:
    """Whether the room still exists and admits the user as they are now."""
    room = Room.objects.filter(pk=room_id).first()
    if room is None:
        return False
    if user.is_authenticated:
        user = get_user_model().objects.filter(pk=user.pk).first()
        if user is None:
            return False
    return room.admits(user)


@database_sync_to_async
def _save(room: Room, user: Any, text: str) -> dict:
    return Message.objects.create(room=room, author=user, text=text).as_event()


@database_sync_to_async
def _forget(message_id: int) -> None:
    Message.objects.filter(pk=message_id).delete()


_review = database_sync_to_async(review)
_recent_posts: SharedReads[list[dict]] = SharedReads()


NO_LAYER = "the chat needs a channel layer: set CHANNEL_LAYERS"


def typing_group(room: Room) -> str:
    """Typing notices go to a group of their own: the room's group keeps a history, and a
    notice is worth nothing a moment later."""
    return f"chat.typing.{room.pk}"


def required(layer: BaseChannelLayer | None) -> BaseChannelLayer:
    """A consumer's channel layer: rooms, presence and moderation mean nothing without one."""
    if layer is None:
        raise ImproperlyConfigured(NO_LAYER)
    return layer


class ChatConsumer(PresenceMixin, UserSocketMixin, ResumableJsonMixin, AsyncJsonWebsocketConsumer):
    """A person in a room: posts, typing, presence; the ORM work runs in threads.

    The room's group keeps a history (``CHANNEL_LAYERS``' ``history`` config): a page that
    reconnects gets the posts and verdicts it missed instead of the last posts from the
    database, and the database only when they are no longer kept (consumers/history).
    """

    ping_interval = 20.0  # under nginx's 60 s proxy_read_timeout, for quiet rooms

    room: Room
    user_name: str
    # Input is handled only between admission and a close of ours: frames a client still
    # sends after being refused or told to go are ignored.
    listening = False
    # The socket slots this connection holds (released when it closes).
    slots: tuple[str, ...] = ()
    # Ids of the posts last loaded from the database: the same post arriving live too (it
    # was saved before it was sent) is not shown twice.
    loaded: frozenset[int] = frozenset()

    @property
    def layer(self) -> BaseChannelLayer:
        return required(self.channel_layer)

    @property
    def own_channel(self) -> str:
        """This connection's layer channel (the consumer makes one whenever there is a layer)."""
        if self.channel_name is None:
            raise ImproperlyConfigured(NO_LAYER)
        return self.channel_name

    async def connect(self) -> None:
        self.user = self.scope["user"]
        address = limits.client_address_of(self.scope)
        # Whose frames these are, for the shared rate limit.
        self.sender = f"user:{self.user.pk}" if self.user.is_authenticated else f"address:{address}"
        name = self.scope["url_route"]["kwargs"]["room"]
        room, admitted = await _enter(name, self.user)
        if room is None or not admitted:
            # Accept so that the close code reaches the browser, which then stops retrying.
            await self.accept()
            if room is None or not self.user.is_authenticated:
                await self.close(CLOSE_NO_SUCH_ROOM, "no such room")
            else:
                await self.close(CLOSE_FORBIDDEN, "this room is private")
            return
        if not await self.claim_slots(address):
            await self.accept()
            await self.close(CLOSE_TOO_MANY_SOCKETS, "too many open connections")
            return
        self.room = room
        self.user_name = self.user.get_username() if self.user.is_authenticated else ""
        # The limit in force when the socket opened (its bucket is the sender's, shared).
        self.rate = setting("CHAT_MESSAGES_PER_SECOND"), setting("CHAT_MESSAGE_BURST")
        self.strikes = 0
        self.last_typing = 0.0
        self.listening = True
        self.groups = [*self.groups, typing_group(room)]  # UserSocketMixin's are there already
        await self.layer.group_add(typing_group(room), self.own_channel)
        # Closed with 4403 when the room, its members or the account change against us
        # (UserSocketMixin watches the account, and closes with 4401 when the session ends).
        subjects = [subject_of(room)]
        await self.watch(*subjects)
        await self.accept()
        # A change between the admission above and the watch would have gone unheard.
        if not await self.still_allowed():
            return await self.access_revoked(subjects[0])
        await self.send_json(
            {
                "type": "welcome",
                "room": room.name,
                "user": self.user_name or None,
                "can_post": self.user.is_authenticated,
                "server": setting("CHAT_SERVER_NAME") or None,
            }
        )
        # The posts missed since the position the page gave, or (a first visit, or
        # recovery failed) the last ones from the database: joined(), recovery_failed().
        group = room.group_name
        await self.history_join(group, self.client_position(group))
        await self.enter_presence(group)

    async def joined(self, group: str, position: Position | None) -> None:
        await self.send_history()
        await super().joined(group, position)

    async def recovery_failed(self, group: str, current: Position) -> None:
        await self.send_history()
        await super().recovery_failed(group, current)

    async def send_history(self) -> None:
        """The room's last posts from the database, as on entering. Read once for the
        consumers of this process that ask at the same moment (after a Redis restart, all
        of a room's consumers reload together), but never a read begun before this
        consumer's position was fixed: it could miss a post sent in between."""
        asked = asyncio.get_running_loop().time()
        room = self.room
        history = await _recent_posts.read(room.pk, lambda: _recent(room), asked)
        self.loaded = frozenset(event["id"] for event in history)
        await self.send_json({"type": "history", "messages": history})

    async def enter_presence(self, topic: str) -> None:
        """Everyone sees who is here (consumers/presence.py): the list once, then diffs."""
        tracker_for(self.layer, topic, interval=setting("CHAT_PRESENCE_INTERVAL"))
        if self.user_name:  # anonymous visitors watch without being listed
            await self.presence_track(topic, self.user_name)
        members = await self.presence_subscribe(topic)  # with us, and no diff of our join
        await self.send_json({"type": "presence", "members": members})

    async def claim_slots(self, address: str) -> bool:
        """One socket slot of this user and one of this address, or neither."""
        wanted = [(f"sockets:address:{address}", setting("CHAT_MAX_SOCKETS_PER_ADDRESS"))]
        if self.user.is_authenticated:
            wanted.append((f"sockets:user:{self.user.pk}", setting("CHAT_MAX_SOCKETS_PER_USER")))
        for key, cap in wanted:
            if not await limits.claim(key, self.own_channel, cap):
                await self.release_slots()
                return False
            self.slots = (*self.slots, key)
        return True

    async def release_slots(self) -> None:
        for key in self.slots:
            await limits.release(key, self.own_channel)
        self.slots = ()

    async def disconnect(self, code: int) -> None:
        # The presence entry leaves by itself (PresenceMixin).
        await self.release_slots()

    async def still_allowed(self) -> bool:
        return await _still_admitted(self.room.pk, self.user)

    async def access_revoked(self, subject: str) -> None:
        self.listening = False
        await super().access_revoked(subject)

    async def session_ended(self) -> None:
        self.listening = False
        await super().session_ended()

    # From the browser

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not self.listening:
            return
        if not await limits.allow(f"frames:{self.sender}", *self.rate):
            return await self.rate_limited()
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "message":
            await self.post(content.get("text"))
        elif kind == "typing":
            await self.typing()
        else:
            await self.refuse("bad_request", 'expected {"type": "message" or "typing", ...}')

    async def post(self, text: Any) -> None:
        if not self.user.is_authenticated:
            return await self.refuse("login_required", "log in to post in this room")
        if not isinstance(text, str):
            return await self.refuse("bad_request", '"text" must be a string')
        if UNSTORABLE.search(text):
            return await self.refuse(
                "bad_request", '"text" must not contain NUL or lone surrogates'
            )
        text = text.strip()
        limit = setting("CHAT_MAX_MESSAGE_LENGTH")
        if not text:
            return await self.refuse("empty", "the message is empty")
        if len(text) > limit:
            return await self.refuse("too_long", f"messages are at most {limit} characters")
        event = await _save(self.room, self.user, text)
        try:
            await self.layer.group_send(self.room.group_name, {"type": "chat.message", **event})
        except LayerUnavailable:
            await _forget(event["id"])  # nobody saw it: it must not appear later either
            return await self.refuse(
                "unavailable", "the chat cannot reach its server right now: not sent, try again"
            )
        await self.moderate(event["id"])

    async def moderate(self, message_id: int) -> None:
        inline = setting("CHAT_MODERATION_INLINE")
        if inline is None:
            inline = CROSS_PROCESS not in self.layer.extensions  # no worker can hear it
        if not inline:
            job = {"type": "moderate", "id": message_id}
            try:
                await self.layer.send(MODERATION_CHANNEL, job)
            except (ChannelFull, LayerUnavailable) as error:  # no worker, or no Redis
                logger.warning("Message %s stays pending review: %s", message_id, error)
            return
        event = await _review(message_id)
        if event is not None:
            await self.layer.group_send(event.pop("group"), event)

    async def typing(self) -> None:
        now = time.monotonic()
        if not self.user.is_authenticated or now - self.last_typing < TYPING_EVERY:
            return
        self.last_typing = now
        with contextlib.suppress(LayerUnavailable):  # a typing notice is not worth an error
            await self.layer.group_send(
                typing_group(self.room),
                {"type": "chat.typing", "user": self.user_name, "channel": self.own_channel},
            )

    async def refuse(self, code: str, detail: str) -> None:
        await self.send_json({"type": "error", "code": code, "detail": detail})

    async def rate_limited(self) -> None:
        self.strikes += 1
        if self.strikes >= setting("CHAT_STRIKES_BEFORE_CLOSE"):
            self.listening = False
            await self.close(CLOSE_RATE_LIMITED, "too many messages")
            return
        await self.refuse("rate_limited", "slow down: too many messages")

    # From the room's group

    async def chat_message(self, event: dict) -> None:
        if event.get("id") not in self.loaded:  # its __position__ goes with it, for the page
            await self.send_json({**event, "type": "message"})

    async def chat_moderated(self, event: dict) -> None:
        await self.send_json({**event, "type": "moderated"})

    async def chat_typing(self, event: dict) -> None:
        if event["channel"] != self.channel_name:
            await self.send_json({"type": "typing", "user": event["user"]})

    async def presence_diff(self, event: dict) -> None:
        await self.send_json(
            {"type": "presence", "joins": event["joins"], "leaves": event["leaves"]}
        )


class ModerationWorker(SyncConsumer):
    """``manage.py runworker chat-moderation``: reviews posted messages with the ORM, in a
    worker thread, and pushes each verdict to the message's room."""

    def moderate(self, job: dict) -> None:
        message_id = job.get("id")
        if not isinstance(message_id, int):
            logger.warning("Moderation job without an integer id ignored: %r", job)
            return
        event = review(message_id)
        if event is not None:
            async_to_sync(required(self.channel_layer).group_send)(event.pop("group"), event)
