"""``manage.py seed_chat``: rooms and users, optionally logged in, for benchmarks, tests and
demos, printed as one JSON line so that a script can use the session cookies."""

from __future__ import annotations

import json
from argparse import ArgumentParser
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model, login
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.http import HttpRequest

from chat.models import Room, room_name_validator


class Command(BaseCommand):
    help = (
        "Create chat rooms and users (existing ones are reused) and print "
        '{"rooms", "groups", "users", "cookies"} as one JSON line.'
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--room", action="append", default=[], dest="rooms", help="a room (repeatable)"
        )
        parser.add_argument(
            "--user", action="append", default=[], dest="users", help="a user (repeatable)"
        )
        parser.add_argument(
            "--private",
            action="store_true",
            help="make the rooms private, with the users as their members",
        )
        parser.add_argument(
            "--password",
            help="the users' password (default: none, they can only be logged in by --sessions)",
        )
        parser.add_argument(
            "--sessions",
            action="store_true",
            help="log every user in and print a session cookie (name=value) for each",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["rooms"] and not options["users"]:
            raise CommandError("nothing to seed: give --room and/or --user")
        if options["private"] and not options["rooms"]:
            raise CommandError("--private needs at least one --room")
        for name in options["rooms"]:
            try:
                room_name_validator(name)
            except ValidationError as error:
                raise CommandError(f"room {name!r}: {' '.join(error.messages)}") from None
        with transaction.atomic():
            users = [self.user(name, options["password"]) for name in options["users"]]
            rooms = [self.room(name, options["private"], users) for name in options["rooms"]]
        cookies = [session_cookie(user) for user in users] if options["sessions"] else []
        seeded = {
            "rooms": [room.name for room in rooms],
            "groups": [room.group_name for room in rooms],
            "users": [user.get_username() for user in users],
            "cookies": cookies,
        }
        self.stdout.write(json.dumps(seeded))

    def user(self, name: str, password: str | None) -> Any:
        user, created = get_user_model().objects.get_or_create(username=name)
        if created or password is not None:
            if password is None:
                user.set_unusable_password()
            else:
                user.set_password(password)
            user.save()
        return user

    def room(self, name: str, private: bool, members: list[Any]) -> Room:
        room, _ = Room.objects.get_or_create(name=name, defaults={"private": private})
        if private:
            if not room.private:
                room.private = True
                room.save(update_fields=["private"])
            room.members.add(*members)
        return room


def session_cookie(user: Any) -> str:
    """Log ``user`` in on a new session, as the login view would; ``name=value``."""
    request = HttpRequest()
    request.session = import_module(settings.SESSION_ENGINE).SessionStore()
    login(request, user, backend=settings.AUTHENTICATION_BACKENDS[0])
    request.session.save()
    return f"{settings.SESSION_COOKIE_NAME}={request.session.session_key}"
