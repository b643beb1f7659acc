"""Group memberships held in this process's memory, each with its own deadline (the
in-memory layer's groups, and the Redis layer's members in this process)."""

from __future__ import annotations

import threading
import time


class GroupMembers:
    """Which channels belong to which group, each membership with its own deadline."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # group -> {channel: membership deadline on time.monotonic()}
        self._groups: dict[str, dict[str, float]] = {}
        # group -> no membership of it ends before this: a broadcast to 10,000 members
        # looks at each deadline only once one may have passed (a day's expiry, usually).
        self._earliest: dict[str, float] = {}

    def add(self, group: str, channel: str, expiry: float) -> bool:
        """Add or renew a membership; True if the group had no members before."""
        deadline = time.monotonic() + expiry  # before any change: a bad expiry changes none
        with self._lock:
            members = self._groups.get(group)
            first = members is None
            if members is None:
                members = self._groups[group] = {}
            members[channel] = deadline
            if first or deadline < self._earliest[group]:
                self._earliest[group] = deadline
            return first

    def discard(self, group: str, channel: str) -> bool:
        """Remove a membership; True if that left the group empty."""
        with self._lock:
            members = self._groups.get(group)
            if members is None or members.pop(channel, None) is None:
                return False
            if members:
                return False
            del self._groups[group]
            del self._earliest[group]
            return True

    def live_members(self, group: str) -> list[str]:
        """The group's unexpired members, forgetting the expired ones."""
        with self._lock:
            members = self._groups.get(group)
            if members is None:
                return []
            now = time.monotonic()
            if self._earliest[group] <= now:
                for channel in [c for c, deadline in members.items() if deadline <= now]:
                    del members[channel]
                if not members:
                    del self._groups[group]
                    del self._earliest[group]
                    return []
                self._earliest[group] = min(members.values())
            return list(members)

    def groups(self) -> list[str]:
        with self._lock:
            return list(self._groups)

    def snapshot(self) -> dict[str, dict[str, float]]:
        """``{group: {channel: membership deadline on time.monotonic()}}``, copied."""
        with self._lock:
            return {group: dict(members) for group, members in self._groups.items()}

    def clear(self) -> None:
        with self._lock:
            self._groups.clear()
            self._earliest.clear()
