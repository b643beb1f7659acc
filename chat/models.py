"""Rooms and their messages, stored with the ORM."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

ROOM_NAME_PATTERN = r"[-a-z0-9_]{1,50}"
room_name_validator = RegexValidator(
    rf"\A{ROOM_NAME_PATTERN}\Z",
    "Room names are 1 to 50 lower-case letters, digits, hyphens or underscores.",
)


class Room(models.Model):
    """A chat room. A private room admits only its members, even to someone who knows its name."""

    name = models.CharField(max_length=50, unique=True, validators=[room_name_validator])
    private = models.BooleanField(default=False)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="rooms")
    # Who opened it: rooms per user are limited (CHAT_ROOMS_PER_USER).
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="rooms_created",
    )
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name

    @property
    def group_name(self) -> str:
        """The channel layer group of everyone in the room, built from the id, never from input."""
        return f"chat.room.{self.pk}"

    def admits(self, user) -> bool:
        """Whether ``user`` may enter the room and post in it."""
        if user.is_authenticated and not user.is_active:  # deactivated: nowhere
            return False
        if not self.private:
            return True
        return user.is_authenticated and self.members.filter(pk=user.pk).exists()


class Message(models.Model):
    """A posted message. Moderation runs after it is shown, in a worker, and may remove it."""

    PENDING, VISIBLE, REMOVED = "pending", "visible", "removed"
    STATUSES = [(PENDING, "pending review"), (VISIBLE, "visible"), (REMOVED, "removed")]

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    text = models.TextField()
    status = models.CharField(max_length=10, choices=STATUSES, default=PENDING)
    created = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["created", "pk"]

    def as_event(self) -> dict:
        """The message as the browser sees it; removed text never leaves the server."""
        return {
            "id": self.pk,
            "user": self.author.get_username(),
            "text": "" if self.status == self.REMOVED else self.text,
            "status": self.status,
            "created": self.created.isoformat(),
        }
