"""Access that follows changes: open sockets re-checked when what they depend on changes.

A consumer usually decides in ``connect()`` whether a client may have what it asks for, but
a socket stays open for hours, and meanwhile a member is removed from a room, a room is
deleted, an account is deactivated. Here a consumer names the *subjects* its access depends
on (strings such as ``"chat.room.12"``, see ``subject_of``); code that changes one announces
it with ``recheck(subject)``; every socket watching that subject, in every process (the
announcement is a group message through the channel layer), runs its ``still_allowed()``
again and closes with ``CLOSE_ACCESS_REVOKED`` when the answer is no::

    class RoomConsumer(RevalidatingMixin, AsyncJsonWebsocketConsumer):
        async def connect(self):
            ...  # admitted
            await self.watch(subject_of(room), subject_of(user))

        async def still_allowed(self) -> bool:
            return await database_sync_to_async(may_enter)(self.room_id, self.user.pk)

    # where the change is made (a view, a signal handler, the admin):
    recheck(subject_of(room))

Check once more after ``watch()``: a change made between the first check and the watch
is announced to nobody. ``recheck`` announces after the current transaction commits, so
the re-check reads the new state; it never fails the change (a layer outage is logged and
the change stands). Delivery is the layer's: at most once, so a re-check lost with a
crashed Redis is not repeated.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from asgiref.sync import async_to_sync
from django.db import transaction

from channels_layer import LayerUnavailable, get_channel_layer

logger = logging.getLogger(__name__)

CLOSE_ACCESS_REVOKED = 4403  # the socket's access ended while it was open
RECHECK = "revalidation.recheck"
GROUP_PREFIX = "revalidate."
# Group names allow these characters and fewer than 100 of them.
SUBJECT = re.compile(r"[A-Za-z0-9_.\-]{1,80}")


def subject_of(instance: Any) -> str:
    """The subject of a model instance: ``app_label.model_name.pk``."""
    meta = instance._meta
    return f"{meta.app_label}.{meta.model_name}.{instance.pk}"


def group_for(subject: str) -> str:
    """The channel layer group of the sockets that watch ``subject``."""
    if not SUBJECT.fullmatch(subject):
        raise ValueError(
            f"subject {subject!r}: 1 to 80 ASCII letters, digits, '_', '.' or '-' expected"
        )
    return GROUP_PREFIX + subject


async def arecheck(*subjects: str, alias: str = "default") -> None:
    """Ask every socket watching one of ``subjects`` to re-check its access, now."""
    layer = get_channel_layer(alias)
    if layer is None:
        return
    for subject in subjects:
        try:
            await layer.group_send(group_for(subject), {"type": RECHECK, "subject": subject})
        except LayerUnavailable as error:
            logger.warning("Sockets watching %s not re-checked: %s", subject, error)


def recheck(*subjects: str, alias: str = "default") -> None:
    """``arecheck`` from sync code, once the current transaction (if any) has committed."""
    for subject in subjects:
        group_for(subject)  # a bad subject fails here, in the caller, not after the commit
    transaction.on_commit(lambda: async_to_sync(arecheck)(*subjects, alias=alias))


class RevalidatingMixin:
    """For async WebSocket consumers: ``watch()`` subjects, answer ``still_allowed()``."""

    revoked_close_code = CLOSE_ACCESS_REVOKED

    async def watch(self, *subjects: str) -> None:
        """Re-check this socket whenever one of ``subjects`` changes (until it closes)."""
        groups = [group_for(subject) for subject in subjects]
        for group in groups:
            await self.channel_layer.group_add(group, self.channel_name)  # type: ignore[attr-defined]
        # Left with the consumer's other groups when the socket closes.
        self.groups = [*self.groups, *groups]  # type: ignore[has-type]

    async def still_allowed(self) -> bool:
        """Whether the client may keep this socket; override (it runs on every re-check)."""
        return True

    async def revalidation_recheck(self, event: dict[str, Any]) -> None:
        if not await self.still_allowed():
            await self.access_revoked(event["subject"])

    async def access_revoked(self, subject: str) -> None:
        """Close the socket; override to say more first (call this to close)."""
        await self.close(self.revoked_close_code, "access revoked")  # type: ignore[attr-defined]
