"""Seeding the reference chat from another process: ``manage.py seed_chat``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from testsupport.processes import run_manage_py

SEED_TIMEOUT = 120.0  # seconds; logging hundreds of users in on a busy core


@dataclass
class ChatSeed:
    """What ``seed_chat`` made: rooms, their channel layer groups, users and (with
    ``sessions``) one session cookie (``sessionid=...``) per user, in user order."""

    rooms: list[str]
    groups: list[str]
    users: list[str]
    cookies: list[str]

    @property
    def room(self) -> str:
        """The first room."""
        return self.rooms[0]

    @property
    def group(self) -> str:
        """The first room's group."""
        return self.groups[0]

    def cookie(self, index: int) -> str:
        """The cookie of user ``index % len(users)``: connections share accounts."""
        return self.cookies[index % len(self.cookies)]

    def user(self, index: int) -> str:
        return self.users[index % len(self.users)]


def manage_seed_chat(
    env: dict[str, str],
    rooms: Sequence[str],
    users: Sequence[str] = (),
    *,
    private: bool = False,
    sessions: bool = True,
) -> ChatSeed:
    """Run ``manage.py seed_chat`` with ``env`` (DATABASE_URL...) and return what it made."""
    args = [*(f"--room={room}" for room in rooms), *(f"--user={user}" for user in users)]
    if private:
        args.append("--private")
    if sessions:
        args.append("--sessions")
    seeding = run_manage_py("seed_chat", *args, env=env, timeout=SEED_TIMEOUT)
    line = next((line for line in seeding.lines if line.startswith("{")), None)
    if line is None:
        raise AssertionError(f"seed_chat printed no JSON:\n{seeding.output}")
    return ChatSeed(**json.loads(line))
