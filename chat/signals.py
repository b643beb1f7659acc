"""Open sockets follow access changes: each change that can take a room away from someone
asks the sockets concerned to re-check (consumers/revalidation.py), in every process.

- a member removed (either side of the relation), or all members cleared;
- a room changed (made private) or deleted;
- an account deactivated or deleted.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db.models.signals import m2m_changed, post_delete, post_save

from chat.models import Room
from consumers.revalidation import recheck, subject_of


def members_changed(sender: Any, instance: Any, action: str, **kwargs: Any) -> None:
    # instance is the room (room.members.remove) or the user (user.rooms.remove); the
    # sockets of the one or the other re-check whichever rooms they are in.
    if action in {"post_remove", "post_clear"}:
        recheck(subject_of(instance))


def room_changed(sender: Any, instance: Room, created: bool = False, **kwargs: Any) -> None:
    if not created:
        recheck(subject_of(instance))


def user_changed(sender: Any, instance: Any, created: bool = False, **kwargs: Any) -> None:
    # Only a deactivation can end access: logins (last_login) and the like stay quiet.
    if not created and not instance.is_active:
        recheck(subject_of(instance))


def user_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    recheck(subject_of(instance))


def connect() -> None:
    """Called once, from ``ChatConfig.ready()``."""
    user = get_user_model()
    m2m_changed.connect(members_changed, sender=Room.members.through)
    post_save.connect(room_changed, sender=Room)
    post_delete.connect(room_changed, sender=Room)
    post_save.connect(user_changed, sender=user)
    post_delete.connect(user_deleted, sender=user)
